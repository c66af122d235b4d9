"""A learned inverter: a network mapping a shared update to the client's images.

In the style of "Learning to Invert" (Wu et al. 2023): for one fixed server model and
protocol, the attacker computes the updates of auxiliary images exactly as a client would,
projects each update to a few thousand numbers with a fixed count sketch, and trains a
decoder from the sketch back to the images. The attack is then one forward pass.

An inverter is only meaningful for the setting it was trained in: the server model's state
(its fingerprint), the client's batch size, the image shape and normalisation, and the
protocol (what kind of update, local training, users, batch-norm mode). `check_fits`
refuses any other setting in one line, naming what the inverter was trained for.

The file holds only tensors and plain values (`save_inverter`), and `load_inverter` reads
it with `weights_only=True`, so a file from elsewhere never runs code.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak.attacks.priors.nearest import nearest_stored_images
from gradleak.core.device import module_device
from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.local_training import LocalTraining
from gradleak.fl.protocols import protocol_sharing
from gradleak.models.checkpoint import model_fingerprint

FORMAT = "gradleak.LearnedInverter/1"
DEFAULT_SKETCH_DIM = 4096
DEFAULT_HIDDEN = 256
# Dropout on the sketch while training: a few hundred auxiliary images are easily memorised.
DEFAULT_DROPOUT = 0.5
# At most this many of the auxiliary training images are stored in the file (as uint8), for
# checking whether a reconstruction is a memorised training image.
MAX_STORED_IMAGES = 2000
# The log-norm feature of a zero update: the log of float32's smallest normal number.
_TINY = torch.finfo(torch.float32).tiny


# --- the sketch -------------------------------------------------------------------------------


class UpdateSketch:
    """A fixed count-sketch projection of an update to `dim` numbers, plus its log-norm.

    Every coordinate of the flattened update (the model's parameters in order) is added,
    with a random sign, into one of `dim` buckets; bucket and sign are drawn from a
    generator seeded with (`seed`, the total parameter count), so the projection is the
    same on every machine without storing a matrix. The sketch is divided by the update's
    L2 norm (so it is linear up to the norm: 2·u and u give the same first `dim` values),
    and log(norm) is appended as one more feature: `dim + 1` values in all.

    Args:
        dim: the number of buckets, at least 1.
        seed: seeds the buckets and signs, an integer >= 0.

    Raises:
        GradleakError: `dim` or `seed` out of range.
    """

    def __init__(self, dim: int = DEFAULT_SKETCH_DIM, seed: int = 0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise GradleakError(f"sketch dim must be an integer of at least 1, got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise GradleakError(f"sketch seed must be an integer >= 0, got {seed!r}")
        self.dim = dim
        self.seed = seed
        self._hashes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def features(self) -> int:
        """How many numbers a sketch has: `dim` buckets and the log-norm."""
        return self.dim + 1

    def hashes(self, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Bucket (int64) and sign (±1 float32) of each of `total` coordinates (cached)."""
        if total not in self._hashes:
            key = hashlib.sha256(f"{self.seed}:{total}".encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)
            # The sketch is computed on the CPU (`__call__`), so its hashes live there.
            buckets = torch.randint(self.dim, (total,), generator=generator, device="cpu")
            signs = torch.randint(2, (total,), generator=generator, device="cpu")
            signs = signs.float() * 2 - 1
            self._hashes[total] = (buckets, signs)
        return self._hashes[total]

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        """The sketch of flattened updates.

        Args:
            flat: one update flattened (N,) or a stack of them (S×N), any real dtype.

        Returns:
            float32 (dim + 1,) or S×(dim + 1): the normalised buckets, then log(norm).
        """
        single = flat.dim() == 1
        rows = flat.detach().reshape(1 if single else flat.shape[0], -1).float().cpu()
        buckets, signs = self.hashes(rows.shape[1])
        sketch = torch.zeros(rows.shape[0], self.dim, device="cpu")
        sketch = sketch.index_add_(1, buckets, rows * signs)
        # The norm in float64: a float16 update's squares can overflow float32's range.
        norm = torch.linalg.vector_norm(rows.double(), dim=1).clamp_min(_TINY)
        out = torch.cat([sketch / norm.float().unsqueeze(1), norm.log().float().unsqueeze(1)], 1)
        return out[0] if single else out

    def sketch_update(
        self, tensors: Mapping[str, torch.Tensor], names: Sequence[str]
    ) -> torch.Tensor:
        """The sketch of a named update, its tensors flattened in the order of `names`."""
        return self(flatten_update(tensors, names))


def flatten_update(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The update's tensors, flattened and concatenated in the order of `names` (float32)."""
    return torch.cat([tensors[name].detach().reshape(-1).float().cpu() for name in names])


# --- the network ------------------------------------------------------------------------------


class InverterNet(nn.Module):
    """An MLP decoder from a sketch to a batch of images in the normalised space.

    The input is standardised with per-feature statistics of the training sketches (kept
    as buffers, so they travel with the weights), dropped out with probability `dropout`
    while training, then two hidden layers of `hidden` units with LeakyReLU lead to
    B×C×H×W outputs.

    Args:
        in_features: the sketch's length (`UpdateSketch.features`).
        batch_size: B, the client's batch size.
        data_shape: one image's (C, H, W).
        hidden: the width of the hidden layers.
        dropout: the probability of dropping each input feature while training, in [0, 1).
    """

    def __init__(
        self,
        in_features: int,
        batch_size: int,
        data_shape: Sequence[int],
        hidden: int = DEFAULT_HIDDEN,
        dropout: float = DEFAULT_DROPOUT,
    ) -> None:
        super().__init__()
        for key, value in (
            ("in_features", in_features),
            ("batch_size", batch_size),
            ("hidden", hidden),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GradleakError(f"inverter {key} must be an integer >= 1, got {value!r}")
        self.in_features = in_features
        self.batch_size = batch_size
        self.data_shape = tuple(int(s) for s in data_shape)
        if not 0 <= dropout < 1:
            raise GradleakError(f"inverter dropout must lie in [0, 1), got {dropout!r}")
        self.hidden = hidden
        self.dropout = nn.Dropout(float(dropout))
        self.register_buffer("input_mean", torch.zeros(in_features))
        self.register_buffer("input_std", torch.ones(in_features))
        out = batch_size * math.prod(self.data_shape)
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, out),
        )

    def set_input_statistics(self, sketches: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of these (training) sketches, S×F."""
        self.input_mean.copy_(sketches.mean(0))
        # A constant feature (e.g. empty buckets) is left unscaled rather than divided by 0.
        std = sketches.std(0) if sketches.shape[0] > 1 else torch.ones_like(self.input_std)
        self.input_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))

    def forward(self, sketches: torch.Tensor) -> torch.Tensor:
        """S×F sketches → S×B×C×H×W images (normalised space)."""
        x = self.dropout((sketches - self.input_mean) / self.input_std)
        return self.body(x).reshape(-1, self.batch_size, *self.data_shape)


# --- the protocol an inverter is trained for -------------------------------------------------


def describe_protocol(
    kind: UpdateKind,
    local: LocalTraining | None,
    users: int,
    model_mode: str,
) -> dict[str, object]:
    """What of the protocol changes the update, as plain values (the one description that
    training records and the attack compares).

    Args:
        kind: the kind of update the clients share.
        local: the clients' local training (FedAvg), or None.
        users: how many users' updates the server averages.
        model_mode: the clients' batch-norm mode.

    Returns:
        {"protocol", "update_kind", "local_training", "users", "model_mode"}.
    """
    return {
        "protocol": protocol_sharing(kind).name,
        "update_kind": kind.value,
        "local_training": None if local is None else local.describe(),
        "users": int(users),
        "model_mode": model_mode,
    }


def _protocol_words(protocol: Mapping[str, object]) -> str:
    """A protocol description in words, e.g. 'fedavg (local lr 0.01, steps 2), train mode'."""
    local = protocol.get("local_training")
    detail = ""
    if isinstance(local, Mapping):
        parts = [f"{k} {v}" for k, v in local.items() if v is not None]
        detail = f" (local {', '.join(parts)})"
    users = protocol.get("users", 1)
    users_text = f", {users} users" if users != 1 else ""
    return f"{protocol.get('protocol')}{detail}{users_text}, {protocol.get('model_mode')} mode"


def architecture_digest(model: nn.Module) -> str:
    """A digest of the parameters' names and shapes only: the architecture, not its state."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(f"{name}|{tuple(p.shape)};".encode())
    return digest.hexdigest()[:16]


# --- the inverter -----------------------------------------------------------------------------


@dataclass
class LearnedInverter:
    """A trained inverter and everything it was trained for.

    Attributes:
        net: the decoder (sketch → B×C×H×W normalised images).
        sketch: the fixed projection of updates.
        parameter_names: the server model's parameter names, in the order the sketch
            flattens an update.
        model: the server model's canonical name (e.g. "resnet20-1").
        fingerprint: `model_fingerprint` of the server model's state.
        architecture: `architecture_digest` of the server model (names and shapes).
        protocol: `describe_protocol` of the clients' protocol.
        batch_size: the client's batch size B.
        data_shape: one image's (C, H, W).
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        dataset: the auxiliary images in words, e.g. "cifar10 test split, images 100-599".
        auxiliary: where the auxiliary images came from, as plain values (dataset, split,
            range, image size, the server model's checkpoint and seed).
        training_images: up to 2,000 of the auxiliary images, uint8 N×C×H×W.
        epochs: the epochs of training behind the weights.
        training: the training's settings and final loss, plain values.
        path: the file it was loaded from or saved to (None: in memory only).
    """

    net: InverterNet
    sketch: UpdateSketch
    parameter_names: tuple[str, ...]
    model: str
    fingerprint: str
    architecture: str
    protocol: dict[str, object]
    batch_size: int
    data_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str = ""
    auxiliary: dict[str, object] = field(default_factory=dict)
    training_images: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.uint8))
    epochs: int = 0
    training: dict[str, object] = field(default_factory=dict)
    path: Path | None = None

    @property
    def update_kind(self) -> UpdateKind:
        """The kind of update the inverter reads."""
        return UpdateKind(str(self.protocol["update_kind"]))

    def describe(self) -> str:
        """What the inverter was trained for, in a line."""
        return (
            f"{self.model} (fingerprint {self.fingerprint}), batch size {self.batch_size}, "
            f"images {'×'.join(map(str, self.data_shape))}, {_protocol_words(self.protocol)}"
        )

    def train_hint(self) -> str:
        """The command that trains an inverter, for messages."""
        return (
            "train one for this setting with: gradleak train-inverter --model MODEL "
            "[--checkpoint CKPT] --dataset DATASET --data-root DIR --batch-size B "
            "[--protocol P] --out INV.pt"
        )

    def check_fits(
        self, model: nn.Module, knowledge: Knowledge, update: SharedUpdate, where: str
    ) -> None:
        """Refuse, in one line, a setting other than the one the inverter was trained for.

        Args:
            model: the server's model the update was computed at.
            knowledge: what the threat model grants (batch size, data shape and
                normalisation, users, local training, batch-norm mode).
            update: the shared update (its kind).
            where: who asks, for the message (e.g. "attack 'learned:inv.pt'").

        Raises:
            GradleakError: the server model's state (fingerprint) or architecture, the batch
                size, the image shape or normalisation, the update's kind or the protocol
                differ from the inverter's; the message names both and how to train one.
        """
        trained = f"{where}: the inverter {self._name()} was trained for {self.describe()}"
        hint = self.train_hint()
        if model_fingerprint(model) != self.fingerprint:
            if architecture_digest(model) != self.architecture:
                got = f"the server model is another architecture ({type(model).__name__})"
            else:
                got = "the server model has another state (another --checkpoint, --seed or round)"
            raise GradleakError(f"{trained}, but {got}; {hint}")
        if knowledge.batch_size != self.batch_size:
            raise GradleakError(f"{trained}, but the batch size is {knowledge.batch_size}; {hint}")
        if tuple(knowledge.data_shape) != tuple(self.data_shape):
            shape = "×".join(map(str, knowledge.data_shape))
            raise GradleakError(f"{trained}, but the images are {shape}; {hint}")
        if not _close(knowledge.mean, self.mean) or not _close(knowledge.std, self.std):
            raise GradleakError(
                f"{trained} with normalisation mean {list(self.mean)}, std {list(self.std)}, "
                f"but the data's is mean {list(knowledge.mean)}, std {list(knowledge.std)}; "
                f"{hint}"
            )
        if update.kind is not self.update_kind:
            raise GradleakError(f"{trained}, but the update is {update.kind.noun}; {hint}")
        given = describe_protocol(
            update.kind, knowledge.local_training, knowledge.num_users, knowledge.model_mode
        )
        if given != self.protocol:
            raise GradleakError(f"{trained}, but the clients run {_protocol_words(given)}; {hint}")

    def _name(self) -> str:
        return str(self.path) if self.path is not None else "(in memory)"

    def sketch_of(self, update: SharedUpdate) -> torch.Tensor:
        """The sketch of `update` (F,), its tensors in the server model's parameter order.

        Raises:
            GradleakError: the update lacks a parameter the inverter reads.
        """
        missing = [n for n in self.parameter_names if n not in update.tensors]
        if missing:
            raise GradleakError(
                f"the update has no tensor {missing[0]!r} of the model the inverter "
                f"{self._name()} was trained for; attack it with that model"
            )
        return self.sketch.sketch_update(update.tensors, self.parameter_names)

    def invert(self, update: SharedUpdate) -> torch.Tensor:
        """The client's images behind `update`, in one forward pass (no gradients).

        Args:
            update: a shared update of the setting the inverter was trained for (check it
                first with `check_fits`).

        Returns:
            B×C×H×W float32 images in the normalised space.

        Raises:
            GradleakError: the update lacks a parameter the inverter reads.
        """
        sketch = self.sketch_of(update).to(module_device(self.net))
        self.net.eval()
        with torch.no_grad():
            return self.net(sketch.unsqueeze(0))[0].clone()

    def nearest_training_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each image, the stored training image nearest to it (mean squared error).

        A reconstruction that is (nearly) one of the inverter's training images may be
        memorised rather than read out of the update; this says which.

        Args:
            images: B×C×H×W pixels in [0, 1] of the inverter's image shape.

        Returns:
            The nearest training images as pixels in [0, 1], B×C×H×W (float32, on the
            CPU), and their indices into `training_images`, int64 (B,).

        Raises:
            GradleakError: no training images are stored, or the shape differs.
        """
        stored = self.training_images
        if stored.shape[0] == 0:
            raise GradleakError(f"the inverter {self._name()} stores no training images")
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(stored.shape[1:]):
            raise GradleakError(
                f"images of shape {tuple(images.shape)} cannot be compared with the "
                f"inverter's training images of shape {tuple(stored.shape[1:])}"
            )
        return nearest_stored_images(stored, images)


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b, strict=True)
    )


def store_images(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] images as uint8, at most `MAX_STORED_IMAGES` of them (evenly spread)."""
    count = pixels.shape[0]
    if count > MAX_STORED_IMAGES:
        spread = torch.linspace(0, count - 1, MAX_STORED_IMAGES, device=pixels.device)
        pixels = pixels[spread.round().long()]
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8)


