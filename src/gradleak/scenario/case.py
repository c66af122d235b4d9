"""A case: the server's view (its model and the attacker's knowledge) and the clients'
private data, built as two separate objects so that only the first can reach an attack."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import DataFacts, Grants, Knowledge, grant_knowledge
from gradleak.data import (
    FOLDER_IMAGE_CLASSES,
    LoadedImages,
    dataset_stats,
    input_shape,
    load_image,
    normalize,
    open_images,
)
from gradleak.data.loading import FILE_DATASETS
from gradleak.data.statistics import Normalization, normalization, pixel_statistics
from gradleak.fl.protocols import ProtocolSettings
from gradleak.modalities import Modality, get_modality
from gradleak.models import build_model, check_checkpoint_model, load_checkpoint
from gradleak.models.user import check_labels_fit
from gradleak.scenario.config import RunConfig
from gradleak.scenario.plan import DataRequest, ModelRequest, data_request, model_request
from gradleak.scenario.user_model import fit_user_model, is_user_model


@dataclass(frozen=True)
class ServerView:
    """What the server holds and the threat model grants: all an attack may be given.

    Attributes:
        model: the server's model (the one the clients receive).
        knowledge: what the threat model grants the attacker.
    """

    model: nn.Module
    knowledge: Knowledge

    @property
    def modality(self) -> Modality:
        return get_modality(self.knowledge.modality)

    def decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Attacked inputs in the data's own values (images: [0, 1] pixels, clamped).

        The normalisation is public knowledge; the evaluation side uses this to score and
        show inputs, the truth included.
        """
        return self.modality.decode(inputs, self.knowledge)


@dataclass(frozen=True)
class ClientData:
    """The clients' private data: it goes to the clients and to the evaluation side only.

    Attributes:
        batch: all users' private samples, user i's share the i-th.
        class_names: the names of the dataset's classes.
        source: where the samples come from, for reports.
    """

    batch: PrivateBatch
    class_names: tuple[str, ...]
    source: str


class Case(NamedTuple):
    """A built case: the server's view and the clients' data, two separate objects."""

    server: ServerView
    client: ClientData

    def to(self, device: torch.device) -> Case:
        """This case on `device`: the server's model moved there (in place), the granted
        labels and the clients' batch copied there. Built and seeded on the CPU, a case is
        moved once, so the same seed gives the same case on any device."""
        server, client = self
        knowledge = server.knowledge
        if knowledge.labels is not None:
            knowledge = replace(knowledge, labels=knowledge.labels.to(device))
        batch = PrivateBatch(client.batch.images.to(device), client.batch.labels.to(device))
        return Case(ServerView(server.model.to(device), knowledge), replace(client, batch=batch))


@dataclass(frozen=True)
class _Data:
    images01: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats_name: str
    source: str


def build_case(config: RunConfig) -> Case:
    """Load the clients' private data and the server's model that `config` describes.

    Args:
        config: the run's settings.

    Returns:
        The server's view (model, knowledge) and the clients' data, as two objects; only
        the first may be handed to an attack.

    Raises:
        GradleakError: bad settings, missing or unreadable data, an unusable checkpoint.
    """
    # Only the case's parts are resolved: the attack and the outputs are not needed here.
    config = config.validate()
    model = model_request(config)
    return case_from(data_request(config), model, config.protocol_settings(), config.grants())


