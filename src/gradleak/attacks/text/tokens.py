"""The `tokens` attack: which tokens the client's batch holds, read from the word-embedding
update.

An embedding lookup only touches the rows of the tokens it reads, so in a gradient (and in
a FedAvg weight difference, a sum of gradients) every row of a token absent from the batch
is exactly zero; the non-zero rows name the batch's tokens. The padding row never moves
(BERT's embedding has a padding index), and neither do the rows of tokens the tokenizer
never emits ([unused0] … [unused993]): when those rows are not zero the update was
perturbed (e.g. noised) and no row can be trusted, so the set is not read.

Masked-language modelling ties the output decoder to the word embeddings, so every row
moves: row v = Σ_m c_{m,v} h_m (the head's hidden state h_m at each masked position m,
weighted by that position's softmax minus its label) + the input-side gradient when v is in
the input. The output side lies in the span of the h_m, of rank at most M (the number of
masked positions). The rows of the never-emitted tokens are pure output side, so their span
estimates it; the rows within 1e-3 (relative) of it refine the estimate, and the tokens
whose rows stand further out than that hold an input side: they are the input's tokens
([MASK] among them). Measured on MiniLM-L6 with batches of 1–8 sentences, input rows stand
0.1 or more outside the output span and the others 1e-7 inside. A FedAvg weight difference
adds the float rounding of the subtraction (rows within a few times eps·|row| of the span
count as output side), and its output side turns with the local steps: the rows of the
masked words, whose output part is largest, may then stand out too, so the set can hold
them besides the input's tokens.

Counts: the position-embedding update's non-zero rows give the longest sequence's length,
so for one sentence its length and the number of repeated occurrences are told; which
tokens repeat is not (a row sums its token's occurrences), nor are the lengths of a batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from gradleak.attacks.closed_form.base import ClosedFormAttack, check_no_iterations
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.attacks.text.subspace import FLOOR_FACTOR, Span, span_of
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.models.text import TextModel, Vocabulary, load_tokenizer

# A row whose distance to the output span exceeds this fraction of its norm holds an
# input side (measured: input rows ≥ 0.1, output-only rows ≤ 3e-6).
SEPARATION = 1e-3
# Rows used to refine the output span (the largest output-only rows carry it best).
REFINE_ROWS = 4096


@dataclass(frozen=True)
class TokenReading:
    """The batch's token set as read from an update, or why it cannot be read.

    Attributes:
        ids: sorted int64 token ids (pad excluded), or None when the set cannot be read.
        method: how the rows were read ("non-zero rows" or "input side of the tied
            embedding").
        reason: one line saying why `ids` is None ("" when read).
        output_rank: masked-language modelling: the rank of the output side (about the
            number of masked positions); None otherwise.
        length: the longest sequence's length from the position-embedding update, or None
            when that update is absent or all zero.
    """

    ids: torch.Tensor | None
    method: str
    reason: str = ""
    output_rank: int | None = None
    length: int | None = None


def check_text_model(model: nn.Module, who: str) -> TextModel:
    """Refuse a model that is not a gradleak text model, in one line."""
    if not isinstance(model, TextModel):
        raise GradleakError(
            f"attack '{who}' reads the word embeddings of a text model but got "
            f"{type(model).__name__}; use --modality text with a text model (minilm, bert-tiny)"
        )
    return model


def embedding_rows(update: SharedUpdate, model: TextModel, who: str) -> torch.Tensor:
    """The word-embedding update (vocabulary × H), refused in one line when absent."""
    rows = update.tensors.get(model.word_embedding_name)
    if rows is None or rows.dim() != 2 or rows.shape[0] != model.vocabulary.size:
        raise GradleakError(
            f"attack '{who}' needs the update of {model.word_embedding_name} "
            f"({model.vocabulary.size} × {model.hidden_size}); share the full update of the "
            "text model"
        )
    return rows


def read_length(update: SharedUpdate, model: TextModel) -> int | None:
    """The longest sequence's length: one past the last non-zero position-embedding row.

    Returns:
        The length, or None when the update has no position-embedding tensor or it is zero.
    """
    rows = update.tensors.get(model.position_embedding_name)
    if rows is None or rows.dim() != 2:
        return None
    used = (rows != 0).any(dim=1).nonzero().flatten()
    return int(used[-1]) + 1 if used.numel() else None


@cache
def _never_emitted(size: int) -> tuple[int, ...]:
    """Ids of the tokens the tokenizer never produces from text ([unused…])."""
    vocab = load_tokenizer().get_vocab()
    return tuple(sorted(i for s, i in vocab.items() if s.startswith("[unused") and i < size))


def never_emitted(vocabulary: Vocabulary) -> torch.Tensor:
    """The padding id and the ids no text tokenizes to: their rows carry no input side."""
    ids = (vocabulary.pad_id, *_never_emitted(vocabulary.size))
    return torch.tensor(sorted(set(ids)), dtype=torch.long, device="cpu")


def read_token_set(update: SharedUpdate, model: TextModel, tolerance: float = 0.0) -> TokenReading:
    """Read the batch's token set from the word-embedding update (see the module's notes).

    Args:
        update: a gradient or a weight difference of `model`.
        model: the text model.
        tolerance: a row counts when its norm (its input side's, for masked-language
            modelling) exceeds this fraction of the largest; 0 = exactly non-zero.

    Returns:
        The reading: the ids, or None with the reason.

    Raises:
        GradleakError: a model that is not a text model, or an update without the word
            embeddings, or a tolerance outside [0, 1).
    """
    model = check_text_model(model, "tokens")
    if not 0 <= tolerance < 1:
        raise GradleakError(f"token tolerance must lie in [0, 1), got {tolerance}")
    rows = embedding_rows(update, model, "tokens").detach().to(torch.float64)
    length = read_length(update, model)
    never = never_emitted(model.vocabulary).to(rows.device)
    if model.task == "mlm":
        delta = update.kind is not UpdateKind.GRADIENT
        weights = model.word_embeddings.weight if delta else None
        reading = _input_side(rows, never, tolerance, weights)
    else:
        reading = _non_zero_rows(rows, never, tolerance)
    if reading.ids is not None:
        reading = _within_bound(reading, update, length)
    return TokenReading(reading.ids, reading.method, reading.reason, reading.output_rank, length)


def token_set(
    update: SharedUpdate, model: TextModel, tolerance: float = 0.0
) -> torch.Tensor | None:
    """The sorted 1-D int64 ids of the batch's tokens (pad excluded), or None.

    Works for gradients and weight differences. None when the rows cannot be read: a
    perturbed update (rows of never-emitted tokens moved, or more rows than the batch's
    tokens could explain) or a tied decoder whose output side does not separate.

    Args:
        update: the shared update.
        model: the text model it was computed at.
        tolerance: a row counts when its norm exceeds this fraction of the largest (for
            masked-language modelling: its input side's norm); 0 = exactly non-zero.

    Returns:
        The ids, or None.

    Raises:
        GradleakError: a model that is not a text model, or an update without the word
            embeddings.
    """
    return read_token_set(update, model, tolerance).ids


def _counted(norms: torch.Tensor, tolerance: float) -> torch.Tensor:
    top = norms.max()
    return norms > tolerance * top if top > 0 else torch.zeros_like(norms, dtype=torch.bool)


def _non_zero_rows(rows: torch.Tensor, never: torch.Tensor, tolerance: float) -> TokenReading:
    method = "non-zero rows"
    moved = _counted(rows.norm(dim=1), tolerance)
    if moved[never].any():
        return TokenReading(
            None,
            method,
            f"{int(moved[never].sum())} rows of the padding and never-emitted tokens moved, "
            "which no input does: the update was perturbed (noise?)",
        )
    return TokenReading(moved.nonzero().flatten().long(), method)


def _input_side(
    rows: torch.Tensor, never: torch.Tensor, tolerance: float, weights: torch.Tensor | None
) -> TokenReading:
    method = "input side of the tied embedding"
    dim = rows.shape[1]
    norms = rows.norm(dim=1)
    # A weight difference carries each row's float rounding (about eps·|row| of the
    # weights): distances within a few times that are rounding, not an input side.
    if weights is None:
        rounding = torch.zeros_like(norms)
        floor = None
    else:
        eps = torch.finfo(weights.dtype).eps
        rounding = FLOOR_FACTOR * eps * weights.detach().double().norm(dim=1)
        floor = [weights[never]]
    output = span_of([rows[never]], weights=floor)
    if output.rank == 0:  # no output side at all (nothing masked): plain rows
        reading = _non_zero_rows(rows, never, tolerance)
        return TokenReading(reading.ids, reading.method, reading.reason, 0)
    if 2 * output.rank > dim:
        return TokenReading(
            None,
            method,
            f"the rows of never-emitted tokens span {output.rank} of {dim} dimensions, not the "
            "few of the masked positions: the update was perturbed or too many positions "
            "are masked",
            output.rank,
        )

    def outside_of(span: Span) -> torch.Tensor:
        """Which rows stand out of the output span by more than separation and rounding."""
        away = span.distances(rows) * norms
        return (away > SEPARATION * norms) & (away > rounding) & (norms > 0)

    # Refine with the largest output-only rows: the never-emitted tokens' logits are low,
    # so their rows see the output side's weaker directions barely above rounding.
    quiet = (~outside_of(output) & (norms > 0)).nonzero().flatten()
    chosen = quiet[norms[quiet].argsort(descending=True)[:REFINE_ROWS]]
    refine = None if weights is None else [weights[torch.cat([never, chosen])]]
    output = span_of([torch.cat([rows[never], rows[chosen]])], weights=refine)
    present = outside_of(output)
    if present[never].any():
        return TokenReading(
            None,
            method,
            "rows of never-emitted tokens stand outside the output side's span: the update "
            "was perturbed (noise?)",
            output.rank,
        )
    present &= _counted(output.distances(rows) * norms, tolerance)
    return TokenReading(present.nonzero().flatten().long(), method, "", output.rank)


def _within_bound(reading: TokenReading, update: SharedUpdate, length: int | None) -> TokenReading:
    """None when more tokens moved than the batch (num_samples × longest length) holds."""
    samples = update.num_samples
    assert reading.ids is not None
    if samples is None or length is None:
        return reading
    bound = samples * length
    if reading.ids.numel() > bound:
        return TokenReading(
            None,
            reading.method,
            f"{reading.ids.numel()} rows moved but {samples} sequences of at most {length} "
            f"tokens hold at most {bound}: the update was perturbed (noise?)",
            reading.output_rank,
        )
    return reading


@dataclass(frozen=True)
class TokensConfig:
    """Options of the tokens attack.

    Attributes:
        tolerance: a word-embedding row counts when its norm (its input side's, for
            masked-language modelling) exceeds this fraction of the largest; 0 counts every
            row that moved at all.
    """

    tolerance: float = 0.0
    iterations: int = 0
    restarts: int = 1

    def validate(self) -> TokensConfig:
        if not 0 <= self.tolerance < 1:
            raise GradleakError(f"tolerance must lie in [0, 1), got {self.tolerance}")
        check_no_iterations(self.iterations, self.restarts, "the tokens attack")
        return self


def bag_rows(ids: torch.Tensor, vocabulary: Vocabulary, batch: int, length: int) -> torch.Tensor:
    """B×L rows holding a token set: [CLS] + a share of the tokens + [SEP] + padding.

    The set (special tokens left out) is cut in sorted order into `batch` nearly equal
    consecutive shares; a share longer than the row allows is cut short.
    """
    words = [int(t) for t in ids if int(t) not in (vocabulary.cls_id, vocabulary.sep_id)]
    # Host-side bookkeeping of token ids: the rows are built on the CPU.
    rows = torch.full((batch, length), vocabulary.pad_id, dtype=torch.long, device="cpu")
    base, extra = divmod(len(words), batch)
    start = 0
    for b in range(batch):
        share = words[start : start + base + (1 if b < extra else 0)]
        start += len(share)
        row = [vocabulary.cls_id, *share][: max(length - 1, 1)] + [vocabulary.sep_id]
        kept = torch.tensor(row[:length], dtype=torch.long, device="cpu")
        rows[b, : min(len(row), length)] = kept
    return rows


class TextClosedFormAttack(ClosedFormAttack):
    """A closed-form attack on a gradleak text model's gradients or weight differences."""

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """Gradients, and weight differences (untouched rows stay zero; spans hold
        approximately).

        Returns:
            {GRADIENT, WEIGHT_DELTA}.
        """
        return frozenset({UpdateKind.GRADIENT, UpdateKind.WEIGHT_DELTA})

    def check_model(self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int) -> None:
        """Refuse a model that is not a gradleak text model.

        Raises:
            GradleakError: naming what to use instead.
        """
        check_text_model(model, self.name)


class TokensAttack(TextClosedFormAttack):
    """Reads which tokens the batch holds (no order, no assignment to sequences)."""

    default_name = "tokens"
    config_type = TokensConfig

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
        """Read the batch's token set and lay it out as B rows of ids.

        No order can be told from the rows: each row is [CLS], a share of the set in id
        order, [SEP], padding (the set cut into B nearly equal shares).

        Args:
            update: the shared gradient or weight difference.
            model: the server's text model (left unchanged).
            knowledge: gives the batch size B and the padded length L (data_shape[0]).
            seed: unused (nothing is random).
            observer: unused (nothing iterates).
            progress: unused.

        Returns:
            images B×L int64 ids, labels None, loss nan, and details: token_set, count,
            method, and what the counts tell (length, repeats) or why they cannot.

        Raises:
            GradleakError: a model that is not a text model, an update without the word
                embeddings, an update kind the attack does not read, or one that does not
                fit the model.
        """
        start = time.perf_counter()
        text_model = check_text_model(model, self.name)
        embedding_rows(update, text_model, self.name)
        if update.kind not in self.reads:
            raise GradleakError(
                f"attack '{self.name}' reads gradients and weight differences, not "
                f"{update.kind.noun}; attack a FedSGD or FedAvg update"
            )
        update.validate_for(text_model)
        reading = read_token_set(update, text_model, self.config.tolerance)
        batch, length = knowledge.batch_size, int(knowledge.data_shape[0])
        vocabulary = text_model.vocabulary
        empty = torch.zeros(0, dtype=torch.long, device="cpu")
        ids = reading.ids if reading.ids is not None else empty
        details: dict[str, object] = {
            "token_set": [int(t) for t in ids],
            "count": int(ids.numel()),
            "method": reading.method,
            "tolerance": self.config.tolerance,
            "order": "none: rows hold the set in id order, cut into B shares",
        }
        if reading.ids is None:
            details["reason"] = reading.reason
        if reading.output_rank is not None:
            details["output_rank"] = reading.output_rank
        details.update(_counts(reading, vocabulary, batch))
        return Reconstruction(
            images=bag_rows(ids, vocabulary, batch, length),
            labels=None,
            loss=float("nan"),
            iterations=0,
            seconds=time.perf_counter() - start,
            label_strategy="none",
            labels_recovered=False,
            details=details,
        )


def _counts(reading: TokenReading, vocabulary: Vocabulary, batch: int) -> dict[str, object]:
    """What the position rows tell about lengths and repeats, in details' words."""
    counts: dict[str, object] = {"longest_length": reading.length}
    if reading.length is None:
        counts["counts"] = "unknown: the position-embedding update is absent or zero"
        return counts
    if batch > 1 or reading.ids is None:
        counts["counts"] = (
            "only the longest length: a batch's other lengths and repeats are not told"
        )
        return counts
    specials = {vocabulary.cls_id, vocabulary.sep_id}
    words = sum(1 for t in reading.ids if int(t) not in specials)
    counts["repeats"] = max(reading.length - 2 - words, 0)
    counts["counts"] = (
        "length from the position rows; repeats = length − 2 − distinct word tokens; "
        "which tokens repeat is not told"
    )
    return counts


def build() -> TokensAttack:
    """The tokens attack with its defaults."""
    return TokensAttack()
