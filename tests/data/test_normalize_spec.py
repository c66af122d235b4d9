"""`--normalize`: its spelling, the statistics it names or computes, and where runs use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import DATASETS, ArrayImageSource
from gradleak.data.loading import open_images
from gradleak.data.statistics import (
    AUTO_SAMPLE,
    check_normalize,
    image_statistics,
    parse_normalize,
    pixel_statistics,
    sample_indices,
)
from gradleak.scenario.case import build_case
from gradleak.scenario.config import RunConfig, load_run_config
from gradleak.studies.sweep.spec import parse_spec


def _torch_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of B×C×H×W images, by torch."""
    pixels = images.double().transpose(0, 1).reshape(images.shape[1], -1)
    return pixels.mean(dim=1).tolist(), pixels.std(dim=1, correction=0).tolist()


def _source(count: int, seed: int = 0) -> ArrayImageSource:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 4, 5), dtype=torch.uint8, generator=generator)
    # Channels of different brightness, so a channel mix-up cannot pass.
    images[:, 0] //= 4
    return ArrayImageSource(images, torch.zeros(count, dtype=torch.int64), ["a"])


def test_named_and_custom_specs() -> None:
    auto = parse_normalize("auto")
    assert auto.name == "auto" and auto.fixed is None and auto.channels is None
    for name, spec in DATASETS.items():
        parsed = parse_normalize(name.upper())  # any letter case
        assert parsed.fixed is not None
        assert (parsed.name, parsed.fixed.mean, parsed.fixed.std) == (name, spec.mean, spec.std)
    custom = parse_normalize(" 0.5,0.5,0.5/0.25, 0.25,0.25 ")
    assert custom.name == "custom" and custom.fixed is not None
    assert custom.fixed.mean == (0.5, 0.5, 0.5) and custom.fixed.std == (0.25, 0.25, 0.25)
    assert parse_normalize("0.1/0.3").channels == 1


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("imagenett", "'imagenett' is not known; give auto, a dataset"),
        ("", "is not known"),
        ("0.5,x/0.2,0.2", "the mean '0.5,x' is not a comma list of numbers"),
        ("0.5,0.5/", "the std '' is not a comma list"),
        ("0.5,0.5/0.2", "gives 2 means but 1 stds"),
        ("0.5/0", "every std must be positive"),
        ("0.5/-1", "every std must be positive"),
        ("nan/0.2", "must be finite"),
        ("0.5/inf", "must be finite"),
    ],
)
def test_bad_specs_are_one_line_errors(spec: str, match: str) -> None:
    with pytest.raises(GradleakError, match=match) as error:
        parse_normalize(spec)
    assert "\n" not in str(error.value)


def test_statistics_must_fit_the_channels() -> None:
    assert check_normalize("mnist", 1).name == "mnist"
    assert check_normalize("auto", 1).name == "auto"
    for spec, channels in (("mnist", 3), ("cifar10", 1), ("0.5,0.5/1,1", 3)):
        with pytest.raises(GradleakError, match=f"but the images have {channels}"):
            check_normalize(spec, channels)


def test_auto_statistics_are_torchs_mean_and_std_of_the_images() -> None:
    source = _source(150)  # more than one chunk: the chunks' statistics are merged
    images = source.images.float() / 255
    mean, std = image_statistics(source)
    want_mean, want_std = _torch_stats(images)
    assert np.allclose(mean, want_mean, rtol=0, atol=1e-12)
    assert np.allclose(std, want_std, rtol=0, atol=1e-12)
    assert mean[0] < 0.2 < mean[1]  # the darker channel stays first
    assert np.allclose(pixel_statistics(images), (want_mean, want_std), rtol=0, atol=1e-12)


def test_auto_reads_a_fixed_sample_of_larger_sets() -> None:
    chosen = sample_indices(100, limit=10)
    assert len(chosen) == 10 == len(set(chosen)) and chosen == sorted(chosen)
    torch.manual_seed(123)  # the global seed does not move the sample
    assert sample_indices(100, limit=10) == chosen
    assert sample_indices(10, limit=10) == list(range(10))
    assert sample_indices(AUTO_SAMPLE + 1)[-1] <= AUTO_SAMPLE and AUTO_SAMPLE == 2000
    source = _source(100)
    mean, std = image_statistics(source, limit=10)
    want_mean, want_std = _torch_stats(source.images[chosen].float() / 255)
    assert np.allclose(mean, want_mean, rtol=0, atol=1e-12)
    assert np.allclose(std, want_std, rtol=0, atol=1e-12)


