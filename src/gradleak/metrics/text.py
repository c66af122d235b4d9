"""Score recovered token sequences against the true ones: token overlap, token accuracy,
exact matches and ROUGE, after matching sequences one-to-one.

Sequences are B×L tensors of token ids in the BERT (uncased WordPiece) vocabulary: each row
[CLS] … [SEP], then padding. Padding, [CLS] and [SEP] only lay a row out, so every score
drops them first and works on a row's remaining tokens (its content), in order; positions
are counted within the content. [UNK] and [MASK] stay in the content as ordinary ids. A
recovered batch may hold rows of another length, with padding anywhere.

ROUGE comes from the `rouge-score` package (installed with `gradleak[text]`), imported only
when ROUGE is computed; nothing here needs `transformers`: text is made by a `decode`
function the caller passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.metrics.labels import as_label_vector
from gradleak.models.text import TEXT_EXTRA

# Special ids of the BERT uncased vocabulary that every gradleak text model shares.
PAD_ID = 0
UNK_ID = 100
CLS_ID = 101
SEP_ID = 102
MASK_ID = 103
LAYOUT_IDS = frozenset({PAD_ID, CLS_ID, SEP_ID})
"""Ids dropped from every row before scoring: they lay a row out and carry no word."""

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
NO_MATCH = -1
"""`matching[i]` of a true sequence left without a recovered one (fewer recovered rows)."""

TEXT_CONVENTION: str = (
    "Token sequences are scored on their content: padding, [CLS] and [SEP] are dropped from "
    "every row first, and positions are counted within what remains. Recovered sequences are "
    "first assigned one-to-one to true ones by the Hungarian method, maximising the total "
    "ROUGE-L F-measure between the decoded sentences, and the assignment is reported; when "
    "fewer sequences are recovered than there are true ones, the missing ones count as "
    "empty. Token precision and recall compare the multisets of token ids of the whole "
    "recovered batch (unmatched rows included) and of the whole true batch. Token accuracy "
    "is the share of true token positions whose matched recovered sequence holds the same id "
    "at the same position; exact match is the share of true sequences recovered with exactly "
    "their ids. ROUGE-1, ROUGE-2 and ROUGE-L are the F-measures of the rouge-score package "
    "(lower-cased ASCII words, no stemming) for each matched pair, averaged over the true "
    "sequences. Label accuracy is the fraction of recovered labels equal to the true label "
    "of the matched sequence."
)
"""How `evaluate_text` scores, in words, for reports and result files."""


@dataclass
class TextEvaluation:
    """Metrics of one recovered batch of token sequences; means are over true sequences.

    Built by `evaluate_text`, after matching each true sequence to a recovered one.

    Attributes:
        token_precision: the share of recovered token ids (whole batch, as a multiset) that
            also occur in the true batch, in [0, 1]; 0 when nothing was recovered.
        token_recall: the share of true token ids (as a multiset) that were recovered.
        token_accuracy: the share of true token positions whose matched recovered sequence
            holds the same id at the same position.
        exact_match: the share of true sequences whose matched recovered sequence holds
            exactly the same ids.
        rouge1: the mean ROUGE-1 F-measure of the matched pairs of sentences.
        rouge2: the mean ROUGE-2 F-measure of the matched pairs.
        rougeL: the mean ROUGE-L F-measure of the matched pairs.
        label_accuracy: the share of true sequences whose matched recovered sequence came
            with their class label, or None when labels were not given.
        per_sequence: one dict per true sequence i, in order, with keys "index" (i),
            "matched_reconstruction" (its recovered row, or -1), "truth" and "recovered" (the
            decoded sentences), "token_accuracy" (None for a true row with no content),
            "exact", "rouge1", "rouge2" and "rougeL".
        matching: matching[i] is the index of the recovered row matched to true row i, or
            -1 when none was (fewer recovered rows than true ones).
    """

    token_precision: float
    token_recall: float
    token_accuracy: float
    exact_match: float
    rouge1: float
    rouge2: float
    rougeL: float  # the metric's usual name, kept in result files
    label_accuracy: float | None
    per_sequence: list[dict[str, Any]] = field(default_factory=list)
    matching: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, ints, strings, bools, lists and None, ready for json.dump.

        Returns:
            A dict with one key per attribute, `per_sequence` as a list of dicts.
        """
        return asdict(self)


