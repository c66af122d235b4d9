import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.metrics import match_reconstructions, pairwise_mse


def _pixels(values: list[float]) -> torch.Tensor:
    """A batch of 1×1 single-channel images with the given values."""
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 1, 1, 1)


def test_permuted_batch_recovers_the_permutation():
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(6, 3, 8, 8, generator=gen)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    recon = truth[perm]  # recon[j] shows truth[perm[j]]
    order = match_reconstructions(recon, truth)
    assert order.dtype == torch.int64
    assert order.tolist() == torch.argsort(perm).tolist()
    assert torch.equal(recon[order], truth)


def test_noisy_permuted_batch_is_still_matched():
    gen = torch.Generator().manual_seed(1)
    truth = torch.rand(5, 1, 12, 12, generator=gen)
    perm = torch.tensor([4, 2, 0, 3, 1])
    recon = truth[perm] + 0.05 * torch.randn(truth.shape, generator=gen)
    assert match_reconstructions(recon, truth).tolist() == torch.argsort(perm).tolist()


def test_matching_minimises_total_error_not_each_row_greedily():
    truth = _pixels([0.5, 0.0])
    recon = _pixels([0.4, 0.9])
    cost = pairwise_mse(recon, truth)
    # Hand-computed: rows are truth images, columns reconstructions.
    assert cost.flatten().tolist() == pytest.approx([0.01, 0.16, 0.16, 0.81])
    # Greedy (truth 0 takes recon 0) totals 0.82; the swap totals 0.32.
    assert match_reconstructions(recon, truth).tolist() == [1, 0]


def test_single_image_is_matched_to_itself():
    x = torch.rand(1, 3, 4, 4)
    assert match_reconstructions(x + 0.3, x).tolist() == [0]


def test_matching_uses_clamped_images():
    # Unclamped, 5.0 is far from 1.0 and the swap would win; clamped it is an exact match.
    truth = _pixels([1.0, 0.2])
    recon = _pixels([5.0, 0.6])
    assert match_reconstructions(recon, truth).tolist() == [0, 1]


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(GradleakError, match="one reconstruction per ground-truth image"):
        match_reconstructions(torch.rand(3, 1, 4, 4), torch.rand(2, 1, 4, 4))
