"""The configuration of one attack run: the scenario, the threat model and the attack."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradleak import attacks
from gradleak.attacks.registry import ATTACKS, attack_label
from gradleak.core.device import AUTO as AUTO_DEVICE
from gradleak.core.device import check_device
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import GUESSABLE, Grants
from gradleak.core.settings import read_mapping, replace_checked, to_plain
from gradleak.core.update import UpdateKind
from gradleak.data.image import MAX_IMAGE_SIZE
from gradleak.data.loading import input_shape
from gradleak.data.statistics import check_normalize
from gradleak.defenses import parse_defenses
from gradleak.fl.protocols import (
    PROTOCOLS,
    REPLAY,
    ProtocolSettings,
    get_protocol,
    local_training_for,
)
from gradleak.models.user import (
    check_model_args,
    factory_source_digest,
    is_factory_spec,
    model_label,
)

DEFAULT_PROTOCOL = "fedsgd"
DATASET_CHOICES = ("cifar10", "cifar100", "mnist", "folder", "list", "tensors")
MODEL_MODES = ("train", "eval")
SPLITS = ("test", "train")
MAX_CLASSES = 100_000
# Upper bounds of counts that would exhaust memory or hang before any useful work: a run
# lists the index of every attacked image and every local step before it starts.
MAX_SAMPLES = 100_000  # images of all users together (batch size × users)
MAX_LOCAL_STEPS = 10_000  # local SGD steps of a client per round (steps, or epochs × batches)
MAX_ROUNDS = 10_000  # rounds simulated up to the attacked one


@dataclass(frozen=True)
class RunConfig:
    """One run. `attack_options` overrides the attack preset's hyper-parameters."""

    attack: str = "dlg"
    model: str = "lenet"
    # Keyword arguments of a model factory (model = MODULE:FACTORY or FILE.py:FACTORY).
    model_args: dict[str, Any] = field(default_factory=dict)
    dataset: str = "cifar10"
    data_root: Path | None = None  # None with cifar10: the bundled sample images
    split: str = "test"
    indices: tuple[int, ...] = (0,)
    image: Path | None = None
    label: int | None = None
    num_classes: int | None = None
    image_size: int | None = None  # for folder/list/tensors and --image; default: the dataset's
    # Normalisation statistics: auto, a dataset's name or MEAN/STD (None: the dataset's own,
    # the photo statistics for the user's images); gradleak.data.statistics.
    normalize: str | None = None
    batch_size: int = 1  # samples per user
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
    # Attacker side: the attack's wall-time budget in seconds (None: its configured
    # iterations). An Adam attack is timed on a few steps and given the iterations and
    # restarts that fit (`gradleak.scenario.time_budget`); a deadline ends any late run.
    budget: float | None = None
    protocol: str = DEFAULT_PROTOCOL
    # Client-side defenses, applied in order to the update (e.g. "prune:0.3").
    defenses: tuple[str, ...] = ()
    # Iterations at which the evaluation side keeps a picture of the reconstruction
    # (None: about six, spread over the run).
    snapshots: tuple[int, ...] | None = None
    # The protocol's local training (fedavg, fedadmm); steps default to 1.
    local_steps: int | None = None
    local_epochs: int | None = None
    local_batch_size: int | None = None  # None: all of a user's samples in every step
    local_lr: float | None = None  # None: DEFAULT_LOCAL_LR
    users: int = 1  # the server sees only the mean of this many users' updates
    admm_rho: float = 1.0
    rounds: int = 1  # fedavg/fedadmm: the attacked update is this round's
    share_buffers: bool = False  # clients send their batch-norm statistics along
    # Threat model: the attacker's guesses where it does not know the client's settings
    # (None: it knows them).
    guess_local_steps: int | None = None
    guess_local_epochs: int | None = None
    guess_local_batch_size: int | None = None
    guess_local_lr: float | None = None
    attacker_model_mode: str | None = None
    guess_admm_rho: float | None = None  # fedadmm: the attacker's guess of ρ
    # fedadmm: the attacker is told each client's x and π at the start of the attacked round.
    client_state_known: bool = False
    # The kind of data (image or text). Text: the sentences (--text, or --text-file's
    # lines picked by `indices`; neither: the bundled sentences), the client's task, and
    # whether the attacker is told each sequence's length.
    modality: str = "image"
    texts: tuple[str, ...] = ()
    text_file: Path | None = None
    task: str = "classification"
    lengths_known: bool = False
    # Threat model: a malicious server that may alter the model it sends (imprint needs it).
    malicious_server: bool = False
    # Where tensors compute (auto, cpu, cuda, cuda:N, mps): not a setting of the result,
    # which is the same on any device up to float rounding; a run records the one it used.
    device: str = AUTO_DEVICE

    def validate(self) -> RunConfig:
        _check_modality(self)
        check_device(self.device)  # an unavailable device fails before any work
        check_model_args(self.model, self.model_args)
        if self.dataset not in DATASET_CHOICES:
            raise GradleakError(
                f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASET_CHOICES)}"
            )
        if self.normalize is not None and self.modality != "text":
            # The spelling and channel count now, before any work; `auto` is computed later.
            check_normalize(self.normalize, input_shape(self.dataset)[0])
            if self.image is not None and self.normalize.strip().lower() == "auto":
                # One image's own statistics, handed to the attacker, would describe it.
                raise GradleakError(
                    "--normalize auto computes statistics from a dataset; with one --image they "
                    "would tell the attacker about that image: give MEAN/STD or a dataset's name"
                )
        if self.model_mode not in MODEL_MODES:
            raise GradleakError(
                f"model_mode {self.model_mode!r} is not one of: {', '.join(MODEL_MODES)}"
            )
        if not 0 <= self.seed < 2**63:
            raise GradleakError(f"seed must be in 0..2**63-1, got {self.seed}")
        protocol = get_protocol(self.protocol)
        if self.attacker_model_mode not in (None, *MODEL_MODES):
            raise GradleakError(
                f"attacker_model_mode {self.attacker_model_mode!r} is not one of: "
                f"{', '.join(MODEL_MODES)}"
            )
        local_keys = [k for k in _LOCAL_KEYS if getattr(self, k) is not None]
        if not protocol.trains_locally and local_keys:
            flag = "--" + local_keys[0].replace("_", "-")
            trainers = " or ".join(p.name for p in PROTOCOLS.values() if p.trains_locally)
            raise GradleakError(
                f"{flag} describes local training, which {self.protocol} does not do; "
                f"use --protocol {trainers}"
            )
        if self.batch_size < 1:
            raise GradleakError(f"batch size must be at least 1, got {self.batch_size}")
        _check_bounds(self)
        # The protocol's settings and the attacker's belief of them are checked here, before
        # any data is read.
        settings, grants = self.protocol_settings(), self.grants()
        settings.attacker_belief(grants, self.batch_size)
        if _reads(self.attack, settings.protocol.shares):
            # An attack that cannot read this protocol's updates is refused when the run is
            # planned, with that reason rather than one about its guesses.
            # The -admm attacks' choice of reading (checked with the attack's options).
            reading = self.attack_options.get("admm_reading", REPLAY)
            settings.check_reading(grants, self.attack, str(reading))
        if self.texts and len(self.texts) != self.total_samples:
            raise GradleakError(
                f"{len(self.texts)} --text given for {self.total_samples} samples; give one "
                f"--text per sample or use --batch-size {len(self.texts) // self.users or 1}"
            )
        if self.users > 1 and self.image is not None:
            raise GradleakError("--image attacks one image; --users needs --dataset images")
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
        if not self.indices:
            raise GradleakError("give at least one image index")
        if any(i < 0 for i in self.indices):
            raise GradleakError(f"image indices must be non-negative, got {list(self.indices)}")
        if len(self.indices) not in (1, self.total_samples):
            what = f"batch size {self.batch_size}"
            if self.users > 1:
                what = f"{self.total_samples} images ({self.users} users × {what})"
            raise GradleakError(
                f"{len(self.indices)} indices given for {what}; give one start index or "
                "exactly one index per image"
            )
        if self.image is not None and self.batch_size != 1:
            raise GradleakError("--image attacks one image; drop --batch-size or use --dataset")
        if self.num_classes is not None and self.num_classes < 2:
            raise GradleakError(f"--num-classes must be at least 2, got {self.num_classes}")
        if self.stop_psnr is not None and not (0 < self.stop_psnr < math.inf):
            raise GradleakError(
                f"--stop-psnr must be a positive number of dB, got {self.stop_psnr}"
            )
        return self

    @property
    def total_samples(self) -> int:
        """Images of all users together (user i holds the i-th run of batch_size)."""
        return self.batch_size * self.users

    def batch_indices(self) -> list[int]:
        if len(self.indices) == self.total_samples:
            return list(self.indices)
        return [self.indices[0] + i for i in range(self.total_samples)]

    def protocol_settings(self) -> ProtocolSettings:
        """What the simulated clients do."""
        local = local_training_for(
            self.protocol,
            steps=self.local_steps,
            epochs=self.local_epochs,
            batch_size=self.local_batch_size,
            lr=self.local_lr,
            client_batch=self.batch_size,
        )
        return ProtocolSettings(
            self.protocol,
            local,
            users=self.users,
            rho=self.admm_rho,
            rounds=self.rounds,
            model_mode=self.model_mode,
            share_buffers=self.share_buffers,
        )

    def grants(self) -> Grants:
        """What the threat model grants the attacker, and where it guesses."""
        guesses = {k: getattr(self, f"guess_local_{k}") for k in GUESSABLE}
        return Grants(
            labels_known=self.labels_known,
            local_guess={k: v for k, v in guesses.items() if v is not None},
            model_mode=self.attacker_model_mode,
            rho_guess=self.guess_admm_rho,
            client_state_known=self.client_state_known,
            lengths_known=self.lengths_known,
            server_modifies_model=self.malicious_server,
        )

    def result_settings(self) -> dict[str, Any]:
        """Every setting that can change the run's result, as plain values: all but where
        the run goes (`out`), whether a bar is shown (`progress`) and where tensors compute
        (`device`: the same numbers up to float rounding), with the attack's
        options resolved into its preset and the defenses in their canonical spelling.

        Raises:
            GradleakError: an unknown attack, bad attack options or a bad defense.
        """
        settings = to_plain(self)
        del settings["out"], settings["progress"], settings["device"]
        if not settings["model_args"]:
            # Absent rather than empty, so runs without a factory keep their digests.
            del settings["model_args"]
        if is_factory_spec(self.model):
            # A factory's code is part of the setting: a sweep re-runs the cells of an
            # edited model file instead of reusing their results.
            settings["model_source"] = factory_source_digest(self.model)
        if settings["normalize"] is None:
            # Likewise absent, so runs with their dataset's statistics keep their digests.
            del settings["normalize"]
        if not settings["malicious_server"]:
            # Likewise absent, so runs against an honest server keep their digests.
            del settings["malicious_server"]
        attack = attacks.get(self.attack).with_options(self.attack_options)
        settings["attack_options"] = to_plain(attack.config)
        settings["defenses"] = [d.spec for d in parse_defenses(self.defenses)]
        return settings

    def default_out(self) -> Path:
        """runs/NAME: a readable stem (attack, model, images, batch, users, protocol, seed)
        and a digest of every other setting that changes the result, so runs that differ
        in anything (defenses, attack options, protocol settings, guesses) never share a
        directory and the same settings always name the same one."""
        source = self.image.stem if self.image is not None else f"{self.dataset}-{self.indices[0]}"
        if self.modality == "text":
            source = f"text-{self.task}-{self.indices[0]}"
        protocol = "" if self.protocol == DEFAULT_PROTOCOL else f"-{self.protocol}"
        users = "" if self.users == 1 else f"-u{self.users}"
        # An attack's argument (learned:DIR/INV.pt) is a path: only its stem names the run.
        attack = attack_label(self.attack)
        # A factory spec (a path, a colon) is named by its file's stem and factory.
        model = model_label(self.model)
        name = f"{attack}-{model}-{source}-b{self.batch_size}{users}{protocol}"
        return Path("runs") / f"{name}-s{self.seed}-{settings_digest(self.result_settings())}"


