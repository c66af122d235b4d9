"""Train a model with SGD and save its states, so attacks can target a trained server model.

Layout of the outputs for `out = DIR/NAME.pt`:

- `DIR/NAME.pt`: the final state (the last completed epoch; after Ctrl-C, the last epoch
  that finished before it);
- `DIR/NAME.epochN.pt`: the state after epoch N, for every N in `save_epochs` (N = 0 is
  the initial, untrained state);
- `DIR/NAME.json`: the settings and the per-epoch loss and accuracy history.

These files are one set: a training never writes beside files of an earlier one (they are
refused before any work), unless told to replace them (`overwrite`). Then the new set is
written into a hidden folder beside them and replaces the earlier set when the training
ends (also after Ctrl-C or SIGTERM, as the interrupted training it is); if the training
fails, the earlier set stays. A training that replaces nothing writes in place, so each
checkpoint can be used as soon as it is saved.

Every checkpoint is a tensors-only state dict with its buffers (batch-norm statistics
included) plus metadata naming the model, the data and the epoch, so `--checkpoint` loads
it into the model an attack builds and a checkpoint for another model is refused.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from gradleak import __version__
from gradleak.core.device import CPU
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_file, replaced_files, write_atomically
from gradleak.core.settings import require_counts, require_seed
from gradleak.data import DATASETS, DatasetSpec, dataset_stats, input_shape, open_images
from gradleak.data.loading import FILE_DATASETS
from gradleak.models import build_model, save_checkpoint
from gradleak.models.user import check_labels_fit, is_factory_spec, output_classes
from gradleak.scenario.config import DATASET_CHOICES, SPLITS
from gradleak.scenario.user_model import checked_image_size
from gradleak.training.sgd import EpochStats, accuracy, sgd_epochs

TRAIN_DATASETS = DATASET_CHOICES
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, the images it learns from and is scored on, and SGD's settings.

    Ranges are inclusive image indices into `split`: (100, 599) is images 100 … 599.
    """

    model: str
    dataset: str
    data_root: Path | None
    split: str = "test"
    train_range: tuple[int, int] | None = None  # None: every image of the split
    test_range: tuple[int, int] | None = None  # None: no held-out accuracy
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    save_epochs: tuple[int, ...] = ()  # 0 saves the initial state too
    image_size: int | None = None  # side of folder images (default 32); fixed for the others
    # Keyword arguments of a model factory (model = MODULE:FACTORY or FILE.py:FACTORY).
    model_args: dict[str, Any] = field(default_factory=dict)

    def validate(self, dataset_size: int | None = None) -> TrainConfig:
        """Check every setting; with `dataset_size`, also that the ranges lie in the split."""
        if self.dataset not in TRAIN_DATASETS:
            raise GradleakError(
                f"unknown dataset {self.dataset!r} for training; choose one of: "
                f"{', '.join(TRAIN_DATASETS)}"
            )
        if self.data_root is None:
            raise GradleakError(
                "training reads its images from disk: pass --data-root DIR (e.g. the folder "
                "holding mnist/ or cifar-10-batches-py/)"
            )
        if self.split not in SPLITS:
            raise GradleakError(f"unknown split {self.split!r}; choose one of: {', '.join(SPLITS)}")
        require_counts(self, ("epochs", "batch_size"))
        require_seed(self.seed)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise GradleakError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise GradleakError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise GradleakError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        beyond = [e for e in self.save_epochs if not 0 <= e <= self.epochs]
        if beyond:
            raise GradleakError(
                f"save epoch {beyond[0]} is outside 0..{self.epochs}; choose epochs up to "
                f"--epochs {self.epochs} (0 saves the untrained state)"
            )
        if self.image_size is not None:
            if self.dataset not in FILE_DATASETS:
                size = DATASETS[self.dataset].image_size[0]
                raise GradleakError(
                    f"{self.dataset} images are {size} pixels and are not resized; drop "
                    "--image-size or use --dataset folder, list or tensors"
                )
            if self.image_size < 1:
                raise GradleakError(f"image_size must be at least 1, got {self.image_size}")
        self._check_ranges(dataset_size)
        # The model is built (a factory probed) before any data is read; a factory's
        # images are read at the size it takes where none is asked for.
        side = checked_image_size(
            self.model,
            self.model_args,
            self.dataset,
            self.image_size,
            self.input_shape,
            seed=self.seed,
        )
        return self if side == self.image_size else replace(self, image_size=side)

    def _check_ranges(self, size: int | None) -> None:
        where = f"the {self.dataset} {self.split} split"
        for name, bounds in (("train", self.train_range), ("test", self.test_range)):
            if bounds is None:
                continue
            first, last = bounds
            if not 0 <= first <= last:
                raise GradleakError(
                    f"{name} range {first}-{last} is not A-B with 0 <= A <= B; give e.g. 100-599"
                )
            if size is not None and last >= size:
                raise GradleakError(
                    f"{name} range {first}-{last} goes past {where}, which has {size} images "
                    f"(0-{size - 1}); choose indices up to {size - 1}"
                )
        train = self.train_range or ((0, size - 1) if size is not None else None)
        test = self.test_range
        if train is not None and test is not None and test[0] <= train[1] and train[0] <= test[1]:
            raise GradleakError(
                f"train range {train[0]}-{train[1]} overlaps the held-out range "
                f"{test[0]}-{test[1]}; held-out images must not be trained on"
            )
        if train is not None and self.batch_size > train[1] - train[0] + 1:
            raise GradleakError(
                f"batch size {self.batch_size} is larger than the {train[1] - train[0] + 1} "
                f"training images ({train[0]}-{train[1]}); use --batch-size "
                f"{train[1] - train[0] + 1} or fewer"
            )

    def stats(self) -> DatasetSpec:
        """Normalisation statistics: the dataset's own, or the photo ones for folders."""
        return dataset_stats(self.dataset)

    def input_shape(self) -> tuple[int, tuple[int, int]]:
        """Channels and (height, width) of the model's input."""
        return input_shape(self.dataset, self.image_size)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean loss and running accuracy over its batches (train mode), held-out score."""

    epoch: int
    loss: float
    train_accuracy: float
    heldout_accuracy: float | None
    seconds: float


@dataclass(frozen=True)
class SavedCheckpoint:
    path: Path
    epoch: int
    train_accuracy: float | None  # None for the untrained state (epoch 0)
    heldout_accuracy: float | None
    final: bool


@dataclass
class TrainResult:
    config: TrainConfig
    model: nn.Module  # in the state of the final checkpoint
    history: list[EpochRecord]
    checkpoints: list[SavedCheckpoint]
    history_path: Path
    seconds: float
    interrupted: bool = False
    device: str = "cpu"  # where it trained

    @property
    def final(self) -> SavedCheckpoint | None:
        """The checkpoint at `out`; None when Ctrl-C came before the first epoch ended."""
        return next((c for c in self.checkpoints if c.final), None)


def epoch_checkpoint_path(out: Path, epoch: int) -> Path:
    """Where the state after `epoch` goes: NAME.epochN.pt beside NAME.pt."""
    return out.with_name(f"{out.stem}.epoch{epoch}{out.suffix}")


def history_path(out: Path) -> Path:
    """Where the settings and per-epoch history go: NAME.json beside NAME.pt."""
    return out.with_name(f"{out.stem}.json")


def earlier_outputs(out: Path) -> list[Path]:
    """The files of a training at `out` already on disk: the final checkpoint, the history
    and every epoch checkpoint (whatever epochs that training saved)."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    epoch_file = re.compile(rf"{re.escape(out.stem)}\.epoch\d+{re.escape(out.suffix)}")
    epochs = sorted(p for p in out.parent.iterdir() if epoch_file.fullmatch(p.name))
    return [p for p in (out, history_path(out)) if p.exists()] + epochs