def content_ids(ids: Tensor, name: str = "token ids") -> list[list[int]]:
    """Each row's token ids without padding, [CLS] and [SEP], in order.

    Args:
        ids: token ids B×L, an integer tensor (B may be 0).
        name: what `ids` are, for error messages.

    Returns:
        B lists of ints.

    Raises:
        GradleakError: when `ids` is not a 2-D integer torch.Tensor.
    """
    if not isinstance(ids, Tensor):
        raise GradleakError(
            f"{name} must be a torch.Tensor, got {type(ids).__name__}; "
            "convert them with torch.as_tensor"
        )
    if ids.ndim != 2:
        raise GradleakError(
            f"{name} must be a B×L tensor of token ids, got shape {tuple(ids.shape)}; "
            "add a batch dimension with .unsqueeze(0)"
        )
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise GradleakError(
            f"{name} must hold integer token ids, got {ids.dtype}; map embeddings back to "
            "token ids first"
        )
    return [[t for t in row if t not in LAYOUT_IDS] for row in ids.detach().cpu().tolist()]


def _true_content(truth: Tensor) -> list[list[int]]:
    rows = content_ids(truth, "true token ids")
    if not rows:
        raise GradleakError("the true token ids hold no sequence; pass at least one row")
    if not any(rows):
        raise GradleakError(
            "the true sequences hold no token besides padding, [CLS] and [SEP]; "
            "pass encoded sentences"
        )
    return rows


def _row(rows: list[list[int]], j: int) -> list[int]:
    """Row j, or an empty sequence when j is -1 or past the end (a missing row)."""
    return rows[j] if 0 <= j < len(rows) else []


def _positions_right(recovered: list[int], truth: list[int]) -> int:
    return sum(r == t for r, t in zip(recovered, truth, strict=False))  # rows may differ in length


def _token_set_counts(recon: list[list[int]], truth: list[list[int]]) -> tuple[float, float]:
    recovered = Counter(t for row in recon for t in row)
    true = Counter(t for row in truth for t in row)
    overlap = sum((recovered & true).values())
    n_recovered = sum(recovered.values())
    precision = overlap / n_recovered if n_recovered else 0.0
    return precision, overlap / sum(true.values())


def _accuracy_in_order(recon: list[list[int]], truth: list[list[int]], order: list[int]) -> float:
    right = sum(_positions_right(_row(recon, order[i]), t) for i, t in enumerate(truth))
    return right / sum(len(t) for t in truth)


def _exact_in_order(recon: list[list[int]], truth: list[list[int]], order: list[int]) -> float:
    return sum(_row(recon, order[i]) == t for i, t in enumerate(truth)) / len(truth)


def token_set_scores(recon: Tensor, truth: Tensor) -> tuple[float, float]:
    """Precision and recall of the recovered token ids as a multiset, over the whole batch.

    Each id counts as often as it occurs: overlap = Σ_id min(#recovered, #true). Order and
    the split into rows are ignored.

    Args:
        recon: recovered token ids B'×L' (an integer tensor, any number of rows).
        truth: true token ids B×L.

    Returns:
        (precision, recall): overlap / recovered tokens (0 when nothing was recovered) and
        overlap / true tokens, both in [0, 1].

    Raises:
        GradleakError: when `recon` or `truth` is not a 2-D integer torch.Tensor.
        GradleakError: when `truth` holds no sequence or no token besides layout tokens.
    """
    return _token_set_counts(content_ids(recon, "recovered token ids"), _true_content(truth))


def token_accuracy(recon: Tensor, truth: Tensor) -> float:
    """The share of true token positions recovered with the same id, rows in the given order.

    Row i of `recon` is compared with row i of `truth`, position by position within their
    content; a missing recovered row counts as empty and extra recovered rows are ignored.

    Args:
        recon: recovered token ids B'×L' (an integer tensor).
        truth: true token ids B×L.

    Returns:
        A float in [0, 1].

    Raises:
        GradleakError: when `recon` or `truth` is not a 2-D integer torch.Tensor.
        GradleakError: when `truth` holds no sequence or no token besides layout tokens.
    """
    rows = _true_content(truth)
    order = list(range(len(rows)))
    return _accuracy_in_order(content_ids(recon, "recovered token ids"), rows, order)


