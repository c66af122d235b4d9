"""DP-SGD with FedAvg: every local step clipped and noised, the weight delta recomputed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gradleak.cli import main
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.defenses import ClientView
from gradleak.defenses.dpsgd import DPSGD
from gradleak.fl.fedadmm import FedADMMClient
from gradleak.fl.fedavg import FedAvgClient
from gradleak.fl.local_training import LocalTraining
from gradleak.models import build_model

pytest.importorskip("opacus")  # DP-SGD is an optional extra

IMAGE = (16, 16)
LOCAL = LocalTraining(lr=0.1, steps=3, batch_size=2)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(size: int, seed: int = 0) -> PrivateBatch:
    g = _gen(seed + 100)
    return PrivateBatch(
        torch.randn(size, 3, *IMAGE, generator=g), torch.randint(0, 10, (size,), generator=g)
    )


def _fedavg(
    local: LocalTraining = LOCAL, size: int = 4, dtype: torch.dtype = torch.float32
) -> tuple[FedAvgClient, PrivateBatch, SharedUpdate, ClientView]:
    server = build_model("lenet", num_classes=10, image_size=IMAGE, seed=0).to(dtype)
    client = FedAvgClient(server, local)
    plain = _batch(size)
    batch = PrivateBatch(plain.images.to(dtype), plain.labels)
    update = client.compute_update(batch)
    view = ClientView(client.model, batch, local=local, start=client.server_model)
    return client, batch, update, view


def test_no_noise_and_no_clipping_is_plain_fedavg() -> None:
    client, _, update, view = _fedavg()
    out = DPSGD(1e6, 0.0).apply(update, _gen(), view)
    assert out.kind is UpdateKind.WEIGHT_DELTA
    assert out.metadata == update.metadata
    assert list(out.tensors) == list(update.tensors)
    for name, delta in update.tensors.items():
        assert delta.abs().max() > 0
        torch.testing.assert_close(out.tensors[name], delta, rtol=1e-5, atol=1e-7)
    # The client's trained model and the server's model are untouched.
    server = build_model("lenet", num_classes=10, image_size=IMAGE, seed=0)
    for (n, p), q in zip(client.server_model.named_parameters(), server.parameters(), strict=True):
        assert torch.equal(p, q), n


def test_noise_changes_the_delta_and_a_seed_repeats_it() -> None:
    _, _, update, view = _fedavg()
    defense = DPSGD(1.0, 1.0)
    first = defense.apply(update, _gen(3), view)
    again = defense.apply(update, _gen(3), view)
    other = defense.apply(update, _gen(4), view)
    for name in update.tensors:
        assert torch.equal(first.tensors[name], again.tensors[name])
        assert not torch.allclose(first.tensors[name], update.tensors[name])
        assert not torch.equal(first.tensors[name], other.tensors[name])


def test_one_sample_step_descends_the_clipped_gradient() -> None:
    local = LocalTraining(lr=0.5, steps=1, batch_size=1)
    # In float64, so that θ_start − lr·g − θ_start loses nothing worth speaking of.
    client, batch, update, view = _fedavg(local, size=1, dtype=torch.float64)
    params = dict(client.server_model.named_parameters())
    loss = F.cross_entropy(client.server_model(batch.images), batch.labels)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads.values())).item()
    clip = norm / 4  # the sample's gradient is clipped to a quarter of its norm
    out = DPSGD(clip, 0.0).apply(update, _gen(), view)
    for name, g in grads.items():
        expected = -local.lr * g * (clip / norm)
        torch.testing.assert_close(out.tensors[name], expected, rtol=1e-9, atol=1e-13)
    shared = torch.sqrt(sum(t.double().pow(2).sum() for t in out.tensors.values())).item()
    assert shared == pytest.approx(local.lr * clip, rel=1e-12)


def test_weight_delta_without_local_training_or_start_is_refused() -> None:
    client, batch, update, _ = _fedavg()
    for view in (
        ClientView(client.model, batch),
        ClientView(client.model, batch, local=LOCAL),
        ClientView(client.model, batch, start=client.server_model),
    ):
        with pytest.raises(GradleakError, match="cannot replace a weight_delta update without"):
            DPSGD(1.0, 1.0).apply(update, _gen(), view)


def test_fedadmm_increment_is_refused() -> None:
    server = build_model("lenet", num_classes=10, image_size=IMAGE, seed=0)
    client = FedADMMClient(server, LOCAL)
    batch = _batch(4)
    update = client.compute_update(batch)
    view = ClientView(client.model, batch, local=LOCAL, start=client.server_model)
    with pytest.raises(GradleakError, match="cannot replace an admm_increment update"):
        DPSGD(1.0, 1.0).apply(update, _gen(), view)


def test_attack_with_fedavg_and_dpsgd_runs(tmp_path: Path) -> None:
    argv = [
        "attack",
        "--protocol",
        "fedavg",
        "--local-steps",
        "2",
        "--batch-size",
        "2",
        "--defense",
        "dpsgd:1.0:1.0",
        "--attack",
        "dlg",
        "--iterations",
        "1",
        "--model",
        "lenet",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 0  # argparse's SystemExit on a bad flag fails the test too