_LOCAL_KEYS = tuple(f"local_{key}" for key in GUESSABLE)
MODALITY_CHOICES = ("image", "text")
TEXT_TASKS = ("classification", "mlm")
# The model and attack a run of each modality takes when neither is given.
MODALITY_DEFAULTS = {"image": {}, "text": {"model": "minilm", "attack": "span"}}


def _check_modality(config: RunConfig) -> None:
    """Refuse settings of one modality given to the other, and an image model asked for text
    (or the reverse), in one line each."""
    from gradleak.attacks.registry import attack_modalities
    from gradleak.models.text import TEXT_MODELS, is_text_model

    if config.modality not in MODALITY_CHOICES:
        raise GradleakError(
            f"unknown modality {config.modality!r}; choose one of: {', '.join(MODALITY_CHOICES)}"
        )
    text = config.modality == "text"
    if text and not is_text_model(config.model):
        raise GradleakError(
            f"model {config.model!r} takes images, but --modality text needs a text model: "
            f"{', '.join(TEXT_MODELS)}"
        )
    if not text and is_text_model(config.model):
        raise GradleakError(
            f"model {config.model!r} is a text model; add --modality text or pick an image model"
        )
    modalities = attack_modalities(config.attack)
    if modalities is not None and config.modality not in modalities:
        raise GradleakError(
            f"attack {config.attack!r} attacks {' or '.join(modalities)}, not "
            f"{config.modality}; pick one of: "
            + ", ".join(n for n in ATTACKS if config.modality in (attack_modalities(n) or ()))
        )
    if text:
        if config.task not in TEXT_TASKS:
            raise GradleakError(
                f"unknown text task {config.task!r}; choose one of: {', '.join(TEXT_TASKS)}"
            )
        if config.image is not None:
            raise GradleakError("--image gives an image; --modality text attacks sentences")
        if config.texts and config.text_file is not None:
            raise GradleakError("give sentences with --text or --text-file, not both")
        if config.labels_known and config.task == "mlm":
            raise GradleakError(
                "--labels-known with --task mlm would hand over the masked tokens themselves; "
                "drop it"
            )
        if config.stop_psnr is not None:
            raise GradleakError("--stop-psnr scores images; text runs have no PSNR")
        if config.texts and len(config.indices) > 1:
            raise GradleakError("--index picks lines of --text-file; --text gives the batch itself")
        if config.normalize is not None:
            raise GradleakError("--normalize sets image statistics; text has none, drop it")
        return
    for name, flag in (("texts", "--text"), ("text_file", "--text-file")):
        if getattr(config, name):
            raise GradleakError(f"{flag} gives sentences; add --modality text")
    if config.task != "classification":
        raise GradleakError("--task mlm is a text task; add --modality text")
    if config.lengths_known:
        raise GradleakError("--lengths-known grants text lengths; add --modality text")


