"""Text: sequences of token ids, attacked as input embeddings by the matching attacks and
read directly by the closed-form ones, scored by token and sequence metrics and ROUGE after
matching, and shown as original ↔ recovered sentences.

Inputs are token ids B×L (int64). The optimisation attacks work on word embeddings
(B×L×H, floating) and map them back to tokens before returning; what they hold while they
run is not scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gradleak.core.files import write_atomically
from gradleak.modalities.base import SuccessRule

if TYPE_CHECKING:
    from gradleak.core.knowledge import Knowledge
    from gradleak.metrics.text import TextEvaluation

# Dummy word embeddings start at the scale of BERT's initialisation (std 0.02 per entry,
# which MiniLM's trained embeddings keep within a small factor).
EMBEDDING_INIT_STD = 0.02


def decode_tokens(ids: torch.Tensor) -> list[str]:
    """Each row of token ids as text (special tokens and padding dropped)."""
    from gradleak.models.text import load_tokenizer

    tokenizer = load_tokenizer()
    return [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in ids]


class TextModality:
    """Token ids, attacked as word embeddings and scored as tokens and sentences."""

    name = "text"
    scores = (
        "exact_match",
        "token_accuracy",
        "token_recall",
        "token_precision",
        "rouge1",
        "rouge2",
        "rougeL",
        "label_accuracy",
    )
    summary_scores = scores[:-1]
    # ROUGE-L credits the words recovered and their order, so it ranks partial recoveries.
    headline = "rougeL"

    def success_rule(self, success_psnr: float) -> SuccessRule:
        """Every sequence of the batch recovered exactly (exact match 1); no PSNR here."""
        return SuccessRule("exact_match", 1.0, "every sequence recovered exactly")

    @property
    def convention(self) -> str:
        from gradleak.metrics.text import TEXT_CONVENTION

        return TEXT_CONVENTION

    def initial_inputs(
        self, init: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        """Dummy word embeddings (… × L × H): normal or uniform at BERT's init scale, or zeros,
        on the generator's device (the engine moves them to the model's)."""
        device = generator.device
        makers = {
            "randn": lambda: (
                EMBEDDING_INIT_STD * torch.randn(shape, generator=generator, device=device)
            ),
            "uniform": lambda: (
                EMBEDDING_INIT_STD * (torch.rand(shape, generator=generator, device=device) - 0.5)
            ),
            "zeros": lambda: torch.zeros(shape, device=device),
        }
        return makers[init]()

    def bounds(self, knowledge: Knowledge) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings are unbounded."""
        return torch.tensor(-torch.inf, device="cpu"), torch.tensor(torch.inf, device="cpu")

    def prior(self, inputs: torch.Tensor) -> torch.Tensor:
        """No prior on embeddings (TAG and DLG use none)."""
        return inputs.new_zeros(())

    def default_prior_weight(self, data_shape: tuple[int, ...]) -> float:
        return 0.0

    def decode(self, inputs: torch.Tensor, knowledge: Knowledge) -> torch.Tensor:
        """Token ids stay token ids; embeddings (an optimisation under way) stay as they are."""
        return inputs

    def score(
        self,
        recon: torch.Tensor,
        truth: torch.Tensor,
        recon_labels: torch.Tensor | None,
        true_labels: torch.Tensor | None,
    ) -> TextEvaluation:
        """Token, sequence and ROUGE scores after matching sequences (`evaluate_text`).

        For masked-language modelling `true_labels` are B×L token labels: the truth is the
        original sentence (its masked positions restored) and no class label is scored.
        """
        from gradleak.data.text import restore_masked
        from gradleak.metrics.text import evaluate_text

        if true_labels is not None and true_labels.dim() == 2:
            return evaluate_text(recon, restore_masked(truth, true_labels), decode_tokens)
        return evaluate_text(recon, truth, decode_tokens, recon_labels, true_labels)

    def progress(
        self, recon: torch.Tensor, truth: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Token accuracy in order when the attack holds tokens; nothing for embeddings."""
        from gradleak.metrics.text import token_accuracy

        order = torch.arange(truth.shape[0], device=truth.device)
        if recon.is_floating_point():
            return order, {}
        return order, {"token_accuracy": token_accuracy(recon, truth)}

    def render_run(
        self, out_dir: Path, truth: torch.Tensor, recon: torch.Tensor, matching: list[int]
    ) -> None:
        """sentences.txt: each original sentence beside the recovered one matched to it."""
        from gradleak.report.text import write_sentences

        write_sentences(
            out_dir / "sentences.txt", decode_tokens(truth), decode_tokens(recon[matching])
        )

    def snapshot_file(self, iteration: int) -> str:
        return f"snapshots/iter_{iteration:06d}.txt"

    def render_snapshot(self, decoded: torch.Tensor, path: Path) -> None:
        """The recovered sentences at one iteration, one per line. Embeddings under
        optimisation become tokens only when the attack ends: such a snapshot says so."""
        if decoded.is_floating_point():
            text = "(word embeddings under optimisation: tokens are read when the attack ends)"
        else:
            text = "\n".join(decode_tokens(decoded))
        write_atomically(path, text + "\n")
