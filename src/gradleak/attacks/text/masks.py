"""Masked-language modelling: the tokens behind [MASK], from the decoder's gradients.

With the client's inputs recovered, the attacker runs the model itself and knows, at each
of the M masked positions m, the head's hidden state h_m and softmax p_m. The decoder's
bias gradient is (1/M) Σ_m (p_m − y_m), so the labels' multiset is Σ_m y_m =
Σ_m p_m − M ∂L/∂b (integer counts, up to rounding). The tied embedding's row of a label
token y holds −(1/M) Σ_{m: y_m = y} h_m besides known terms (and the input side when y
also occurs unmasked), so a least-squares fit of that row on the h_m scores every position
for every label; the Hungarian method assigns them. The assignment is kept only when the
gradient recomputed with it matches the update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradleak.core.update import SharedUpdate
from gradleak.fl.client import client_gradient
from gradleak.models.text import IGNORE_INDEX, TextModel

DECODER_BIAS = "decoder.bias"  # the MLM head's output bias (its weight is the embeddings)
# Counts from the bias gradient must be this close to integers.
COUNT_SLACK = 0.2
# The recomputed gradient must match the update to this relative error (float32 sums in
# another batch order differ by about 1e-7).
MATCH = 1e-4


@dataclass(frozen=True)
class FilledMasks:
    """The inputs with [MASK] replaced, or None, and what happened in one line."""

    ids: torch.Tensor | None
    note: str
    error: float | None = None


def fill_masks(rows: torch.Tensor, update: SharedUpdate, model: TextModel) -> FilledMasks:
    """Replace the [MASK] tokens of recovered MLM inputs by the tokens the client masked.

    Args:
        rows: B×L recovered input ids (exact), [MASK] where the client masked.
        update: the client's gradient (it must hold `decoder_bias`).
        model: the masked-language model.

    Returns:
        The filled ids (None when the counts or the assignment do not check out), a note,
        and the relative error of the recomputed gradient.
    """
    masked = rows == model.vocabulary.mask_id
    count = int(masked.sum())
    bias_gradient = update.tensors.get(DECODER_BIAS)
    if bias_gradient is None:
        return FilledMasks(None, f"left as [MASK]: the update has no {DECODER_BIAS}")
    hidden, probabilities = _head_at_masks(rows, masked, model)
    expected = probabilities.sum(0) - count * bias_gradient.to(torch.float64)
    counts = expected.round()
    if (
        (expected - counts).abs().max() > COUNT_SLACK
        or int(counts.sum()) != count
        or bool((counts < 0).any())
    ):
        return FilledMasks(None, "left as [MASK]: the decoder bias gives no integer counts")
    labels = _assign(counts, hidden, probabilities, update, model, count)
    targets = torch.full_like(rows, IGNORE_INDEX)
    targets[masked] = labels
    recomputed = client_gradient(model, rows, targets)
    error = _relative_error(recomputed, update)
    if error > MATCH:
        return FilledMasks(
            None, "left as [MASK]: no assignment of the counted tokens matches the gradient", error
        )
    filled = rows.clone()
    filled[masked] = labels
    return FilledMasks(filled, f"{count} masked tokens filled and checked by the gradient", error)


def _head_at_masks(
    rows: torch.Tensor, masked: torch.Tensor, model: TextModel
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's hidden states (M×H) and softmax (M×V) at the masked positions (float64)."""
    seen: list[torch.Tensor] = []
    handle = model.transform.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            logits = model(rows)  # B×V×L
    finally:
        handle.remove()
    hidden = seen[0][masked].to(torch.float64)
    probabilities = logits.transpose(1, 2)[masked].to(torch.float64).softmax(dim=-1)
    return hidden, probabilities


def _assign(
    counts: torch.Tensor,
    hidden: torch.Tensor,
    probabilities: torch.Tensor,
    update: SharedUpdate,
    model: TextModel,
    count: int,
) -> torch.Tensor:
    """One label per masked position: Hungarian on least-squares scores of the label rows."""
    tokens = counts.nonzero().flatten()
    rows = update.tensors[model.word_embedding_name].to(torch.float64)[tokens]
    known = probabilities[:, tokens].T @ hidden / count  # the softmax part of each row
    # rows − known ≈ −(1/M) Σ_{m: y_m = y} h_m: fit each on the h_m.
    coefficients = torch.linalg.lstsq(hidden.T, (rows - known).T).solution  # M × tokens
    scores = -count * coefficients.T  # tokens × M, ≈ 1 where the token was masked
    slots = torch.arange(tokens.numel(), device="cpu").repeat_interleave(counts[tokens].long())
    cost = -scores[slots].numpy()
    from scipy.optimize import linear_sum_assignment  # heavy: only this attack needs it

    slot_of, position = linear_sum_assignment(cost)
    labels = torch.empty(count, dtype=torch.long, device="cpu")
    labels[torch.from_numpy(position)] = tokens[slots[torch.from_numpy(slot_of)]]
    return labels


def _relative_error(recomputed: dict[str, torch.Tensor], update: SharedUpdate) -> float:
    difference = total = 0.0
    for name, value in recomputed.items():
        target = update.tensors[name].to(torch.float64)
        difference += float(((value.to(torch.float64) - target) ** 2).sum())
        total += float((target**2).sum())
    return (difference / total) ** 0.5 if total > 0 else float("inf")
