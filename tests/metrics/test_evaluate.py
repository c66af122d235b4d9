import json

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.metrics import CONVENTION, PSNR_CEILING_DB, Evaluation, evaluate_images
from gradleak.metrics.image import EXACT_PSNR_DB


def _batch(seed: int, shape=(4, 3, 16, 16)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_permuted_exact_reconstruction_scores_the_ceiling():
    truth = _batch(0)
    perm = torch.tensor([2, 0, 3, 1])
    result = evaluate_images(truth[perm], truth)
    assert isinstance(result, Evaluation)
    assert result.psnr == PSNR_CEILING_DB
    assert result.ssim == pytest.approx(1.0, abs=1e-12)
    assert result.mse == 0.0
    assert result.label_accuracy is None
    assert result.matching == torch.argsort(perm).tolist() == [1, 3, 0, 2]
    assert [p["matched_reconstruction"] for p in result.per_image] == [1, 3, 0, 2]
    assert [p["index"] for p in result.per_image] == [0, 1, 2, 3]


def test_means_are_per_image_averages():
    truth = torch.cat([torch.full((1, 1, 12, 12), 0.5), torch.full((1, 1, 12, 12), 0.3)])
    recon = torch.cat([torch.full((1, 1, 12, 12), 0.6), torch.full((1, 1, 12, 12), 0.31)])
    result = evaluate_images(recon, truth)
    assert result.matching == [0, 1]
    assert [p["psnr"] for p in result.per_image] == pytest.approx([20.0, 40.0], abs=1e-5)
    assert result.psnr == pytest.approx(30.0, abs=1e-5)
    assert result.mse == pytest.approx((0.01 + 0.0001) / 2, abs=1e-8)
    c1 = 0.01**2
    luminance = [(2 * a * b + c1) / (a * a + b * b + c1) for a, b in ((0.5, 0.6), (0.3, 0.31))]
    assert [p["ssim"] for p in result.per_image] == pytest.approx(luminance, abs=1e-6)
    assert result.ssim == pytest.approx(sum(luminance) / 2, abs=1e-6)


def test_label_accuracy_follows_the_matching():
    truth = _batch(1)
    perm = torch.tensor([1, 2, 3, 0])
    true_labels = torch.tensor([7, 3, 3, 9])
    recon_labels = true_labels[perm].clone()
    recon_labels[0] = 0  # the reconstruction of truth 1 gets a wrong label
    result = evaluate_images(truth[perm], truth, recon_labels, true_labels)
    assert result.label_accuracy == pytest.approx(0.75)
    # Without matching, positions line up differently: [0, 3, 9, 7] vs [7, 3, 3, 9].
    assert (recon_labels == true_labels).double().mean().item() == pytest.approx(0.25)


def test_labels_are_optional():
    truth = _batch(2)
    labels = torch.tensor([0, 1, 2, 3])
    assert evaluate_images(truth, truth, labels, None).label_accuracy is None
    assert evaluate_images(truth, truth, None, labels).label_accuracy is None


def test_label_count_mismatch_is_a_clear_error():
    truth = _batch(3)
    with pytest.raises(GradleakError, match="one recovered label per reconstruction"):
        evaluate_images(truth, truth, torch.tensor([0, 1]), torch.tensor([0, 1, 2, 3]))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(GradleakError, match="ground truth has shape"):
        evaluate_images(_batch(4, (3, 3, 16, 16)), _batch(4))


def test_images_smaller_than_the_ssim_window_report_no_ssim():
    truth = _batch(5, (2, 1, 8, 8))
    result = evaluate_images(truth.flip(0), truth)
    assert result.ssim is None
    assert all(p["ssim"] is None for p in result.per_image)
    assert result.psnr == PSNR_CEILING_DB
    assert result.matching == [1, 0]


def test_to_dict_is_json_safe():
    truth = _batch(6)
    recon = (truth + 0.1).flip(0)
    data = evaluate_images(recon, truth, torch.tensor([1, 2, 3, 4]), torch.tensor([4, 3, 2, 1]))
    d = data.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert set(d) == {
        "psnr",
        "ssim",
        "mse",
        "label_accuracy",
        "per_image",
        "matching",
        "exact_fraction",
    }
    assert d["matching"] == [3, 2, 1, 0]
    assert d["label_accuracy"] == 1.0
    assert all(type(v) is float for v in (d["psnr"], d["ssim"], d["mse"]))
    assert set(d["per_image"][0]) == {"index", "matched_reconstruction", "psnr", "ssim", "mse"}


def test_convention_states_the_rules():
    for phrase in ("[0, 1]", "clamped", "Hungarian", "10·log10(1/MSE)", "100 dB", "11×11", "σ=1.5"):
        assert phrase in CONVENTION


def test_exact_fraction_counts_images_from_60_db() -> None:
    truth = _batch(7)
    recon = truth.clone()
    recon[0] = (recon[0] + 0.5e-3).clamp(0, 1)  # RMS error ≤ 5e-4: above 60 dB
    recon[1] = (recon[1] + 0.05).clamp(0, 1)  # about 26 dB
    result = evaluate_images(recon, truth)
    psnrs = [p["psnr"] for p in result.per_image]
    assert psnrs[0] >= EXACT_PSNR_DB > psnrs[1]
    assert result.exact_fraction == sum(p >= EXACT_PSNR_DB for p in psnrs) / len(psnrs)
    assert result.exact_fraction == (len(psnrs) - 1) / len(psnrs)