def exact_match_rate(recon: Tensor, truth: Tensor) -> float:
    """The share of true rows whose recovered row (same index) holds exactly the same ids.

    Args:
        recon: recovered token ids B'×L' (an integer tensor); a missing row counts as empty.
        truth: true token ids B×L.

    Returns:
        A float in [0, 1].

    Raises:
        GradleakError: when `recon` or `truth` is not a 2-D integer torch.Tensor.
        GradleakError: when `truth` holds no sequence or no token besides layout tokens.
    """
    rows = _true_content(truth)
    order = list(range(len(rows)))
    return _exact_in_order(content_ids(recon, "recovered token ids"), rows, order)


def _rouge_scorer(types: Sequence[str]) -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise GradleakError(
            f"ROUGE needs the rouge-score package; install it with: {TEXT_EXTRA}"
        ) from None
    return rouge_scorer.RougeScorer(list(types), use_stemmer=False)


def rouge_scores(recovered: list[str], truth: list[str]) -> list[dict[str, float]]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of each pair of sentences.

    Uses the rouge-score package with its default tokenizer (lower-cased runs of ASCII
    letters and digits) and no stemming. An empty sentence on either side scores 0.

    Args:
        recovered: the recovered sentences.
        truth: the true sentences, pair i being (recovered[i], truth[i]).

    Returns:
        One dict per pair with keys "rouge1", "rouge2" and "rougeL", floats in [0, 1].

    Raises:
        GradleakError: when the two lists differ in length.
        GradleakError: when rouge-score is not installed.
    """
    if len(recovered) != len(truth):
        raise GradleakError(
            f"got {len(recovered)} recovered sentences for {len(truth)} true ones; "
            "pass them in pairs"
        )
    scorer = _rouge_scorer(ROUGE_TYPES)
    pairs = []
    for rec, true in zip(recovered, truth, strict=True):
        scores = scorer.score(true, rec)  # (target, prediction)
        pairs.append({kind: float(scores[kind].fmeasure) for kind in ROUGE_TYPES})
    return pairs


def match_sequences(recovered_texts: list[str], true_texts: list[str]) -> list[int]:
    """Assign recovered sentences one-to-one to true ones, maximising the total ROUGE-L F.

    Hungarian method (`scipy.optimize.linear_sum_assignment`) on the matrix of ROUGE-L
    F-measures. With more recovered sentences than true ones, some stay unmatched; with
    fewer, some true sentences get none.

    Args:
        recovered_texts: the recovered sentences, in any order.
        true_texts: the true sentences.

    Returns:
        matching: one int per true sentence, the index of its recovered sentence, or -1
        when it got none.

    Raises:
        GradleakError: when rouge-score is not installed.
    """
    from scipy.optimize import linear_sum_assignment

    matching = [NO_MATCH] * len(true_texts)
    if not recovered_texts or not true_texts:
        return matching
    scorer = _rouge_scorer(("rougeL",))
    gain = np.array(
        [
            [scorer.score(true, rec)["rougeL"].fmeasure for rec in recovered_texts]
            for true in true_texts
        ]
    )
    true_idx, rec_idx = linear_sum_assignment(gain, maximize=True)
    for i, j in zip(true_idx.tolist(), rec_idx.tolist(), strict=True):
        matching[i] = j
    return matching


def _decoded(decode: Callable[[Tensor], list[str]], ids: Tensor, name: str) -> list[str]:
    if ids.shape[0] == 0:
        return []
    texts = list(decode(ids))
    if len(texts) != ids.shape[0] or not all(isinstance(t, str) for t in texts):
        raise GradleakError(
            f"decode turned {ids.shape[0]} rows of {name} into {len(texts)} items; it must "
            "return one string per row"
        )
    return texts


def _matched_label_accuracy(
    recon_labels: Tensor, true_labels: Tensor, matching: list[int], n_recovered: int
) -> float:
    predicted = as_label_vector(recon_labels, "recovered labels")
    true = as_label_vector(true_labels, "true labels")
    if predicted.shape[0] != n_recovered:
        raise GradleakError(
            f"got {predicted.shape[0]} recovered labels for {n_recovered} recovered "
            "sequences; pass one recovered label per recovered sequence"
        )
    if true.shape[0] != len(matching):
        raise GradleakError(
            f"got {true.shape[0]} true labels for {len(matching)} true sequences; "
            "pass one true label per sequence"
        )
    # Labels follow their sequences; a true sequence without a recovered one gets no label.
    right = sum(j != NO_MATCH and int(predicted[j]) == int(true[i]) for i, j in enumerate(matching))
    return right / len(matching)


def evaluate_text(
    recon: Tensor,
    truth: Tensor,
    decode: Callable[[Tensor], list[str]],
    recon_labels: Tensor | None = None,
    true_labels: Tensor | None = None,
) -> TextEvaluation:
    """Match recovered sequences to true ones, then score tokens, sequences, ROUGE and labels.

    Recovered sequences are assigned one-to-one to true ones so that the total ROUGE-L
    F-measure of the decoded sentences is largest (`match_sequences`); each pair is then
    scored (see `TEXT_CONVENTION`), and each recovered label follows its sequence. When
    `recon` has fewer rows than `truth`, the true rows left over are scored against an empty
    sequence (matching -1); when it has more, the extra rows count only in token precision.

    Args:
        recon: recovered token ids B'×L' (int64), in any order; rows may have any length
            and padding.
        truth: true token ids B×L (int64): [CLS] … [SEP], then padding.
        decode: turns a 2-D tensor of token ids into one string per row (a tokenizer's
            batch decode, skipping special tokens).
        recon_labels: the class label recovered with each recovered sequence, a 1-D integer
            tensor in the order of `recon`; default None.
        true_labels: the true class label of each sequence, a 1-D integer tensor; default
            None. Label accuracy is scored only when both label tensors are given.

    Returns:
        The `TextEvaluation`: batch scores, the per-sequence scores and the matching.

    Raises:
        GradleakError: when `recon` or `truth` is not a 2-D integer torch.Tensor.
        GradleakError: when `truth` holds no sequence or no token besides layout tokens.
        GradleakError: when `decode` does not return one string per row.
        GradleakError: when a label tensor is not a 1-D tensor of integers, or does not hold
            one label per sequence.
        GradleakError: when rouge-score is not installed.
    """
    true_rows = _true_content(truth)
    recon_rows = content_ids(recon, "recovered token ids")
    true_texts = _decoded(decode, truth, "true token ids")
    recon_texts = _decoded(decode, recon, "recovered token ids")

    matching = match_sequences(recon_texts, true_texts)
    matched_texts = [recon_texts[j] if j != NO_MATCH else "" for j in matching]
    rouge = rouge_scores(matched_texts, true_texts)
    precision, recall = _token_set_counts(recon_rows, true_rows)

    accuracy = None
    if recon_labels is not None and true_labels is not None:
        accuracy = _matched_label_accuracy(recon_labels, true_labels, matching, len(recon_rows))

    per_sequence = []
    for i, (true, j) in enumerate(zip(true_rows, matching, strict=True)):
        recovered = _row(recon_rows, j)
        per_sequence.append(
            {
                "index": i,
                "matched_reconstruction": j,
                "truth": true_texts[i],
                "recovered": matched_texts[i],
                "token_accuracy": _positions_right(recovered, true) / len(true) if true else None,
                "exact": recovered == true,
                **rouge[i],
            }
        )
    n = len(true_rows)
    return TextEvaluation(
        token_precision=precision,
        token_recall=recall,
        token_accuracy=_accuracy_in_order(recon_rows, true_rows, matching),
        exact_match=_exact_in_order(recon_rows, true_rows, matching),
        rouge1=sum(r["rouge1"] for r in rouge) / n,
        rouge2=sum(r["rouge2"] for r in rouge) / n,
        rougeL=sum(r["rougeL"] for r in rouge) / n,
        label_accuracy=accuracy,
        per_sequence=per_sequence,
        matching=matching,
    )
