"""A run against an update file: read it, build the server's model and attack it, end to end.

`run_captured` is what `gradleak attack --update FILE` does. The run's settings come as a
`RunConfig` (the model, the data's format, the protocol, the threat model, the attack and
where the outputs go), as for a simulated run, with the files on the side
(`CapturedFiles`). Nothing is simulated: the update is read from its file
(`core/update_files.py`), the model is the one the client received (the --checkpoint, or
the global state a weight difference was taken from), and the private batch appears only on
the evaluation side, from a truth file, to score the reconstruction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak import attacks
from gradleak.attacks.registry import attack_label
from gradleak.core.batch import PrivateBatch
from gradleak.core.device import resolve_device
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_dir, output_dir
from gradleak.core.knowledge import DataFacts
from gradleak.core.signals import hold_interrupts, release_interrupts
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.core.update_files import load_update_file, read_state_file, read_tensor_file
from gradleak.data import FILE_DATASETS, dataset_stats, input_shape, normalize
from gradleak.data.statistics import Normalization, normalization
from gradleak.models import build_model, check_checkpoint_model, load_checkpoint
from gradleak.models.user import model_label
from gradleak.scenario.captured import (
    CapturedOutcome,
    attack_captured,
    captured_view,
    read_as,
    refuse_model_modifying,
    write_captured,
)
from gradleak.scenario.config import RunConfig, settings_digest
from gradleak.scenario.plan import data_request, model_request
from gradleak.scenario.user_model import fit_user_model, is_user_model

# Digits of a file's SHA-256 recorded with a run (the digest of the run's name is shorter).
_FILE_DIGEST_CHARS = 16


@dataclass(frozen=True)
class CapturedFiles:
    """The files of a run against a captured update.

    Attributes:
        update: the update file, or with `base` the client's local state.
        base: the global state the client started from (None: `update` is the update).
        kind: the update's kind where the file names none (None: the file's, else
            gradient for one file and weight_delta for a pair).
        truth: evaluation side: a file of the private batch (`images` in [0, 1] pixels,
            B×C×H×W, and integer `labels`) to score the reconstruction against.
    """

    update: Path
    base: Path | None = None
    kind: str | None = None
    truth: Path | None = None

    @property
    def source(self) -> str:
        """How outputs name what was attacked."""
        if self.base is None:
            return f"update {self.update}"
        return f"update {self.update} − {self.base}"


@dataclass(frozen=True)
class CapturedRequest:
    """A run against a captured update.

    Attributes:
        config: the run's settings (validated); its batch size is replaced by the one
            the update was computed on.
        files: the update's files.
        batch_size: the batch size the settings ask for (None: none asked; the file's
            `num_samples`, else 1).
        lr: FedSGD: the client's learning rate, which reads a weight difference as a
            gradient (−Δ/lr).
    """

    config: RunConfig
    files: CapturedFiles
    batch_size: int | None = None
    lr: float | None = None


@dataclass
class CapturedResult:
    """A captured update attacked, its metrics and where they were written."""

    outcome: CapturedOutcome
    metrics: dict[str, object]
    out_dir: Path
    # Ctrl-C or SIGTERM arrived after the attack ended, while its results were written:
    # they are complete, and the command still ends as interrupted.
    interrupted_while_writing: bool = False


def captured_out_dir(request: CapturedRequest) -> Path:
    """The run directory: `config.out`, else runs/ATTACK-MODEL-update-DIGEST, the digest
    of the files' bytes and of every setting that changes the result."""
    config = request.config
    if config.out is not None:
        return Path(config.out)
    files = request.files
    named = (
        ("update", files.update, "update file"),
        ("base", files.base, "update base"),
        ("truth", files.truth, "truth file"),
    )
    digests = {key: None if path is None else file_digest(path, what) for key, path, what in named}
    settings = {
        "files": digests,
        "kind": files.kind,
        "batch_size": request.batch_size,
        "lr": request.lr,
        "run": config.result_settings(),
    }
    name = f"{attack_label(config.attack)}-{model_label(config.model)}-update"
    return Path("runs") / f"{name}-{settings_digest(settings)}"


