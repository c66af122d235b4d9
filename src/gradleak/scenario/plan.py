"""A run's configuration resolved once into the typed parts each step needs.

`plan_run` checks the whole `RunConfig`, builds the attack and the defenses, and splits the
settings into what loading the data needs, what building the model needs, what the clients
do, what the threat model grants, and where and how the outputs go. The steps of a run
receive these parts, never the config: the config itself travels only to the record of the
run (`config.yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradleak import attacks
from gradleak.attacks.base import modifies_model
from gradleak.attacks.registry import check_readable
from gradleak.core.device import CPU, resolve_device
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Grants
from gradleak.defenses import Defense, parse_defenses
from gradleak.fl.protocols import ProtocolSettings
from gradleak.scenario.config import RunConfig
from gradleak.scenario.snapshots import default_snapshot_iterations


@dataclass(frozen=True)
class DataRequest:
    """Which private images the clients hold.

    Attributes:
        dataset: cifar10, cifar100, mnist, folder, list or tensors.
        data_root: where the dataset's files are (None with cifar10: the bundled images).
        split: test or train.
        indices: one index per image, users' shares one after another.
        image: a single image file to attack instead of a dataset.
        label: the label of `image`.
        num_classes: the classes of the model's output (None: the dataset's).
        image_size: the side of folder images and of `image` (None: the dataset's).
        users: how many users share the images (for messages about the data's size).
        modality: image or text.
        texts: text: the sentences themselves (empty: lines of `text_file`, by `indices`).
        text_file: text: a UTF-8 file of sentences, one per line (None: the bundled ones).
        task: text: the clients' task, classification or mlm.
        normalize: a --normalize spec replacing the dataset's statistics (None: keep them).
    """

    dataset: str
    data_root: Path | None
    split: str
    indices: tuple[int, ...]
    image: Path | None
    label: int | None
    num_classes: int | None
    image_size: int | None
    users: int
    modality: str = "image"
    texts: tuple[str, ...] = ()
    text_file: Path | None = None
    task: str = "classification"
    normalize: str | None = None
    # Channels the user's images are read with (1 grey, 3 RGB; None: RGB): a factory model's.
    channels: int | None = None

    @property
    def per_user(self) -> int:
        return len(self.indices) // self.users


@dataclass(frozen=True)
class ModelRequest:
    """The server's model: a registry name or a factory spec (`MODULE:FACTORY`), the state
    to load, the seed of its init and the factory's keyword arguments."""

    name: str
    checkpoint: Path | None
    seed: int
    model_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputPlan:
    """Where the run goes and what the evaluation side records while it runs.

    Attributes:
        out_dir: the run directory.
        snapshots: iterations at which a picture of the reconstruction is kept.
        progress: show a progress bar.
        stop_psnr: end the attack once the reconstruction reaches this PSNR (evaluation
            side: it reads the truth, so it measures time to quality).
    """

    out_dir: Path
    snapshots: tuple[int, ...]
    progress: bool
    stop_psnr: float | None


@dataclass(frozen=True)
class RunPlan:
    """One run, resolved: every part a step needs, and the config it came from."""

    config: RunConfig
    data: DataRequest
    model: ModelRequest
    protocol: ProtocolSettings
    grants: Grants
    attack: attacks.Attack
    defenses: tuple[Defense, ...]
    output: OutputPlan
    seed: int
    # Where the case's model and data go once built, and everything after them computes.
    device: torch.device = CPU


def plan_run(config: RunConfig) -> RunPlan:
    """Check `config` once and resolve it into the parts of a run.

    Args:
        config: the run's settings (defaults, file and flags already merged).

    Returns:
        The resolved run; nothing has been loaded, simulated or written yet.

    Raises:
        GradleakError: any setting that cannot run (one line naming it and the fix), among
            them an attack that cannot read the protocol's updates, or a malicious
            server's attack under an honest server's threat model.
    """
    config = config.validate()
    device = resolve_device(config.device)  # "auto" is resolved once, here
    attack = attacks.get(config.attack).with_options(config.attack_options)
    protocol = config.protocol_settings()
    check_readable(config.attack, attack.reads, protocol.protocol.shares)
    if modifies_model(attack) and not config.malicious_server:
        raise GradleakError(
            f"attack '{config.attack}' is mounted by a malicious server that alters the model "
            "it sends, but the threat model has an honest server; add --malicious-server "
            "(malicious_server: true in a config file or sweep spec)"
        )
    snapshots = config.snapshots or default_snapshot_iterations(attack.config.iterations)
    return RunPlan(
        config=config,
        data=data_request(config),
        model=model_request(config),
        protocol=protocol,
        grants=config.grants(),
        attack=attack,
        defenses=tuple(parse_defenses(config.defenses)),
        output=OutputPlan(
            out_dir=Path(config.out or config.default_out()),
            snapshots=tuple(snapshots),
            progress=config.progress,
            stop_psnr=config.stop_psnr,
        ),
        seed=config.seed,
        device=device,
    )


def model_request(config: RunConfig) -> ModelRequest:
    """The server's model of a (validated) run."""
    return ModelRequest(config.model, config.checkpoint, config.seed, dict(config.model_args))


def data_request(config: RunConfig) -> DataRequest:
    """Which private images a (validated) run's clients hold: one index per image."""
    return DataRequest(
        dataset=config.dataset,
        data_root=config.data_root,
        split=config.split,
        indices=tuple(config.batch_indices()),
        image=config.image,
        label=config.label,
        num_classes=config.num_classes,
        image_size=config.image_size,
        users=config.users,
        modality=config.modality,
        texts=config.texts,
        text_file=config.text_file,
        task=config.task,
        normalize=config.normalize,
    )
