"""DP-SGD on Poisson-sampled batches: averaged over the expected size, empty batches too."""

from __future__ import annotations

import pytest
import torch

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.defenses import ClientView
from gradleak.defenses.dpsgd import DPSGD
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.models import build_model

pytest.importorskip("opacus")  # DP-SGD is an optional extra


def _client(batch_size: int) -> tuple[FedSGDClient, PrivateBatch]:
    model = build_model("mlp-256", num_classes=10, image_size=(16, 16), seed=0)
    g = torch.Generator().manual_seed(5)
    batch = PrivateBatch(
        torch.randn(batch_size, 3, 16, 16, generator=g),
        torch.randint(0, 10, (batch_size,), generator=g),
    )
    return FedSGDClient(model), batch


def _flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors.values()]).double()


def test_the_sum_is_averaged_over_the_expected_batch_size() -> None:
    client, batch = _client(3)
    update = client.compute_update(batch)  # the mean over the 3 samples
    gen = torch.Generator().manual_seed(0)
    out = DPSGD(1e6, 0.0).apply(update, gen, ClientView(client.model, batch, 8))
    for name, mean in update.tensors.items():
        torch.testing.assert_close(out.tensors[name], mean * 3 / 8, rtol=0, atol=1e-6)


def test_an_empty_batch_shares_the_noise_alone_over_the_expected_size() -> None:
    client, batch = _client(2)
    empty = PrivateBatch(batch.images[:0], batch.labels[:0])
    update = client.compute_update(batch)  # only its names are used
    clip, sigma, expected = 0.5, 1.5, 4
    out = DPSGD(clip, sigma).apply(
        update, torch.Generator().manual_seed(1), ClientView(client.model, empty, expected)
    )
    noise = torch.Generator().manual_seed(1)
    for tensor in out.tensors.values():
        drawn = torch.randn(tensor.shape, generator=noise)
        torch.testing.assert_close(tensor, sigma * clip * drawn / expected)
    values = _flat(dict(out.tensors))
    assert values.numel() > 200_000
    assert values.std().item() == pytest.approx(sigma * clip / expected, rel=0.02)


def test_an_empty_batch_without_an_expected_size_is_one_line() -> None:
    client, batch = _client(2)
    empty = PrivateBatch(batch.images[:0], batch.labels[:0])
    with pytest.raises(GradleakError) as info:
        DPSGD(1.0, 1.0).apply(
            client.compute_update(batch), torch.Generator(), ClientView(client.model, empty)
        )
    assert str(info.value) == (
        "defense 'dpsgd:1.0:1.0' cannot average over an empty batch; give the client's "
        "expected batch size (ClientView(..., expected_batch_size=q·N)) when batches are "
        "Poisson-sampled"
    )
