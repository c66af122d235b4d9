"""The evaluation side's private batches of a Flower run, kept apart from the server.

A simulation knows what each client trained on; to score what the server reconstructs,
each client writes its batch here (`save`), and the server's evaluation side reads it back
(`TruthFolder` is the `truth` of `CuriousStrategy` and `attack_capture_folder`). Attacks
never read it.

Each file is a valid `--truth` file of `gradleak attack --update`: `images` as [0, 1]
pixels and integer `labels`, so one captured update is scored again by::

    gradleak attack --update OUT/round-001/node-<id>/update.pt \\
        --checkpoint OUT/round-001/global.pt --truth TRUTH/round-001/node-<id>.pt ...
"""

from __future__ import annotations

from pathlib import Path

import torch

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically
from gradleak.core.knowledge import DataFacts
from gradleak.data import denormalize, normalize

# How far outside [0, 1] a denormalised pixel may fall by float rounding alone; such pixels
# are clamped, anything farther is not an image normalised with the facts' statistics.
ROUNDING = 1e-4


class TruthFolder:
    """Private batches by (round, node), as tensors-only `--truth` files.

    Args:
        root: the folder (created when the first batch is saved).
        facts: the data's format: its normalisation (mean, std) maps the clients'
            normalised batches to the files' [0, 1] pixels and back (e.g. a
            `FlowerTarget`'s `facts`).

    Raises:
        GradleakError: `facts` is not a `DataFacts`.
    """

    def __init__(self, root: Path | str, facts: DataFacts) -> None:
        if not isinstance(facts, DataFacts):
            raise GradleakError(
                f"facts must be the data's DataFacts (e.g. a FlowerTarget's facts), not "
                f"{type(facts).__name__}"
            )
        self.root = Path(root)
        self.facts = facts

    def path(self, server_round: int, node: int) -> Path:
        """The file of the batch of (round, node)."""
        return self.root / f"round-{server_round:03d}" / f"node-{node}.pt"

    def save(self, server_round: int, node: int, batch: PrivateBatch) -> Path:
        """Keep the batch a client trained on in `server_round`.

        Args:
            server_round: the server round (from 1).
            node: the client's node id.
            batch: the batch as the client trains on it (normalised images, labels).

        Returns:
            The file written: `images` as [0, 1] pixels, `labels`.

        Raises:
            GradleakError: images that are not [0, 1] pixels normalised with the facts'
                statistics.
        """
        images = batch.images.detach().cpu().float()
        pixels = denormalize(images, self.facts.mean, self.facts.std)
        low, high = float(pixels.min()), float(pixels.max())
        if not (low >= -ROUNDING and high <= 1 + ROUNDING):
            raise GradleakError(
                f"the batch's images span [{low:.3g}, {high:.3g}] as pixels, not [0, 1]; save "
                "images normalised with the facts' mean and std"
            )
        labels = batch.labels.detach().cpu()
        path = self.path(server_round, node)
        with replaced_atomically(path) as partial:
            torch.save({"images": pixels.clamp(0.0, 1.0), "labels": labels}, partial)
        return path

    def __call__(self, server_round: int, node: int) -> PrivateBatch | None:
        """The batch of (round, node), normalised as the client held it, or None where
        none was kept.

        Raises:
            GradleakError: a file that is not a tensors-only batch.
        """
        path = self.path(server_round, node)
        if not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            pixels, labels = saved["images"], saved["labels"]
            images = normalize(pixels.float(), self.facts.mean, self.facts.std)
        except Exception as exc:  # torch raises several unrelated types for bad files
            raise GradleakError(f"{path} is not a saved private batch ({exc})") from exc
        return PrivateBatch(images, labels)
