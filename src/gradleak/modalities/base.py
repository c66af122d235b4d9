"""What differs between kinds of data: the one small interface the engine, the evaluation
side and the outputs use wherever they would otherwise assume images.

The attack side asks a modality for the dummy inputs it starts from, the box its inputs
must stay in, the prior added to the matching loss and that prior's default weight. The
evaluation side asks it to decode inputs into the data's own values, to score a
reconstruction against the truth (and cheaply while the attack runs) and to render
reconstructions into a run directory. `image.py` is the image implementation; another
kind of data is one more implementation and one registry line in `__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from gradleak.core.knowledge import Knowledge
    from gradleak.metrics import Evaluation


@dataclass(frozen=True)
class SuccessRule:
    """When a study counts a run as a successful attack: its `score` is at least `threshold`.

    Attributes:
        score: the run's score compared (a name in the modality's `scores`).
        threshold: the lowest value that counts as a success.
        text: the rule in words, for tables and reports (e.g. "PSNR ≥ 20 dB").
    """

    score: str
    threshold: float
    text: str


class Modality(Protocol):
    """One kind of data (images, text, …) as the engine and the evaluation side see it."""

    name: str
    convention: str  # how reconstructions are scored, in words (recorded with every result)

    # --- the attack side -------------------------------------------------------------------
    def initial_inputs(
        self, init: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        """Dummy inputs of `shape` (trials × batch × one input) drawn as `init` says."""
        ...

    def bounds(self, knowledge: Knowledge) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of valid inputs in the attacked (normalised) space."""
        ...

    def prior(self, inputs: torch.Tensor) -> torch.Tensor:
        """The prior term added to the matching loss of one trial's inputs (pure)."""
        ...

    def default_prior_weight(self, data_shape: tuple[int, ...]) -> float:
        """The prior's weight when the attack's settings leave it open."""
        ...

    # --- the evaluation side ---------------------------------------------------------------
    def decode(self, inputs: torch.Tensor, knowledge: Knowledge) -> torch.Tensor:
        """Attacked inputs back in the data's own values (images: [0, 1] pixels)."""
        ...

    def score(
        self,
        recon: torch.Tensor,
        truth: torch.Tensor,
        recon_labels: torch.Tensor | None,
        true_labels: torch.Tensor | None,
    ) -> Evaluation:
        """Scores of decoded reconstructions against the decoded truth, after matching."""
        ...

    def progress(
        self, recon: torch.Tensor, truth: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cheap scores while the attack runs: the matching order and the history columns."""
        ...

    # --- the outputs -----------------------------------------------------------------------
    def render_run(
        self, out_dir: Path, truth: torch.Tensor, recon: torch.Tensor, matching: list[int]
    ) -> None:
        """Write the reconstruction and its comparison with the truth into a run directory."""
        ...

    def snapshot_file(self, iteration: int) -> str:
        """Where the reconstruction at `iteration` goes, relative to the run directory."""
        ...

    def render_snapshot(self, decoded: torch.Tensor, path: Path) -> None:
        """Write one snapshot of the (matched, decoded) reconstruction to `path`."""
        ...

    # --- the studies -----------------------------------------------------------------------
    # What sweeps, comparisons and reports read of a run of this modality, so they never
    # name a score themselves. `scores` are keys of the run's metrics.json (each a number, or
    # None where it was not scored) and become the columns of results tables; the studies'
    # summaries give the mean ± std of `summary_scores` per setting; `headline` ranks cells
    # and is the score plotted by swept axis.
    scores: tuple[str, ...]
    summary_scores: tuple[str, ...]
    headline: str

    def success_rule(self, success_psnr: float) -> SuccessRule:
        """When a run counts as a successful attack; `success_psnr` is the study's PSNR (dB)
        threshold, which a modality without PSNR ignores."""
        ...