@dataclass(frozen=True)
class _Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    train_range: tuple[int, int]


def train_model(
    config: TrainConfig,
    out: Path,
    progress: bool = True,
    on_save: Callable[[SavedCheckpoint], None] | None = None,
    overwrite: bool = False,
    device: torch.device = CPU,
) -> TrainResult:
    """Train `config.model` with SGD on cross-entropy; save checkpoints and the history.

    Ctrl-C (or SIGTERM) ends training: the last completed epoch is saved at `out` and the
    result says `interrupted`.

    Args:
        config: the run's settings; checked before anything is read or written.
        out: the final checkpoint (.pt or .pth); the others and the history go beside it.
        progress: show a progress bar (on a terminal only).
        on_save: called after each checkpoint is written (with its path at `out`'s folder).
        overwrite: replace the files of an earlier training at `out` (see the module's
            notes); without it they are refused before any work.
        device: where the model and images go: built and seeded on the CPU, moved once
            (batches are drawn on the CPU, so a seed trains alike on any device up to
            float rounding); checkpoints are saved from the CPU.

    Returns:
        The trained model, the per-epoch history, the saved checkpoints, where the
        history went and the device it trained on.

    Raises:
        GradleakError: if a setting is invalid, `out` names no checkpoint file, its folder
            cannot be written or holds an earlier training's files (without `overwrite`),
            or the data cannot be read or does not hold the ranges.
    """
    config = config.validate()
    out = _check_out(Path(out))
    earlier = earlier_outputs(out)
    if earlier and not overwrite:
        names = ", ".join(p.name for p in earlier)
        raise GradleakError(
            f"--out {out} would mix with an earlier training's files beside it ({names}); "
            "add --overwrite to replace them, or choose another --out"
        )
    data = _load_data(config)
    staging = replaced_files(out.parent, out.stem, earlier) if earlier else nullcontext(out.parent)
    with staging as folder:
        return _train(config, data, out, folder, progress, on_save, device)


