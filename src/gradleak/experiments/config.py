"""The configuration of one attack run: the scenario, the threat model and the attack."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradleak.config import read_mapping, replace_checked
from gradleak.errors import GradleakError

PROTOCOLS = ("fedsgd",)
DATASET_CHOICES = ("cifar10", "cifar100", "mnist", "folder")
MODEL_MODES = ("train", "eval")
SPLITS = ("test", "train")
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class RunConfig:
    """One run. `attack_options` overrides the attack preset's hyper-parameters."""

    attack: str = "dlg"
    model: str = "lenet"
    dataset: str = "cifar10"
    data_root: Path | None = None  # None with cifar10: the bundled sample images
    split: str = "test"
    indices: tuple[int, ...] = (0,)
    image: Path | None = None
    label: int | None = None
    num_classes: int | None = None
    image_size: int | None = None  # for 'folder' and --image; default: the dataset's size
    batch_size: int = 1
    seed: int = 0
    out: Path | None = None
    checkpoint: Path | None = None
    model_mode: str = "train"
    labels_known: bool = False
    attack_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    # Evaluation side: end the attack once the reconstruction reaches this PSNR (dB).
    # It reads the ground truth, so it measures time-to-quality; it is not attacker knowledge.
    stop_psnr: float | None = None
    protocol: str = "fedsgd"
    # Client-side defenses, applied in order to the update (e.g. "prune:0.3").
    defenses: tuple[str, ...] = ()
    # Iterations at which the evaluation side keeps a picture of the reconstruction
    # (None: about six, spread over the run).
    snapshots: tuple[int, ...] | None = None

    def validate(self) -> RunConfig:
        if self.dataset not in DATASET_CHOICES:
            raise GradleakError(
                f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASET_CHOICES)}"
            )
        if self.model_mode not in MODEL_MODES:
            raise GradleakError(
                f"model_mode {self.model_mode!r} is not one of: {', '.join(MODEL_MODES)}"
            )
        if not 0 <= self.seed < 2**63:
            raise GradleakError(f"seed must be in 0..2**63-1, got {self.seed}")
        if self.protocol not in PROTOCOLS:
            raise GradleakError(f"protocol {self.protocol!r} is not one of: {', '.join(PROTOCOLS)}")
        if self.snapshots is not None and any(i < 0 for i in self.snapshots):
            raise GradleakError(f"snapshot iterations must be >= 0, got {list(self.snapshots)}")
        if self.split not in SPLITS:
            raise GradleakError(f"split {self.split!r} is not one of: {', '.join(SPLITS)}")
        if self.data_root is None and self.dataset == "cifar10" and self.split != "test":
            raise GradleakError(
                "the bundled CIFAR-10 images are test images; give --data-root for another split"
            )
        if len(set(self.indices)) != len(self.indices):
            raise GradleakError(f"image indices repeat: {list(self.indices)}; give each once")
        if self.label is not None and self.image is None:
            raise GradleakError("--label sets the label of --image; dataset images have theirs")
        if self.num_classes is not None and self.num_classes > MAX_CLASSES:
            raise GradleakError(f"--num-classes must be at most {MAX_CLASSES}")
        if self.batch_size < 1:
            raise GradleakError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.indices:
            raise GradleakError("give at least one image index")
        if any(i < 0 for i in self.indices):
            raise GradleakError(f"image indices must be non-negative, got {list(self.indices)}")
        if len(self.indices) not in (1, self.batch_size):
            raise GradleakError(
                f"{len(self.indices)} indices given for batch size {self.batch_size}; give one "
                "start index or exactly one index per image"
            )
        if self.image is not None and self.batch_size != 1:
            raise GradleakError("--image attacks one image; drop --batch-size or use --dataset")
        if self.num_classes is not None and self.num_classes < 2:
            raise GradleakError(f"--num-classes must be at least 2, got {self.num_classes}")
        if self.stop_psnr is not None and not (0 < self.stop_psnr < math.inf):
            raise GradleakError(
                f"--stop-psnr must be a positive number of dB, got {self.stop_psnr}"
            )
        if self.image_size is not None and self.image_size < 4:
            raise GradleakError(f"--image-size must be at least 4, got {self.image_size}")
        return self

    def batch_indices(self) -> list[int]:
        if len(self.indices) == self.batch_size:
            return list(self.indices)
        return [self.indices[0] + i for i in range(self.batch_size)]

    def default_out(self) -> Path:
        source = self.image.stem if self.image is not None else f"{self.dataset}-{self.indices[0]}"
        return Path("runs") / f"{self.attack}-{self.model}-{source}-b{self.batch_size}-s{self.seed}"


def load_run_config(path: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the config file, then explicit overrides (e.g. CLI flags)."""
    config = RunConfig()
    if path is not None:
        config = replace_checked(config, read_mapping(path), f"config file {path}")
    options = dict(config.attack_options)
    options.update(overrides.pop("attack_options", {}))
    config = replace_checked(config, {**overrides, "attack_options": options}, "arguments")
    return config.validate()