# --- the file ---------------------------------------------------------------------------------


def save_inverter(inverter: LearnedInverter, path: Path | str) -> Path:
    """Write the inverter to `path` as tensors and plain values, atomically.

    The file is written beside `path` and renamed over it, so an interrupted save never
    leaves half a file; `inverter.path` becomes `path`.

    Args:
        inverter: the inverter.
        path: where to write (a .pt file).

    Returns:
        `path` as a Path.
    """
    path = Path(path)
    net = inverter.net
    payload: dict[str, Any] = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "net": {
            "in_features": net.in_features,
            "batch_size": net.batch_size,
            "data_shape": list(net.data_shape),
            "hidden": net.hidden,
            "dropout": net.dropout.p,
        },
        "sketch": {"dim": inverter.sketch.dim, "seed": inverter.sketch.seed},
        "parameter_names": list(inverter.parameter_names),
        "model": inverter.model,
        "fingerprint": inverter.fingerprint,
        "architecture": inverter.architecture,
        "protocol": dict(inverter.protocol),
        "batch_size": inverter.batch_size,
        "data_shape": list(inverter.data_shape),
        "mean": list(inverter.mean),
        "std": list(inverter.std),
        "dataset": inverter.dataset,
        "auxiliary": dict(inverter.auxiliary),
        "training_images": inverter.training_images.detach().cpu(),
        "epochs": inverter.epochs,
        "training": dict(inverter.training),
    }
    with replaced_atomically(path) as partial:
        torch.save(payload, partial)
    inverter.path = path
    return path