def _check_bounds(config: RunConfig) -> None:
    """Refuse sizes and counts so large the run would run out of memory or hang first."""
    if config.total_samples > MAX_SAMPLES:
        raise GradleakError(
            f"{config.users} user(s) × batch size {config.batch_size} is {config.total_samples} "
            f"images; one run attacks at most {MAX_SAMPLES}"
        )
    if config.image_size is not None and not 4 <= config.image_size <= MAX_IMAGE_SIZE:
        bound = "at least 4" if config.image_size < 4 else f"at most {MAX_IMAGE_SIZE}"
        raise GradleakError(
            f"--image-size must be {bound}, got {config.image_size} (allowed: 4..{MAX_IMAGE_SIZE})"
        )
    if config.label is not None and not 0 <= config.label < MAX_CLASSES:
        raise GradleakError(f"--label must be in 0..{MAX_CLASSES - 1}, got {config.label}")
    if config.rounds > MAX_ROUNDS:
        raise GradleakError(f"--rounds must be in 1..{MAX_ROUNDS}, got {config.rounds}")
    if config.budget is not None and not (config.budget > 0 and math.isfinite(config.budget)):
        raise GradleakError(f"--budget must be a positive number of seconds, got {config.budget}")
    true = (config.local_steps, config.local_epochs, config.local_batch_size)
    guess = (config.guess_local_steps, config.guess_local_epochs, config.guess_local_batch_size)
    # The attacker's belief: its guesses where it makes them, the truth elsewhere.
    length = guess[:2] if guess[0] is not None or guess[1] is not None else true[:2]
    belief = (*length, guess[2] or true[2])
    for (steps, epochs, size), whose in ((true, "the clients'"), (belief, "the attacker's")):
        # An epoch takes one step per mini-batch of the client's samples.
        per_epoch = math.ceil(config.batch_size / max(1, size or config.batch_size))
        total = steps if steps is not None else (epochs or 0) * per_epoch
        if total > MAX_LOCAL_STEPS:
            raise GradleakError(
                f"{whose} local training takes {total} steps a round; at most "
                f"{MAX_LOCAL_STEPS} are simulated and replayed: give fewer local steps or "
                "epochs, or a larger local batch size"
            )


