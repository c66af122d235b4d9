"""Train a learned inverter: updates of auxiliary images → the images, for one server model.

The attacker holds the server's model and knows the protocol, so it can compute the update
any batch of its own (auxiliary) images would produce. `train_inverter` does exactly that
with the protocol's own client code (`fl.rounds.simulate`, as a run does), sketches each
update (`UpdateSketch`) and trains an `InverterNet` with Adam to map sketches back to the
images (mean squared error in the normalised space; for batches of several images the
outputs are first matched one-to-one to the targets, since an update does not order its
batch).

Producing updates is the costly part (one forward and backward pass of the server model
per update), so a fixed pool of `updates` pairs is generated once and reused every epoch;
random flips and padded crops make many distinct updates out of a few hundred images. A
pool of 4,000 pairs takes a few megabytes per thousand sketch buckets plus the images.

The inverter file is written after every epoch (atomically), so Ctrl-C or SIGTERM keeps the
last completed epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from gradleak import __version__
from gradleak.attacks.priors.inverter import (
    DEFAULT_DROPOUT,
    DEFAULT_HIDDEN,
    DEFAULT_SKETCH_DIM,
    InverterNet,
    LearnedInverter,
    UpdateSketch,
    architecture_digest,
    describe_protocol,
    flatten_update,
    load_inverter,
    save_inverter,
    store_images,
)
from gradleak.core.batch import PrivateBatch
from gradleak.core.device import CPU, module_device
from gradleak.core.errors import GradleakError
from gradleak.core.files import check_out_file
from gradleak.core.settings import require_counts, require_seed
from gradleak.core.signals import hold_interrupts, release_interrupts
from gradleak.data import input_shape, normalize, open_images
from gradleak.data.loading import FILE_DATASETS, LoadedImages, dataset_stats
from gradleak.fl.protocols import ProtocolSettings, get_protocol, local_training_for
from gradleak.fl.rounds import simulate
from gradleak.models import (
    build_model,
    canonical_model_name,
    check_checkpoint_model,
    load_checkpoint,
)
from gradleak.models.checkpoint import model_fingerprint
from gradleak.models.user import check_labels_fit, is_factory_spec, output_classes
from gradleak.scenario.config import DATASET_CHOICES, MODEL_MODES, SPLITS
from gradleak.scenario.user_model import checked_image_size
from gradleak.training.auxiliary import auxiliary_range

# The protocols an inverter can be trained for: their update is a function of the batch
# alone (FedADMM's depends on the client's state as well).
INVERTER_PROTOCOLS = ("fedsgd", "fedavg")
# Images 0-99 are where attacks are evaluated: the auxiliary images start after them.
INVERTER_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class InverterTrainConfig:
    """One inverter training: the server model, the auxiliary images, the protocol, Adam.

    Attributes:
        model: the server model's name (as `gradleak attack --model` takes it).
        dataset: where the auxiliary images come from (cifar10, cifar100, mnist, folder).
        data_root: the dataset's folder.
        checkpoint: the server model's state (None: the untrained model of `seed`).
        split: the dataset's split.
        range: auxiliary images A..B of the split, both included (None: 100..599, or up to
            the split's last image).
        image_size: side of folder images (default 32).
        batch_size: the client's batch size B: each update is of B images.
        protocol: fedsgd or fedavg.
        local_steps, local_epochs, local_batch_size, local_lr: FedAvg's local training
            (as `gradleak attack` takes them).
        model_mode: the client's batch-norm mode.
        victim_dataset: the dataset the server model is built for, whose classes and
            normalisation it uses (None: the auxiliary `dataset`). Auxiliary images from
            elsewhere (faces for a CIFAR-10 model) are normalised as the victim's and given
            label (their class mod the victim's classes), as a client would label them.
        sketch_dim: buckets of the update's count sketch.
        hidden: width of the inverter's hidden layers.
        dropout: the inverter's input dropout while training.
        augment: random flips and padded crops of the auxiliary images.
        updates: training pairs (updates of auxiliary batches) generated once and reused
            every epoch.
        epochs: passes over the pairs.
        lr: Adam's step size.
        train_batch: pairs per Adam step.
        seed: the server model's init (without a checkpoint), the sketch, the batches and
            their augmentation, and the inverter's init.
    """

    model: str
    dataset: str = "cifar10"
    data_root: Path | None = None
    checkpoint: Path | None = None
    split: str = "test"
    range: tuple[int, int] | None = None
    image_size: int | None = None
    batch_size: int = 1
    protocol: str = "fedsgd"
    local_steps: int | None = None
    local_epochs: int | None = None
    local_batch_size: int | None = None
    local_lr: float | None = None
    model_mode: str = "train"
    victim_dataset: str | None = None
    sketch_dim: int = DEFAULT_SKETCH_DIM
    hidden: int = DEFAULT_HIDDEN
    dropout: float = DEFAULT_DROPOUT
    augment: bool = True
    updates: int = 3000
    epochs: int = 20
    lr: float = 1e-3
    train_batch: int = 64
    seed: int = 0
    # Keyword arguments of a model factory (model = MODULE:FACTORY or FILE.py:FACTORY).
    model_args: dict[str, Any] = field(default_factory=dict)

    def validate(self, dataset_size: int | None = None) -> InverterTrainConfig:
        """Check every setting; with `dataset_size`, also the range against the split.

        Returns:
            This config.

        Raises:
            GradleakError: the first setting out of range, in one line naming the fix.
        """
        victims = [d for d in DATASET_CHOICES if d not in FILE_DATASETS]
        if self.victim_dataset is not None and self.victim_dataset not in victims:
            raise GradleakError(
                f"--victim-dataset {self.victim_dataset!r} is not one of: {', '.join(victims)}"
            )
        if self.dataset not in DATASET_CHOICES:
            raise GradleakError(
                f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASET_CHOICES)}"
            )
        if self.data_root is None:
            raise GradleakError(
                "an inverter learns from auxiliary images on disk: pass --data-root DIR "
                "(e.g. the folder holding cifar-10-batches-py/)"
            )
        if self.split not in SPLITS:
            raise GradleakError(f"unknown split {self.split!r}; choose one of: {', '.join(SPLITS)}")
        if self.protocol not in INVERTER_PROTOCOLS:
            get_protocol(self.protocol)  # an unknown name: the protocols' own message
            raise GradleakError(
                f"an inverter learns updates that depend on the batch alone; --protocol "
                f"{self.protocol} is not supported, use one of: {', '.join(INVERTER_PROTOCOLS)}"
            )
        if self.model_mode not in MODEL_MODES:
            raise GradleakError(
                f"model_mode {self.model_mode!r} is not one of: {', '.join(MODEL_MODES)}"
            )
        require_counts(
            self, ("batch_size", "sketch_dim", "hidden", "updates", "epochs", "train_batch")
        )
        require_seed(self.seed)
        if not 0 <= self.dropout < 1:
            raise GradleakError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise GradleakError(f"lr must be a positive number, got {self.lr}")
        if self.image_size is not None and self.dataset not in FILE_DATASETS:
            raise GradleakError(
                f"{self.dataset} images are not resized; drop --image-size or use --dataset "
                "folder, list or tensors"
            )
        self.protocol_settings()  # local training that cannot run is refused here
        if self.range is not None:
            first, last = self.range
            if not 0 <= first <= last:
                raise GradleakError(
                    f"range {first}-{last} is not A-B with 0 <= A <= B; e.g. 100-599"
                )
        if dataset_size is not None:
            first, last = self.image_range(dataset_size)
            if self.batch_size > last - first + 1:
                raise GradleakError(
                    f"batch size {self.batch_size} is larger than the {last - first + 1} "
                    f"auxiliary images ({first}-{last}); use a wider --range"
                )
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

    def input_shape(self) -> tuple[int, tuple[int, int]]:
        """Channels and (height, width) of the images."""
        return input_shape(self.dataset, self.image_size)

    def image_range(self, dataset_size: int) -> tuple[int, int]:
        """The auxiliary images' indices (first, last), checked against the split's size.

        Raises:
            GradleakError: as `auxiliary_range`.
        """
        where = f"the {self.dataset} {self.split} split"
        return auxiliary_range(self.dataset, dataset_size, self.range, where)

    def protocol_settings(self) -> ProtocolSettings:
        """The clients' protocol, built as a run builds it (one user, round 1)."""
        local = local_training_for(
            self.protocol,
            steps=self.local_steps,
            epochs=self.local_epochs,
            batch_size=self.local_batch_size,
            lr=self.local_lr,
            client_batch=self.batch_size,
        )
        if local is None and any(
            v is not None
            for v in (self.local_steps, self.local_epochs, self.local_batch_size, self.local_lr)
        ):
            raise GradleakError(
                f"local training settings describe fedavg, which {self.protocol} does not do; "
                "use --protocol fedavg"
            )
        return ProtocolSettings(self.protocol, local, model_mode=self.model_mode)


@dataclass
class InverterTrainResult:
    """What a training produced: the inverter (None if no epoch completed) and its history.

    Attributes:
        inverter: the inverter after the last completed epoch, saved at `path`.
        path: the inverter file.
        losses: the mean training loss of each completed epoch (normalised-space MSE).
        first_loss: the mean loss of the untrained inverter over the pairs.
        updates: how many training pairs were generated.
        generation_seconds: time spent producing the updates.
        seconds: the whole training's time.
        interrupted: Ctrl-C or SIGTERM ended it early.
    """

    inverter: LearnedInverter | None
    path: Path
    losses: list[float] = field(default_factory=list)
    first_loss: float | None = None
    updates: int = 0
    generation_seconds: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False


@dataclass
class _Pairs:
    sketches: torch.Tensor  # S×F
    targets: torch.Tensor  # S×B×C×H×W, normalised


def train_inverter(
    config: InverterTrainConfig,
    out: Path | str,
    progress: bool = True,
    overwrite: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    device: torch.device = CPU,
) -> InverterTrainResult:
    """Train an inverter for `config`'s server model and protocol; save it after every epoch.

    Ctrl-C (or SIGTERM) ends the training: the last completed epoch stays at `out` and the
    result says `interrupted` (while the updates are still being generated, nothing is
    written).

    Args:
        config: the settings; checked before anything is read or written.
        out: the inverter file (.pt or .pth).
        progress: show progress bars (on a terminal only).
        overwrite: replace an existing file at `out`; without it one is refused before any
            work.
        on_epoch: called with (epoch, mean loss) after each epoch is saved.
        device: where the server's model computes the updates and the inverter trains:
            both are built and seeded on the CPU and moved once; batches, augmentations
            and orders are drawn on the CPU (the same on any device), the sketches are
            computed on the CPU, and dropout draws from the device's own generator.

    Returns:
        The inverter, its per-epoch losses, and the time the updates and the training took.

    Raises:
        GradleakError: a bad setting, an unusable `out`, missing data, a range outside the
            split, or a checkpoint of another model (before any work).
    """
    start = time.perf_counter()
    config = config.validate()
    out = _check_out(Path(out), overwrite)
    images = open_images(config.dataset, config.data_root, config.split, config.image_size)
    first, last = config.validate(len(images)).image_range(len(images))
    pixels, labels = images.pixels(range(first, last + 1))
    victim = _victim(config, images)
    labels = labels % victim.num_classes
    server = _server_model(config, images, victim)
    inverter = _new_inverter(config, images, victim, server, pixels, (first, last))
    server.to(device)
    result = InverterTrainResult(None, out)
    try:
        generation = time.perf_counter()
        pairs = _generate(config, server, victim, pixels, labels, inverter, progress)
        result.generation_seconds = time.perf_counter() - generation
        result.updates = pairs.sketches.shape[0]
        inverter.net.to(device)
        pairs = _Pairs(pairs.sketches.to(device), pairs.targets.to(device))
        # Dropout draws from the global generator of the net's device: a forked, seeded one
        # makes the training repeatable and leaves the caller's random state alone.
        with torch.random.fork_rng(**_forked(device)):
            torch.manual_seed(config.seed + 2)
            _train(config, inverter, pairs, out, result, progress, on_epoch)
    except KeyboardInterrupt:
        result.interrupted = True
        if result.losses:
            # The net in memory may be halfway through an epoch: the file holds the last
            # completed one.
            result.inverter = load_inverter(out)
    result.seconds = time.perf_counter() - start
    return result


def _forked(device: torch.device) -> dict[str, object]:
    """`torch.random.fork_rng`'s arguments that fork the CPU's generator and `device`'s."""
    if device.type == "cpu":
        return {"devices": []}
    # None: every device of the kind (MPS has one, and no index).
    return {"devices": None if device.index is None else [device.index], "device_type": device.type}


def _check_out(out: Path, overwrite: bool) -> Path:
    return check_out_file(out, "inverter", INVERTER_SUFFIXES, existing=(out,), overwrite=overwrite)


@dataclass(frozen=True)
class _Victim:
    """What the server model is built for: its classes and its input normalisation."""

    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _victim(config: InverterTrainConfig, images: LoadedImages) -> _Victim:
    """The victim's setting: the auxiliary dataset's own, or `victim_dataset`'s (checked)."""
    if config.victim_dataset is None:
        stats = images.stats
        return _Victim(images.num_classes, tuple(stats.mean), tuple(stats.std))
    spec = dataset_stats(config.victim_dataset)
    shape = (images.channels, *images.size)
    if (spec.channels, *spec.image_size) != shape:
        raise GradleakError(
            f"--victim-dataset {config.victim_dataset} takes {spec.channels}×"
            f"{spec.image_size[0]}×{spec.image_size[1]} images, but the auxiliary images are "
            f"{'×'.join(map(str, shape))}; use --image-size {spec.image_size[0]} with a folder"
        )
    return _Victim(spec.num_classes, tuple(spec.mean), tuple(spec.std))


def _server_model(config: InverterTrainConfig, images: LoadedImages, victim: _Victim) -> nn.Module:
    """The server's model exactly as a run builds it (`scenario.case.case_from`)."""
    model = build_model(
        config.model,
        num_classes=victim.num_classes,
        in_channels=images.channels,
        image_size=images.size,
        seed=config.seed,
        model_args=config.model_args,
    )
    if is_factory_spec(config.model):
        # A factory decides its classes: every label an update is made with must be one.
        name = config.model.strip()
        classes = output_classes(model, images.channels, images.size, name=name)
        check_labels_fit(torch.arange(victim.num_classes), classes, name=name)
    if config.checkpoint is not None:
        check_checkpoint_model(config.checkpoint, config.model, config.model_args)
        load_checkpoint(model, config.checkpoint)
    return model


def _new_inverter(
    config: InverterTrainConfig,
    images: LoadedImages,
    victim: _Victim,
    server: nn.Module,
    pixels: torch.Tensor,
    bounds: tuple[int, int],
) -> LearnedInverter:
    """An untrained inverter carrying everything it is trained for."""
    settings = config.protocol_settings()
    shape = (images.channels, *images.size)
    sketch = UpdateSketch(config.sketch_dim, config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = InverterNet(
            sketch.features, config.batch_size, shape, hidden=config.hidden, dropout=config.dropout
        )
    return LearnedInverter(
        net=net,
        sketch=sketch,
        parameter_names=tuple(name for name, _ in server.named_parameters()),
        model=canonical_model_name(config.model),
        fingerprint=model_fingerprint(server),
        architecture=architecture_digest(server),
        protocol=describe_protocol(
            settings.protocol.shares, settings.local, settings.users, settings.model_mode
        ),
        batch_size=config.batch_size,
        data_shape=shape,
        mean=victim.mean,
        std=victim.std,
        dataset=f"{images.description}, images {bounds[0]}-{bounds[1]}",
        auxiliary={
            "dataset": config.dataset,
            "split": config.split,
            "range": list(bounds),
            "image_size": list(images.size),
            "checkpoint": None if config.checkpoint is None else str(config.checkpoint),
            "seed": config.seed,
        },
        training_images=store_images(pixels),
        training={
            "updates": config.updates,
            "augment": config.augment,
            "lr": config.lr,
            "train_batch": config.train_batch,
            "hidden": config.hidden,
            "dropout": config.dropout,
            "epochs_planned": config.epochs,
            "losses": [],
            "gradleak_version": __version__,
        },
    )


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and crops after reflect-padding by 1/8 of the side.

    Args:
        pixels: B×C×H×W images.
        generator: the random source.

    Returns:
        B×C×H×W augmented images (the same values, moved: no interpolation).
    """
    out = []
    height, width = pixels.shape[-2:]
    pad = max(1, min(height, width) // 8)
    for image in pixels:
        if bool(torch.rand((), generator=generator, device=generator.device) < 0.5):
            image = image.flip(-1)
        if min(height, width) > pad:
            padded = F.pad(image.unsqueeze(0), (pad, pad, pad, pad), mode="reflect")[0]
            shift = torch.randint(2 * pad + 1, (2,), generator=generator, device=generator.device)
            top, left = (int(v) for v in shift)
            image = padded[:, top : top + height, left : left + width]
        out.append(image)
    return torch.stack(out)


def _generate(
    config: InverterTrainConfig,
    server: nn.Module,
    victim: _Victim,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    inverter: LearnedInverter,
    progress: bool,
) -> _Pairs:
    """`config.updates` (sketch, images) pairs, each update computed by the protocol's client."""
    settings = config.protocol_settings()
    generator = torch.Generator().manual_seed(config.seed)
    device = module_device(server)  # the clients compute there; the rest is on the CPU
    count, b = pixels.shape[0], config.batch_size
    sketches = torch.empty(config.updates, inverter.sketch.features, device="cpu")
    targets = torch.empty(config.updates, b, *inverter.data_shape, device="cpu")
    order = torch.empty(0, dtype=torch.long, device="cpu")
    bar = tqdm(
        total=config.updates,
        desc="updates",
        unit="update",
        mininterval=0.5,
        disable=None if progress else True,
        leave=False,
    )
    try:
        for u in range(config.updates):
            # Each update takes the next B images of a shuffled pass over the images, so
            # every image is used equally often and a batch never repeats an image.
            if order.numel() < b:
                order = torch.randperm(count, generator=generator, device="cpu")
            chosen, order = order[:b], order[b:]
            batch01 = pixels[chosen]
            if config.augment:
                batch01 = augment(batch01, generator)
            batch = normalize(batch01, victim.mean, victim.std)
            private = PrivateBatch(batch.to(device), labels[chosen].to(device))
            update = simulate(server, private, settings).update
            sketches[u] = inverter.sketch(flatten_update(update.tensors, inverter.parameter_names))
            targets[u] = batch
            bar.update(1)
    finally:
        bar.close()
    return _Pairs(sketches, targets)


def matched_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error after matching each output image to one target image.

    An update does not order its batch, so for B > 1 the outputs of each pair are matched
    one-to-one to its targets by the assignment of least MSE (scipy's
    `linear_sum_assignment` on detached costs); the loss is the MSE of the matched images.

    Args:
        outputs: S×B×C×H×W predicted images.
        targets: S×B×C×H×W true images.

    Returns:
        The scalar loss (differentiable in `outputs`).
    """
    if outputs.shape[1] == 1:
        return F.mse_loss(outputs, targets)
    from scipy.optimize import linear_sum_assignment  # only batches need matching

    cost = (outputs.detach().unsqueeze(2) - targets.unsqueeze(1)).pow(2).flatten(3).mean(3)
    matched = []
    for s in range(outputs.shape[0]):
        rows, cols = linear_sum_assignment(cost[s].cpu().numpy())
        matched.append(targets[s, torch.from_numpy(cols[rows.argsort()]).to(targets.device)])
    return F.mse_loss(outputs, torch.stack(matched))


def _train(
    config: InverterTrainConfig,
    inverter: LearnedInverter,
    pairs: _Pairs,
    out: Path,
    result: InverterTrainResult,
    progress: bool,
    on_epoch: Callable[[int, float], None] | None,
) -> None:
    """Adam on the matched MSE; the inverter is saved after every epoch."""
    net = inverter.net
    net.set_input_statistics(pairs.sketches)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed + 1)
    count = pairs.sketches.shape[0]
    with torch.no_grad():
        net.eval()
        result.first_loss = float(matched_mse(net(pairs.sketches), pairs.targets))
    steps = math.ceil(count / config.train_batch)
    bar = tqdm(
        total=config.epochs * steps,
        desc="train",
        unit="step",
        mininterval=0.5,
        disable=None if progress else True,
        leave=False,
    )
    try:
        for epoch in range(1, config.epochs + 1):
            net.train()
            # Drawn on the CPU, moved once per epoch (not once per step).
            order = torch.randperm(count, generator=generator, device="cpu")
            order = order.to(pairs.sketches.device)
            total = 0.0
            for start in range(0, count, config.train_batch):
                chosen = order[start : start + config.train_batch]
                loss = matched_mse(net(pairs.sketches[chosen]), pairs.targets[chosen])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())  # the step's one read of the device
                total += value * chosen.numel()
                bar.set_postfix(
                    {"epoch": f"{epoch}/{config.epochs}", "loss": f"{value:.4f}"}, refresh=False
                )
                bar.update(1)
            epoch_loss = total / count
            if not math.isfinite(epoch_loss):
                raise GradleakError(
                    f"the inverter's training diverged in epoch {epoch} (loss {epoch_loss}); "
                    "train again with a lower --lr"
                )
            net.eval()
            # Saving and counting the epoch are one step: a signal meanwhile is recorded and
            # acted on once both are done, so the file and the result always agree.
            hold_interrupts()
            try:
                inverter.epochs = epoch
                inverter.training["losses"] = [*result.losses, epoch_loss]
                inverter.training["first_loss"] = result.first_loss
                save_inverter(inverter, out)
                result.losses.append(epoch_loss)
                result.inverter = inverter
            finally:
                held = release_interrupts()
            if held:
                raise KeyboardInterrupt
            if on_epoch is not None:
                on_epoch(epoch, epoch_loss)
    finally:
        bar.close()
        net.eval()