def _train(
    config: TrainConfig,
    data: _Data,
    out: Path,
    folder: Path,
    progress: bool,
    on_save: Callable[[SavedCheckpoint], None] | None,
    device: torch.device = CPU,
) -> TrainResult:
    """The training loop; every file goes to `folder` under its name beside `out`."""
    channels, size = config.input_shape()
    model = build_model(
        config.model,
        num_classes=data.num_classes,
        in_channels=channels,
        image_size=size,
        seed=config.seed,
        model_args=config.model_args,
    )
    classes = data.num_classes
    if is_factory_spec(config.model):
        # A factory decides its classes: every label trained or scored on must be one.
        name = config.model.strip()
        classes = output_classes(model, channels, size, name=name)
        check_labels_fit(torch.cat([data.train_y, data.test_y]), classes, name=name)
    model.to(device)  # before the optimiser takes its parameters
    data = replace(
        data,
        train_x=data.train_x.to(device),
        train_y=data.train_y.to(device),
        test_x=data.test_x.to(device),
        test_y=data.test_y.to(device),
    )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    metadata = _metadata(config, classes, data, channels, size)
    history: list[EpochRecord] = []
    saved: list[SavedCheckpoint] = []

    def save(path: Path, record: EpochRecord | None, final: bool, **extra: object) -> None:
        epoch = record.epoch if record else 0
        train_acc = record.train_accuracy if record else None
        heldout = record.heldout_accuracy if record else accuracy(model, data.test_x, data.test_y)
        save_checkpoint(
            model,
            folder / path.name,
            **metadata,
            epoch=epoch,
            train_loss=record.loss if record else None,
            train_accuracy=train_acc,
            heldout_accuracy=heldout,
            **extra,
        )
        checkpoint = SavedCheckpoint(path, epoch, train_acc, heldout, final)
        saved.append(checkpoint)
        if on_save is not None:
            on_save(checkpoint)

    bar = _progress_bar(config, len(data.train_y), progress)
    start = time.perf_counter()
    last_state: dict[str, torch.Tensor] | None = None
    interrupted = False
    try:
        if 0 in config.save_epochs:
            save(epoch_checkpoint_path(out, 0), None, final=False)
        epochs = sgd_epochs(
            model,
            optimizer,
            data.train_x,
            data.train_y,
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed=config.seed,
            on_step=lambda stats: _show(bar, stats, config.epochs),
        )
        for stats in epochs:
            record = _record(stats, model, data)
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            history.append(record)
            last_state = state
            if record.epoch in config.save_epochs:
                save(epoch_checkpoint_path(out, record.epoch), record, final=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if last_state is not None:
        # After Ctrl-C mid-epoch the model holds a partial epoch; the final file is the
        # last complete one.
        model.load_state_dict(last_state)
        save(out, history[-1], final=True, interrupted=interrupted, epochs_planned=config.epochs)
    seconds = time.perf_counter() - start
    result = TrainResult(
        config, model, history, saved, history_path(out), seconds, interrupted, str(device)
    )
    _write_history(result, data, folder / result.history_path.name)
    return result


def _check_out(out: Path) -> Path:
    return check_out_file(out, "checkpoint", CHECKPOINT_SUFFIXES)


def _load_data(config: TrainConfig) -> _Data:
    """Normalised training and held-out images; the ranges are checked against the split."""
    images = open_images(config.dataset, config.data_root, config.split, config.image_size)
    config.validate(len(images))
    first, last = config.train_range or (0, len(images) - 1)
    train_x, train_y = images.normalized(range(first, last + 1))
    if config.test_range is None:
        test_x, test_y = train_x[:0], train_y[:0]
    else:
        test_x, test_y = images.normalized(range(config.test_range[0], config.test_range[1] + 1))
    return _Data(train_x, train_y, test_x, test_y, images.num_classes, (first, last))


def _progress_bar(config: TrainConfig, images: int, progress: bool) -> tqdm:
    """A bar over every step of the run."""
    return tqdm(
        total=config.epochs * math.ceil(images / config.batch_size),
        desc="train",
        unit="step",
        mininterval=0.5,
        disable=None if progress else True,  # None: only on a terminal
        leave=False,
    )


def _show(bar: tqdm, stats: EpochStats, epochs: int) -> None:
    """Advance the bar by one step and show the epoch's running loss and accuracy."""
    # A dict keeps this order; keyword arguments would be sorted by name.
    postfix = {
        "epoch": f"{stats.epoch}/{epochs}",
        "loss": f"{stats.sample_loss:.3f}",
        "acc": f"{stats.accuracy:.3f}",
    }
    bar.set_postfix(postfix, refresh=False)
    bar.update(1)


def _record(stats: EpochStats, model: nn.Module, data: _Data) -> EpochRecord:
    """The epoch's history entry: its training statistics and the held-out score after it."""
    start = time.perf_counter()
    heldout = accuracy(model, data.test_x, data.test_y)
    return EpochRecord(
        epoch=stats.epoch,
        loss=stats.sample_loss,
        train_accuracy=stats.accuracy,
        heldout_accuracy=heldout,
        seconds=stats.seconds + time.perf_counter() - start,
    )


def _metadata(
    config: TrainConfig, classes: int, data: _Data, channels: int, size: tuple[int, int]
) -> dict[str, object]:
    """What every checkpoint of this run records about where it came from."""
    return {
        "model": config.model.strip(),
        **({"model_args": dict(config.model_args)} if config.model_args else {}),
        "dataset": config.dataset,
        "split": config.split,
        "num_classes": classes,
        "in_channels": channels,
        "image_size": list(size),
        "seed": config.seed,
        "train_range": list(data.train_range),
        "test_range": list(config.test_range) if config.test_range else None,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "gradleak_version": __version__,
    }


def _write_history(result: TrainResult, data: _Data, path: Path) -> None:
    config = asdict(result.config)
    config["data_root"] = str(config["data_root"])
    payload = {
        "config": config,
        "num_classes": data.num_classes,
        "train_images": len(data.train_y),
        "heldout_images": len(data.test_y),
        "interrupted": result.interrupted,
        "seconds": result.seconds,
        "device": result.device,
        "epochs": [asdict(r) for r in result.history],
        "checkpoints": [
            {"path": str(c.path), "epoch": c.epoch, "final": c.final} for c in result.checkpoints
        ],
    }
    write_atomically(path, json.dumps(payload, indent=2) + "\n")