DIGEST_CHARS = 8  # of a SHA-256: a clash among one user's runs is out of reach


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short, stable digest of plain settings (the same settings give the same digest,
    whatever the order of their keys), for names of run directories."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def _reads(attack: str, kind: UpdateKind) -> bool:
    """Whether the registered attack `attack` reads updates of `kind` (False if unknown)."""
    return attack in ATTACKS and kind in attacks.get(attack).reads


def load_run_config(path: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """A run's settings: the defaults, then the config file, then explicit overrides.

    Args:
        path: a YAML or JSON file holding any `RunConfig` keys (attack hyper-parameters under
            `attack_options`), or None.
        overrides: settings that win over the file (e.g. command-line flags); their
            `attack_options` are merged key by key into the file's.

    Returns:
        The validated configuration.

    Raises:
        GradleakError: an unreadable file, an unknown key, a wrong type or an impossible
            setting, in one line naming it.
    """
    config = RunConfig()
    from_file = read_mapping(path) if path is not None else {}
    if path is not None:
        config = replace_checked(config, from_file, f"config file {path}")
    options = dict(config.attack_options)
    given = overrides.pop("attack_options", {})
    if not isinstance(given, Mapping):
        raise GradleakError(
            f"arguments: attack_options must be a mapping of keys to values, not {given!r}"
        )
    options.update(given)
    if isinstance(overrides.get("model_args"), Mapping):
        # --model-arg flags add to (and win over) the file's model_args, key by key.
        overrides["model_args"] = {**config.model_args, **overrides["model_args"]}
    config = replace_checked(config, {**overrides, "attack_options": options}, "arguments")
    # A modality's own model and attack where neither the file nor the flags name one.
    named = {**from_file, **overrides}
    defaults = MODALITY_DEFAULTS.get(config.modality, {})
    defaults = {k: v for k, v in defaults.items() if k not in named}
    if config.texts and "batch_size" not in named:
        # --text gives the batch: its size is the number of sentences (per user).
        defaults["batch_size"] = max(1, len(config.texts) // max(1, config.users))
    if defaults:
        config = replace_checked(config, defaults, "defaults")
    return config.validate()