_REQUIRED = (
    "state_dict",
    "net",
    "sketch",
    "parameter_names",
    "model",
    "fingerprint",
    "architecture",
    "protocol",
    "batch_size",
    "data_shape",
    "mean",
    "std",
)


def load_inverter(path: Path | str) -> LearnedInverter:
    """Read an inverter `save_inverter` wrote, tensors only (`weights_only=True`).

    Args:
        path: the inverter file.

    Returns:
        The inverter, in eval mode, with `path` set.

    Raises:
        GradleakError: the path is missing or a folder; the file is not a tensors-only
            torch file; it is another kind of file (e.g. a model checkpoint); or its
            weights do not fit the network it describes (one line each).
    """
    path = Path(path)
    if path.is_dir():
        raise GradleakError(f"inverter {path} is a folder; pass the .pt file of an inverter")
    if not path.is_file():
        raise GradleakError(
            f"inverter file not found: {path}; train one with gradleak train-inverter --out {path}"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for files that are not its own
        raise GradleakError(
            f"{path} is not a tensors-only torch file ({type(exc).__name__}); pass an inverter "
            "written by gradleak train-inverter"
        ) from exc
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        kind = (
            "a model checkpoint"
            if isinstance(payload, Mapping)
            and (
                "state_dict" in payload
                or all(isinstance(v, torch.Tensor) for v in payload.values())
            )
            else "not an inverter"
        )
        raise GradleakError(
            f"{path} is {kind}, not a learned inverter ({FORMAT}); pass a file written by "
            "gradleak train-inverter (a server model's state goes to --checkpoint)"
        )
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise GradleakError(f"inverter {path} lacks {missing[0]!r}; train it again")
    try:
        return _from_payload(payload, path)
    except (GradleakError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GradleakError(f"inverter {path} is damaged ({first}); train it again") from exc


def _from_payload(payload: Mapping[str, Any], path: Path) -> LearnedInverter:
    spec = payload["net"]
    with torch.device("cpu"):  # loaded on the CPU, as the file's tensors are
        net = InverterNet(
            int(spec["in_features"]),
            int(spec["batch_size"]),
            tuple(int(s) for s in spec["data_shape"]),
            hidden=int(spec["hidden"]),
            dropout=float(spec.get("dropout", 0.0)),
        )
    net.load_state_dict(payload["state_dict"], strict=True)
    net.eval()
    sketch = UpdateSketch(int(payload["sketch"]["dim"]), int(payload["sketch"]["seed"]))
    if sketch.features != net.in_features:
        raise GradleakError(f"sketch of {sketch.features} features for a net of {net.in_features}")
    images = payload.get("training_images", torch.zeros(0, dtype=torch.uint8))
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise GradleakError("training_images are not uint8 images")
    return LearnedInverter(
        net=net,
        sketch=sketch,
        parameter_names=tuple(str(n) for n in payload["parameter_names"]),
        model=str(payload["model"]),
        fingerprint=str(payload["fingerprint"]),
        architecture=str(payload["architecture"]),
        protocol=dict(payload["protocol"]),
        batch_size=int(payload["batch_size"]),
        data_shape=tuple(int(s) for s in payload["data_shape"]),
        mean=tuple(float(m) for m in payload["mean"]),
        std=tuple(float(s) for s in payload["std"]),
        dataset=str(payload.get("dataset", "")),
        auxiliary=dict(payload.get("auxiliary", {})),
        training_images=images,
        epochs=int(payload.get("epochs", 0)),
        training=dict(payload.get("training", {})),
        path=path,
    )