def file_digest(path: Path, what: str = "file") -> str:
    """The first characters of the SHA-256 of a file's bytes.

    Args:
        path: the file.
        what: what it is, for messages.

    Raises:
        GradleakError: a missing file, a folder or a file that cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        raise GradleakError(f"{what} {path} is a folder; pass the file itself")
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise GradleakError(f"{what} not found: {path}") from exc
    except OSError as exc:
        raise GradleakError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()[:_FILE_DIGEST_CHARS]


def run_captured(request: CapturedRequest, *, overwrite: bool = False) -> CapturedResult:
    """Attack a captured update and write its run directory.

    Everything the run needs is read and checked before the attack starts: the update
    (names, shapes and values against the model), the batch size, the weights, the truth.

    Args:
        request: the settings and the files.
        overwrite: replace an earlier run in the run directory (see `run_attack`).

    Returns:
        The outcome, the metrics written and the run directory. After Ctrl-C (or SIGTERM)
        during the attack, what was reconstructed so far is written and scored, and the
        reconstruction says it was interrupted.

    Raises:
        GradleakError: an unusable run directory, an unreadable or mismatched file, a
            batch size that disagrees with the file's, settings the update cannot be
            attacked with (one line each, before the attack starts); a run directory that
            cannot be written.
    """
    config, files = request.config, request.files
    refuse_model_modifying(attacks.get(config.attack), config.attack)
    out_dir = check_out_dir(captured_out_dir(request), overwrite=overwrite)
    model, facts = attacked_model(config)
    parameters = {name for name, _ in model.named_parameters()}
    update = load_update_file(files.update, base=files.base, kind=files.kind, parameters=parameters)
    try:  # before any weight is loaded: names the update's mismatch, and its file
        update.validate_for(model)
    except GradleakError as exc:
        raise GradleakError(f"{files.update}: {exc}") from exc
    batch_size = resolve_batch_size(update, request.batch_size)
    config = replace(config, batch_size=batch_size, share_buffers=bool(update.buffers)).validate()
    load_weights(model, config, files.base)
    device = resolve_device(config.device)
    protocol = config.protocol_settings()
    attacked = read_as(update, protocol, _lr_for(update, request.lr))
    truth = None if files.truth is None else load_truth(files.truth, facts, batch_size, device)
    if config.labels_known and truth is None:
        raise GradleakError(
            "--labels-known hands the true labels to the attacker; with --update they are "
            "read from --truth FILE: give it or drop --labels-known"
        )
    attack = attacks.get(config.attack).with_options(config.attack_options)
    model = model.to(device)
    labels = truth.labels if truth is not None and config.labels_known else None
    view = captured_view(model, facts, protocol, batch_size, grants=config.grants(), labels=labels)
    settings = _settings(config, files, update, attacked, request.lr, device, facts)
    try:
        outcome = attack_captured(
            view,
            attacked.to(device),
            attack,
            name=config.attack,
            seed=config.seed,
            truth=truth,
            progress=config.progress,
            # Once the attack has returned, an interrupt waits until its results are written.
            attacked_hook=hold_interrupts,
        )
        with output_dir(out_dir, overwrite=overwrite) as folder:
            metrics = write_captured(folder, outcome, settings, truth)
    except OSError as exc:
        raise GradleakError(f"cannot write the run directory {out_dir}: {exc}") from exc
    finally:
        held = release_interrupts()
    return CapturedResult(outcome, metrics, out_dir, interrupted_while_writing=bool(held))


def _lr_for(update: SharedUpdate, lr: float | None) -> float | None:
    if lr is not None and update.kind is not UpdateKind.WEIGHT_DELTA:
        raise GradleakError(
            f"--local-lr with --protocol fedsgd reads a weight difference as a gradient, but "
            f"the update is {update.kind.noun}: drop --local-lr"
        )
    return lr


def _settings(
    config: RunConfig,
    files: CapturedFiles,
    update: SharedUpdate,
    attacked: SharedUpdate,
    lr: float | None,
    device: torch.device,
    facts: DataFacts,
) -> dict[str, Any]:
    """What was attacked and how, as metrics.json and config.yaml record it."""
    return {
        "attack": config.attack,
        "model": config.model,
        **({"model_args": dict(config.model_args)} if config.model_args else {}),
        "source": files.source,
        "update": str(files.update),
        "update_base": None if files.base is None else str(files.base),
        "update_sha256": file_digest(files.update, "update file"),
        "kind": update.kind.value,
        "attacked_as": attacked.kind.value,
        "protocol": config.protocol,
        "local_lr": lr if lr is not None else config.local_lr,
        "batch_size": config.batch_size,
        "dataset": config.dataset,
        "normalization": facts.name,
        "checkpoint": None if config.checkpoint is None else str(config.checkpoint),
        "seed": config.seed,
        "truth": None if files.truth is None else str(files.truth),
        "device": str(device),
    }


# --- the model and the data's format ----------------------------------------------------------


def attacked_model(config: RunConfig) -> tuple[nn.Module, DataFacts]:
    """The server's model, built and seeded as a simulated run builds it (no weights loaded
    yet), and the data's format the attacker is told.

    Args:
        config: the run's settings: the model (a registry name or MODULE:FACTORY with its
            arguments), the dataset whose format the clients' data has (--image-size,
            --num-classes, --normalize), the seed.

    Returns:
        The model on the CPU and the data's shape, classes and normalisation.

    Raises:
        GradleakError: a model that cannot be built for the data; the user's own images
            (folder, list, tensors) without --num-classes for a registry model; --normalize
            auto, which needs the clients' images.
    """
    if is_user_model(model_request(config)):
        fitted = fit_user_model(data_request(config), model_request(config))
        model, shape = fitted.model, fitted.shape
        channels, size, classes = shape.channels, shape.image_size, shape.num_classes
    else:
        channels, size = input_shape(config.dataset, config.image_size)
        classes = _classes(config)
        model = build_model(
            config.model,
            num_classes=classes,
            in_channels=channels,
            image_size=size,
            seed=config.seed,
            model_args=config.model_args,
        )
    stats = dataset_stats(config.dataset, channels)
    default = Normalization(stats.name, stats.mean, stats.std)
    chosen = normalization(config.normalize, default, channels, _no_images)
    facts = DataFacts((channels, *size), classes, chosen.mean, chosen.std, chosen.name)
    return model, facts


def _classes(config: RunConfig) -> int:
    if config.num_classes is not None:
        return config.num_classes
    if config.dataset in FILE_DATASETS:
        raise GradleakError(
            f"--dataset {config.dataset}: the classes of your own images are not known without "
            "them; give --num-classes (the width of the model's output)"
        )
    return dataset_stats(config.dataset).num_classes


def _no_images() -> tuple[tuple[float, ...], tuple[float, ...]]:
    raise GradleakError(
        "--normalize auto computes statistics from the clients' images, which an update file "
        "does not hold; give a dataset's name or MEAN/STD"
    )


def resolve_batch_size(update: SharedUpdate, asked: int | None) -> int:
    """The samples behind the update: the file's `num_samples`, else the asked batch size
    (default 1).

    Raises:
        GradleakError: both are given and differ, or the file's is 0.
    """
    samples = update.num_samples
    if samples is None:
        return 1 if asked is None else asked
    if samples < 1:
        raise GradleakError(
            f"the update's metadata says num_samples {samples}; an update comes from at least "
            "one sample: fix the file's metadata"
        )
    if asked is not None and asked != samples:
        raise GradleakError(
            f"the update's metadata says num_samples {samples} but --batch-size is {asked}; "
            "drop --batch-size (the file knows its batch)"
        )
    return samples


def load_weights(model: nn.Module, config: RunConfig, base: Path | None) -> None:
    """Load the weights the client received into `model` (in place).

    `--checkpoint` when given; else the global state of a pair (`base`). With both, they
    must hold the same weights: the update was computed from one model.

    Raises:
        GradleakError: a checkpoint of another model; a base with entries the model does not
            have or of other shapes; a checkpoint and a base that differ.
    """
    if config.checkpoint is not None:
        check_checkpoint_model(config.checkpoint, config.model, config.model_args)
        load_checkpoint(model, config.checkpoint)
    if base is None:
        return
    state = read_state_file(base, "update base")
    expected = model.state_dict()
    extra = [name for name in state if name not in expected]
    if extra:
        raise GradleakError(
            f"the update base {base} holds {extra[0]!r}, which the model does not have; "
            "attack it with the model that produced it"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise GradleakError(
                f"the update base {base} holds {name!r} of shape {tuple(tensor.shape)} but the "
                f"model's is {tuple(expected[name].shape)}; attack it with the model that "
                "produced it"
            )
    if config.checkpoint is None:
        # Buffers the base lacks keep the model's own (a state of parameters only).
        model.load_state_dict(state, strict=False)
        return
    differ = [n for n, t in state.items() if not torch.equal(t.to(expected[n].dtype), expected[n])]
    if differ:
        raise GradleakError(
            f"--checkpoint {config.checkpoint} and --update-base {base} hold different "
            f"weights ({differ[0]!r} differs); the update is taken from the model the client "
            "received: pass it once, as --update-base"
        )


# --- the evaluation side ------------------------------------------------------------------


def load_truth(
    path: Path, facts: DataFacts, batch_size: int, device: torch.device | None = None
) -> PrivateBatch:
    """The private batch behind the update, from a truth file (evaluation side only).

    Args:
        path: a safetensors or torch file with `images` ([0, 1] pixels, B×C×H×W) and
            integer `labels` (B).
        facts: the data's format (shape, classes, normalisation).
        batch_size: the samples behind the update.
        device: where the batch goes (default: the CPU).

    Returns:
        The batch, its images normalised as the clients' are.

    Raises:
        GradleakError: an unreadable file, a missing entry, or images or labels that do not
            fit the update's batch and the data's format.
    """
    read = read_tensor_file(path, "truth file")
    images, labels = (_entry(read.tensors, key, path) for key in ("images", "labels"))
    want = (batch_size, *facts.shape)
    problem = _truth_problem(images, labels, want, facts.num_classes)
    if problem is not None:
        raise GradleakError(f"truth file {path}: {problem}")
    pixels = normalize(images.float(), facts.mean, facts.std)
    return PrivateBatch(pixels.to(device), labels.long().to(device))


def _entry(tensors: Mapping[str, object], key: str, path: Path) -> torch.Tensor:
    value = tensors.get(key)
    if not isinstance(value, torch.Tensor):
        got = "nothing" if value is None else f"a {type(value).__name__}"
        raise GradleakError(
            f"truth file {path} holds {got} under {key!r}; save images ([0, 1] pixels, "
            "B×C×H×W) and labels (B integers)"
        )
    return value


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _truth_problem(
    images: torch.Tensor, labels: torch.Tensor, want: tuple[int, ...], classes: int
) -> str | None:
    """What is wrong with the truth's images and labels, or None."""
    if not images.is_floating_point():
        return f"images are {images.dtype}; save [0, 1] floats"
    if tuple(images.shape) != want:
        return f"images have shape {tuple(images.shape)} but the update's batch needs {want}"
    if not bool(torch.isfinite(images).all()) or not bool(((images >= 0) & (images <= 1)).all()):
        return "images must be pixels in [0, 1]"
    if labels.dtype not in _INTEGER_DTYPES:
        return f"labels are {labels.dtype}; save integer labels"
    if tuple(labels.shape) != (want[0],):
        return f"labels have shape {tuple(labels.shape)}; give one label per image ({want[0]})"
    if not bool(((labels >= 0) & (labels < classes)).all()):
        return f"labels must be in 0..{classes - 1}"
    return None