def test_flat_channels_are_refused() -> None:
    images = torch.rand(2, 3, 4, 4)
    images[:, 1] = 0.5
    with pytest.raises(GradleakError, match="channel 1 has the same value in every pixel"):
        pixel_statistics(images)


def test_open_images_applies_the_spec(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    np.savez(tmp_path / "x.npz", images=images.numpy(), labels=np.arange(5))
    default = open_images("tensors", tmp_path / "x.npz", image_size=6)
    assert (default.stats.name, default.stats.mean) == ("imagenet", DATASETS["imagenet"].mean)
    auto = open_images("tensors", tmp_path / "x.npz", image_size=6, normalize="auto")
    want_mean, want_std = _torch_stats(images.float() / 255)
    assert auto.stats.name == "auto"
    assert np.allclose(auto.stats.mean, want_mean, rtol=0, atol=1e-12)
    assert np.allclose(auto.stats.std, want_std, rtol=0, atol=1e-12)
    x, _ = auto.normalized([2])
    mean = torch.tensor(auto.stats.mean).view(3, 1, 1)
    std = torch.tensor(auto.stats.std).view(3, 1, 1)
    assert torch.allclose(x[0], (images[2].float() / 255 - mean) / std, atol=1e-6)
    bundled = open_images("cifar10", None, normalize="cifar100")
    assert (bundled.stats.name, bundled.stats.std) == ("cifar100", DATASETS["cifar100"].std)


def test_runs_check_the_spec_before_any_work() -> None:
    for values, match in (
        ({"normalize": "bogus"}, "--normalize 'bogus' is not known"),
        ({"dataset": "mnist", "normalize": "cifar10"}, "3 channel"),
        ({"modality": "text", "normalize": "auto"}, "text has none"),
    ):
        with pytest.raises(GradleakError, match=match):
            load_run_config(None, dict(values))
    assert load_run_config(None, {"normalize": "auto"}).normalize == "auto"
    # The normalisation changes the result, so it names another default run folder.
    assert RunConfig(normalize="auto").default_out() != RunConfig().default_out()


def test_the_attacker_is_told_the_chosen_statistics() -> None:
    config = RunConfig(indices=(0, 1), batch_size=2, normalize="auto")
    server, client = build_case(config)
    bundled = open_images("cifar10", None)
    images, _ = bundled.pixels(range(len(bundled)))  # auto: all eight bundled images
    want_mean, want_std = _torch_stats(images)
    knowledge = server.knowledge
    assert knowledge.dataset == "auto"
    assert np.allclose(knowledge.mean, want_mean, rtol=0, atol=1e-12)
    assert np.allclose(knowledge.std, want_std, rtol=0, atol=1e-12)
    mean = torch.tensor(knowledge.mean).view(3, 1, 1)
    std = torch.tensor(knowledge.std).view(3, 1, 1)
    assert torch.allclose(client.batch.images, (images[:2] - mean) / std, atol=1e-6)


def test_a_single_image_refuses_auto_statistics(tmp_path: Path) -> None:
    # Its own statistics, handed to the attacker as public knowledge, would describe it.
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    with pytest.raises(GradleakError, match="--normalize auto computes statistics from a dataset"):
        build_case(RunConfig(image=tmp_path / "x.png", normalize="auto"))
    server, _ = build_case(RunConfig(image=tmp_path / "x.png", normalize="0.5,0.5,0.5/0.2,0.2,0.2"))
    assert server.knowledge.mean == (0.5, 0.5, 0.5)


def test_sweeps_take_normalize_in_base() -> None:
    spec = parse_spec({"attacks": ["dlg"], "base": {"normalize": "cifar10"}})
    cell = spec.cells()[0]
    assert spec.run_config(cell, Path("out")).normalize == "cifar10"
    with pytest.raises(GradleakError, match="--normalize 'x' is not known"):
        parse_spec({"attacks": ["dlg"], "base": {"normalize": "x"}})
