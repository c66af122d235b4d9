"""The `spear` attack: SPEAR on a model's first Linear + ReLU layer, as a registry entry."""

from __future__ import annotations

import math
import time

from torch import nn

from gradleak.attacks.closed_form.analytic import find_first_linear
from gradleak.attacks.closed_form.base import ClosedFormAttack, closed_form_result
from gradleak.attacks.closed_form.probe import probe_layer
from gradleak.attacks.closed_form.spear.checks import check_batch_fits
from gradleak.attacks.closed_form.spear.config import SpearConfig
from gradleak.attacks.closed_form.spear.layer import spear_layer_input
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate


class SpearAttack(ClosedFormAttack):
    """Recovers a whole batch exactly from an MLP's first Linear + ReLU layer."""

    default_name = "spear"
    config_type = SpearConfig

    def check_model(self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int) -> None:
        """Refuse a model or batch SPEAR cannot attack.

        Raises:
            GradleakError: when the first Linear does not read the flattened image, is not
                followed by an nn.ReLU, or the batch exceeds its width or input size.
        """
        self._image_layer(model, data_shape, batch_size)

    def _image_layer(
        self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int
    ) -> tuple[str, nn.Linear]:
        name, layer = find_first_linear(model)
        # One probe pass answers both questions (what the layer reads, what follows it);
        # a layer of another input size is refused without one.
        flat = layer.in_features == math.prod(data_shape)
        seen = probe_layer(model, name, data_shape) if flat else None
        if seen is None or not seen.reads_flat_image():
            raise GradleakError(
                f"attack '{self.name}' needs a first Linear layer that reads the flattened "
                f"image, but layer {name!r} does not; use an mlp model"
            )
        if not seen.relu_follows():
            raise GradleakError(
                f"attack '{self.name}' needs an nn.ReLU right after the first Linear layer "
                f"{name!r}, whose zeros it relies on; use an mlp model"
            )
        check_batch_fits(layer, batch_size)
        return name, layer

    def reconstruct(
        self,
        update: SharedUpdate,
        model: nn.Module,
        knowledge: Knowledge,
        *,
        seed: int = 0,
        observer: Observer | None = None,
        progress: bool = True,
    ) -> Reconstruction:
        """Recover the batch behind `update` from the model's first Linear + ReLU layer.

        Labels come from the `auto` label strategy (the granted labels, else iDLG's for
        batch 1, else none).

        Args:
            update: the shared gradient, one tensor per named parameter of `model`.
            model: the server's model (left unchanged).
            knowledge: gives the input shape, the batch size B and whether the labels
                are granted.
            seed: seeds the sampling (same seed, same result).
            observer: unused (nothing iterates).
            progress: unused.

        Returns:
            The images B×C×H×W in the attacked (normalised) space, in no particular
            order, the labels (None without granted labels for B > 1), `loss` and
            `trial_losses` the relative residual of the rank-B fit of ∂L/∂W, 0 iterations,
            and details: layer, rank, singular_ratio, rank_gap, bias_residual, live_rows,
            samples, candidates, directions, completed_directions, sweeps, certified
            (per image), num_certified, mismatches, budget_exhausted, max_samples,
            refine_steps, interrupted. After Ctrl-C or SIGTERM: what was certified so far,
            marked interrupted.

        Raises:
            GradleakError: when the update's names or shapes do not fit `model`, or it
                holds NaN or Inf.
            GradleakError: when the model or batch does not suit SPEAR (`check_model`).
            GradleakError: when the update is not a gradient or its first layer's weight
                gradient is all zero (`spear_layer_input`).
        """
        start = time.perf_counter()
        update.validate_for(model)
        b = knowledge.batch_size
        name, layer = self._image_layer(model, knowledge.data_shape, b)
        result = spear_layer_input(update, name, layer, b, config=self.config, seed=seed)
        images = result.features.reshape(b, *knowledge.data_shape)
        details: dict[str, object] = {
            "layer": name,
            "rank": result.rank,
            "singular_ratio": result.singular_ratio,
            "rank_gap": result.rank_gap,
            "bias_residual": result.bias_residual,
            "live_rows": result.live_rows,
            "samples": result.samples,
            "candidates": result.candidates,
            "directions": result.directions,
            "completed_directions": result.completed_directions,
            "sweeps": result.sweeps,
            "certified": list(result.certified),
            "num_certified": result.num_certified,
            "mismatches": list(result.mismatches),
            "budget_exhausted": result.budget_exhausted,
            "max_samples": self.config.max_samples,
            "refine_steps": self.config.refine_steps,
            "interrupted": result.interrupted,
        }
        return closed_form_result(
            images,
            update,
            model,
            knowledge,
            loss=result.residual,
            start=start,
            details=details,
            interrupted=result.interrupted,
        )


def build() -> SpearAttack:
    """SPEAR with its defaults."""
    return SpearAttack()