def case_from(
    data: DataRequest, model: ModelRequest, protocol: ProtocolSettings, grants: Grants
) -> Case:
    """Build a case from the resolved parts of a run (see `plan_run`).

    Args:
        data: which private images the clients hold.
        model: the server's model.
        protocol: what the clients do (users, local training, batch-norm mode).
        grants: what the threat model grants or makes the attacker guess.

    Returns:
        The server's view and the clients' data.

    Raises:
        GradleakError: missing or unreadable data, labels outside the classes, a
            checkpoint of another model.
    """
    if data.modality == "text":
        from gradleak.scenario.text_case import text_case

        # Text models and tokenizers come from an optional extra: imported only for text.
        return text_case(data, model, protocol, grants)
    # The user's own model is built first: the data is read at the size it takes.
    fitted = fit_user_model(data, model) if is_user_model(model) else None
    loaded = _load_data(data if fitted is None else fitted.data)
    channels, height, width = loaded.images01.shape[1:]
    if fitted is None:
        server_model = build_model(
            model.name,
            num_classes=loaded.num_classes,
            in_channels=channels,
            image_size=(height, width),
            seed=model.seed,
            model_args=model.model_args,
        )
    else:
        # A factory decides its own classes: the batch's labels must fall among them.
        check_labels_fit(loaded.labels, fitted.shape.num_classes, name=model.name.strip())
        loaded = replace(loaded, num_classes=fitted.shape.num_classes)
        server_model = fitted.model
    if model.checkpoint is not None:
        check_checkpoint_model(model.checkpoint, model.name, model.model_args)
        load_checkpoint(server_model, model.checkpoint)
    batch = PrivateBatch(normalize(loaded.images01, loaded.mean, loaded.std), loaded.labels)
    facts = DataFacts(
        (channels, height, width), loaded.num_classes, loaded.mean, loaded.std, loaded.stats_name
    )
    knowledge = grant_knowledge(facts, loaded.labels, protocol, grants)
    server = ServerView(server_model, knowledge)
    return Case(server, ClientData(batch, loaded.class_names, loaded.source))


def _load_data(request: DataRequest) -> _Data:
    if request.image is not None:
        return _single_image(request)
    images = open_images(
        request.dataset,
        request.data_root,
        request.split,
        request.image_size,
        request.normalize,
        channels=request.channels,
    )
    _check_enough(request, images)
    images01, labels = images.pixels(request.indices)
    num_classes = request.num_classes or images.num_classes
    _check_label_range(labels, num_classes)
    stats = images.stats
    return _Data(
        images01,
        labels,
        images.class_names,
        num_classes,
        stats.mean,
        stats.std,
        stats.name,
        images.describe(request.indices),
    )


def _check_enough(request: DataRequest, images: LoadedImages) -> None:
    """Refuse more images than the dataset has, naming the flag that fixes it."""
    total, have = len(request.indices), len(images)
    if total <= have:
        return
    if request.users > 1:
        raise GradleakError(
            f"{request.users} users × {request.per_user} samples need {total} images but "
            f"{images.description} has {have}; use fewer users (peers) or a smaller "
            "--batch-size"
        )
    raise GradleakError(
        f"batch size {request.per_user} is larger than the {have} images in "
        f"{images.description}; use --batch-size {have} or fewer"
    )


def _single_image(request: DataRequest) -> _Data:
    # The image takes the shape and statistics of the chosen dataset (CIFAR-10 by default);
    # unlike a dataset's own images it may be resized to any --image-size.
    stats = dataset_stats(request.dataset)
    channels, (side, _) = input_shape(request.dataset)
    size = request.image_size or side
    image01 = load_image(Path(request.image), (size, size), channels)
    default = Normalization(stats.name, stats.mean, stats.std)
    # --normalize auto is refused for one image (`RunConfig.validate`): its own statistics
    # would describe the private image to the attacker.
    chosen = normalization(
        request.normalize, default, channels, lambda: pixel_statistics(image01.unsqueeze(0))
    )
    folder = request.dataset in FILE_DATASETS
    num_classes = request.num_classes or (FOLDER_IMAGE_CLASSES if folder else stats.num_classes)
    label = 0 if request.label is None else request.label
    labels = torch.tensor([label])
    _check_label_range(labels, num_classes)
    names = tuple(str(i) for i in range(num_classes))
    return _Data(
        image01.unsqueeze(0),
        labels,
        names,
        num_classes,
        chosen.mean,
        chosen.std,
        chosen.name,
        f"image {request.image}, label {label}",
    )


def _check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    bad = [int(v) for v in labels if not 0 <= int(v) < num_classes]
    if bad:
        raise GradleakError(
            f"label {bad[0]} is outside the {num_classes} classes (0..{num_classes - 1}); "
            "give a label in range or raise --num-classes"
        )
