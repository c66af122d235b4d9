"""Reading Flower messages: a record's named tensors and a reply's numeric metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from gradleak.core.errors import GradleakError

if TYPE_CHECKING:
    from gradleak.integrations.flower.target import FlowerTarget


def message_state(message: Any, key: str) -> dict[str, torch.Tensor]:
    """The named tensors of a message's `ArrayRecord` under `key`.

    Raises:
        GradleakError: the message holds no `ArrayRecord` under `key`.
    """
    records = message.content.array_records
    if key not in records:
        held = ", ".join(repr(k) for k in records) or "none"
        raise GradleakError(
            f"the message holds no ArrayRecord {key!r} (it holds {held}); set the "
            "target's arrays_key"
        )
    return dict(records[key].to_torch_state_dict())


def reply_metrics(message: Any, key: str) -> dict[str, float]:
    """The numeric metrics of a reply's `MetricRecord` under `key` (none: empty)."""
    records = message.content.metric_records
    if key not in records:
        return {}
    return {k: float(v) for k, v in records[key].items() if isinstance(v, int | float)}


def num_examples(reply: Any, target: FlowerTarget) -> int:
    """The number of examples a reply reports (the protocol discloses it: FedAvg weights by it).

    Raises:
        GradleakError: the reply reports none under the target's `num_examples_key`.
    """
    metrics = reply_metrics(reply, target.metrics_key)
    if target.num_examples_key not in metrics:
        raise GradleakError(
            f"the reply reports no {target.num_examples_key!r} metric in its "
            f"{target.metrics_key!r} record; set the target's num_examples_key"
        )
    return int(metrics[target.num_examples_key])
