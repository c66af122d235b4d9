"""Secure aggregation: the server sees only the mean of its users' updates."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate


def aggregate(updates: Sequence[SharedUpdate]) -> SharedUpdate:
    """The element-wise mean of same-kind updates; metadata says how many users and samples.

    Buffers (batch-norm statistics), when every user shares them, are averaged too.
    """
    if not updates:
        raise GradleakError("nothing to aggregate: give at least one update")
    kinds = {u.kind for u in updates}
    if len(kinds) > 1:
        names = ", ".join(sorted(k.value for k in kinds))
        raise GradleakError(f"cannot aggregate updates of different kinds ({names})")
    names = list(updates[0].tensors)
    for u in updates[1:]:
        if list(u.tensors) != names:
            raise GradleakError("cannot aggregate updates of different models")
    tensors = {n: torch.stack([u.tensors[n] for u in updates]).mean(dim=0) for n in names}
    buffers = {}
    if all(u.buffers for u in updates):
        buffers = {
            n: torch.stack([u.buffers[n].double() for u in updates]).mean(dim=0).to(b.dtype)
            for n, b in updates[0].buffers.items()
        }
    samples = [u.num_samples for u in updates]
    metadata = dict(updates[0].metadata)
    metadata["num_users"] = len(updates)
    if all(s is not None for s in samples):
        metadata["num_samples"] = sum(samples)  # type: ignore[arg-type]
    return SharedUpdate(tensors, updates[0].kind, metadata, buffers=buffers)
