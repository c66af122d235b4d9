"""The `span` attack: exact recovery of a text batch from its first layer's gradients,
after DAGER (Petrov et al. 2024, "DAGER: Exact Gradient Inversion for Large Language
Models").

1. Span. Layer 0's query, key and value gradients are Σ_t δ_t x_tᵀ: their row space is the
   span of the layer's inputs x_t (`subspace.span_of`; numerical rank by `rank_tolerance`).
   With as many distinct (token, position) inputs as the hidden size H the span is the
   whole space and nothing can be told, so the attack refuses (rank condition).
2. Candidates. Every token of the token set (`tokens.token_set`, plus [CLS] and [SEP]; the
   whole vocabulary when the set cannot be read) is tested at every position < L (L from
   the position-embedding update, else the padded length) and accepted when its layer-0
   input's relative distance to the span is below `tolerance` (`candidates.accept_pairs`).
3. Sequences. Lengths come from the positions where [SEP] is accepted (or the granted
   lengths). For each length the candidates are assembled into sequences and tested as a
   whole against the span of layer 0's feed-forward inputs, which depend on the entire
   sequence (`context`, `search`); a sequence is certified when every one of its inputs lies
   within `sequence_tolerance` of that span. For one sentence the candidates are one per
   position, so the sequence is read directly and only certified.
4. Masked-language modelling: the recovered inputs hold [MASK] where the client masked; the
   masked tokens are filled from the decoder's gradients (`masks`) when every sequence is
   certified and the update is a gradient.

Weight differences (FedAvg) sum gradients taken at several points of the local training, so
their rows span the inputs only approximately: the attack reads them with looser tolerances
(`delta_*`) and says the result is approximate.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.closed_form.base import check_no_iterations
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.attacks.text.candidates import PositionCandidates, accept_pairs
from gradleak.attacks.text.context import ContextTest, context_layer_name
from gradleak.attacks.text.masks import fill_masks
from gradleak.attacks.text.polish import nearest_neighbour
from gradleak.attacks.text.search import search_batch
from gradleak.attacks.text.sequences import Found, LengthSearch, SearchSettings, length_choices
from gradleak.attacks.text.subspace import DEFAULT_RANK_TOLERANCE, Span, span_of
from gradleak.attacks.text.tokens import (
    TextClosedFormAttack,
    check_text_model,
    read_length,
    read_token_set,
)
from gradleak.core.device import CPU, module_on
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.models.text import TextModel

ATTENTION = "bert.encoder.layer.0.attention.self.{}.weight"
# A certified sequence must lie this many times closer to the context span than every
# sequence one edit away (one token changed, or two exchanged).
MARGIN = 10.0


@dataclass(frozen=True)
class SpanConfig:
    """Options of the span attack.

    Attributes:
        tolerance: a (token, position) is accepted when its layer-0 input lies within this
            relative distance of the span (gradients). Measured: batch pairs ≤ 2e-4,
            out-of-batch tokens ≥ 0.16 (MiniLM-L6 and bert-tiny, batches of 1–8).
        sequence_tolerance: a sequence is certified when each of its layer-0 feed-forward
            inputs lies within this relative distance of their span (gradients) and every
            sequence one edit away lies `MARGIN` times farther. Measured: batch sentences
            ≤ 1e-6 on MiniLM, one wrong token ≥ 0.05; on bert-tiny 3e-5 to 6e-4 against
            2e-4 to 8e-4, which the margin check leaves uncertified.
        rank_tolerance: singular values at most this fraction of the largest are rounding
            (float32 rounding sits near 1e-8, the inputs' directions at 1e-5 and above).
        delta_tolerance, delta_sequence_tolerance, delta_rank_tolerance: the same for
            weight differences, whose spans hold only approximately (their rank is also
            cut at the float rounding of the subtraction, see `subspace.span_of`).
            Measured on MiniLM (FedAvg, 2–5 steps of η 0.01): batch pairs ≤ 3e-3, sentences
            ≤ 1e-2.
        exhaustive_limit: lengths with at most this many candidate sequences are tested
            exhaustively.
        patience: decoding ends after `patience` + B anchor tokens in a row certify
            nothing new, the random starts after `patience` rounds.
        max_sweeps: polishing sweeps per start.
        beam_width: partial sentences kept while decoding.
        max_evaluations: sequences the context test may evaluate before the search stops
            starting anything new (a bound on time: about 1e5 per minute for MiniLM on two
            cores); what is certified by then is kept.
        fill_masks: masked-language modelling: fill [MASK] from the decoder's gradients.
    """

    tolerance: float = 1e-2
    sequence_tolerance: float = 1e-4
    rank_tolerance: float = DEFAULT_RANK_TOLERANCE
    delta_tolerance: float = 5e-2
    delta_sequence_tolerance: float = 1e-2
    delta_rank_tolerance: float = 1e-6
    exhaustive_limit: int = 4096
    patience: int = 3
    max_sweeps: int = 8
    beam_width: int = 4
    max_evaluations: int = 200_000
    fill_masks: bool = True
    iterations: int = 0
    restarts: int = 1

    def validate(self) -> SpanConfig:
        for name in (
            "tolerance",
            "sequence_tolerance",
            "rank_tolerance",
            "delta_tolerance",
            "delta_sequence_tolerance",
            "delta_rank_tolerance",
        ):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise GradleakError(f"{name} must lie in (0, 1), got {value}")
        for name in ("exhaustive_limit", "patience", "max_sweeps", "beam_width", "max_evaluations"):
            if getattr(self, name) < 1:
                raise GradleakError(f"{name} must be at least 1, got {getattr(self, name)}")
        check_no_iterations(self.iterations, self.restarts, "the span attack")
        return self


class SpanAttack(TextClosedFormAttack):
    """Recovers a text batch exactly from layer 0's attention and feed-forward gradients."""

    default_name = "span"
    config_type = SpanConfig

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
        """Recover the batch's token ids (and the label of a single sentence).

        Args:
            update: the shared gradient or weight difference.
            model: the server's text model (left unchanged).
            knowledge: batch size B, padded length L (data_shape[0]), granted lengths and
                labels if any.
            seed: draws the starts of the sequence search.
            observer: unused (nothing iterates).
            progress: unused.

        Returns:
            images B×L int64 ids ([CLS] … [SEP], padding), labels (granted; for one
            sentence read from the classifier's bias; else None), loss the largest layer-0
            span distance of the returned tokens, and details (ranks, tolerances, accepted
            candidates per position, certified per sequence, how each length was searched).

        Raises:
            GradleakError: a model that is not a text model; an update kind the attack does
                not read, or one without layer 0's gradients or not fitting the model; a
                batch with at least H tokens (the span is the whole space).
        """
        start = time.perf_counter()
        text_model = check_text_model(model, self.name)
        # The search reads every candidate's distance on the host: it runs on the CPU (a
        # copy of a model on another device; the result is token ids, scored there too).
        text_model, update = module_on(text_model, CPU), update.to(CPU)
        names = self._required(update, text_model)
        update.validate_for(text_model)
        delta = update.kind is UpdateKind.WEIGHT_DELTA
        tolerance, sequence_tolerance, rank_tolerance = self._tolerances(delta)
        width = int(knowledge.data_shape[0])
        # The position-embedding rows a batch used are its length; noise (or a defense
        # that touches every row) hides it, and the granted padded length stands instead.
        length = read_length(update, text_model) or width
        length = min(length, width)
        first, context = _spans(update, text_model, names, rank_tolerance, delta)
        _check_rank(first, context, knowledge, length)

        vocabulary = text_model.vocabulary
        reading = read_token_set(update, text_model)
        tokens = _tokens_to_test(text_model, reading.ids)
        pairs = accept_pairs(text_model, first, tokens, length, tolerance)
        specials = torch.tensor([vocabulary.cls_id, vocabulary.sep_id], device="cpu")
        test = ContextTest(text_model, context, [torch.cat([c, specials]) for c in pairs.ids])
        settings = SearchSettings(
            tolerance=sequence_tolerance,
            exhaustive_limit=self.config.exhaustive_limit,
            patience=self.config.patience,
            max_sweeps=self.config.max_sweeps,
            beam_width=self.config.beam_width,
            max_evaluations=self.config.max_evaluations,
        )
        generator = torch.Generator().manual_seed(seed)
        searches = _search_lengths(text_model, pairs, test, settings, knowledge, generator)
        chosen = _choose(searches, knowledge.batch_size)
        rows = _rows(chosen, knowledge.batch_size, width, text_model)
        margins = [_margin(f, pairs, test, text_model) for f in chosen]
        certified = [
            f is not None and f.certified and f.score * MARGIN <= margin
            for f, margin in zip(chosen, margins, strict=True)
        ]
        details: dict[str, object] = {
            "rank": first.rank,
            "context_rank": context.rank,
            "hidden_size": text_model.hidden_size,
            "rank_tolerance": rank_tolerance,
            "tolerance": tolerance,
            "sequence_tolerance": sequence_tolerance,
            "length": length,
            "token_set": "read" if reading.ids is not None else reading.reason,
            "tested_tokens": pairs.tested,
            "accepted_per_position": pairs.counts,
            "lengths_searched": {str(s.length): s.method for s in searches},
            "certified": certified,
            "context_distance": [None if f is None else f.score for f in chosen],
            "nearest_edit_distance": margins,
            "sequences_evaluated": test.evaluated,
            "budget_spent": test.evaluated >= self.config.max_evaluations,
        }
        if first.rank < length:
            details["warning"] = (
                f"layer 0's span has rank {first.rank}, fewer than the {length} positions of the "
                "longest sequence: inputs are lost in the update's rounding or noise"
            )
        if delta:
            details["approximate"] = (
                "a weight difference sums gradients at several points, so its spans hold only "
                "approximately: certified means within the looser delta tolerances"
            )
        loss = _largest_distance(first, text_model, rows, vocabulary.pad_id)
        if text_model.task == "mlm":
            rows = self._fill(rows, update, text_model, certified, delta, details)
        labels, strategy = _labels(update, text_model, knowledge)
        return Reconstruction(
            images=rows,
            labels=labels,
            loss=loss,
            iterations=0,
            seconds=time.perf_counter() - start,
            label_strategy=strategy,
            labels_recovered=strategy == "bias sign",
            details=details,
        )

    def _required(self, update: SharedUpdate, model: TextModel) -> list[str]:
        """Layer 0's query, key, value and feed-forward weights and the word embeddings,
        refused in one line when absent (or when the update's kind is not read)."""
        if update.kind not in self.reads:
            raise GradleakError(
                f"attack '{self.name}' reads gradients and weight differences, not "
                f"{update.kind.noun}; attack a FedSGD or FedAvg update"
            )
        names = [ATTENTION.format(k) for k in ("query", "key", "value")]
        names += [context_layer_name(model), model.word_embedding_name]
        missing = [n for n in names if n not in update.tensors]
        if missing:
            raise GradleakError(
                f"attack '{self.name}' needs the update of {missing[0]}; share the full update "
                "of the text model"
            )
        return names

    def _tolerances(self, delta: bool) -> tuple[float, float, float]:
        """(pair, sequence, rank) tolerances for a gradient or a weight difference."""
        cfg = self.config
        if delta:
            return cfg.delta_tolerance, cfg.delta_sequence_tolerance, cfg.delta_rank_tolerance
        return cfg.tolerance, cfg.sequence_tolerance, cfg.rank_tolerance

    def _fill(
        self,
        rows: torch.Tensor,
        update: SharedUpdate,
        model: TextModel,
        certified: list[bool],
        delta: bool,
        details: dict[str, object],
    ) -> torch.Tensor:
        mask_id = model.vocabulary.mask_id
        if not bool((rows == mask_id).any()):
            return rows
        if not self.config.fill_masks:
            details["masks"] = "left as [MASK] (fill_masks is off)"
        elif delta:
            details["masks"] = (
                "left as [MASK]: a weight difference does not give the decoder bias's gradient "
                "at the recovered inputs"
            )
        elif not all(certified):
            details["masks"] = "left as [MASK]: filling needs every sequence certified"
        else:
            filled = fill_masks(rows, update, model)
            details["masks"] = filled.note
            details["mask_gradient_error"] = filled.error
            if filled.ids is not None:
                return filled.ids
        return rows


def _spans(
    update: SharedUpdate, model: TextModel, names: list[str], rank_tolerance: float, delta: bool
) -> tuple[Span, Span]:
    """The spans of layer 0's attention inputs and of its feed-forward inputs."""
    params = dict(model.named_parameters())

    def weights(chosen: list[str]) -> list[torch.Tensor] | None:
        # A weight difference's rounding scales with the weights it was taken from.
        return [params[n] for n in chosen] if delta else None

    attention, feed_forward = names[:3], names[3:4]
    first = span_of([update.tensors[n] for n in attention], rank_tolerance, weights(attention))
    context = span_of(
        [update.tensors[n] for n in feed_forward], rank_tolerance, weights(feed_forward)
    )
    return first, context


def _margin(
    found: Found | None, pairs: PositionCandidates, test: ContextTest, model: TextModel
) -> float | None:
    """The context distance of the nearest one-edit neighbour of a certified sequence."""
    if found is None or not found.certified:
        return None
    vocabulary = model.vocabulary
    options = length_choices(
        pairs.ids, found.ids.numel(), vocabulary.cls_id, vocabulary.sep_id, vocabulary.pad_id
    )
    return nearest_neighbour(found, options, test)


def _rows(chosen: list[Found | None], batch: int, width: int, model: TextModel) -> torch.Tensor:
    """B×L ids: each chosen sequence padded, [CLS] [SEP] where nothing was found."""
    vocabulary = model.vocabulary
    rows = torch.full((batch, width), vocabulary.pad_id, dtype=torch.long, device="cpu")
    for b, found in enumerate(chosen):
        if found is not None:
            rows[b, : found.ids.numel()] = found.ids
        else:
            rows[b, :2] = torch.tensor([vocabulary.cls_id, vocabulary.sep_id], device="cpu")
    return rows


def _check_rank(first: Span, context: Span, knowledge: Knowledge, length: int) -> None:
    if first.full or context.full:
        tokens = sum(knowledge.sequence_lengths or ()) or knowledge.batch_size * length
        dim = first.dim
        raise GradleakError(
            f"span needs fewer tokens in the batch (up to {tokens} here) than the hidden size "
            f"({dim}): layer 0's gradients span all {dim} dimensions, so every candidate fits "
            "(or the update is noised); use a smaller batch or shorter texts"
        )


def _tokens_to_test(model: TextModel, ids: torch.Tensor | None) -> torch.Tensor:
    vocabulary = model.vocabulary
    if ids is None:
        everything = torch.arange(vocabulary.size, dtype=torch.long, device="cpu")
        return everything[everything != vocabulary.pad_id]
    extra = torch.tensor([vocabulary.cls_id, vocabulary.sep_id], dtype=torch.long, device="cpu")
    return torch.unique(torch.cat([ids.long(), extra]))


def _search_lengths(
    model: TextModel,
    pairs: PositionCandidates,
    test: ContextTest,
    settings: SearchSettings,
    knowledge: Knowledge,
    generator: torch.Generator,
) -> list[LengthSearch]:
    """The possible lengths (granted, or where [SEP] is accepted) searched together."""
    vocabulary = model.vocabulary
    caps: dict[int, int] | None = None
    if knowledge.sequence_lengths is not None:
        caps = dict(Counter(knowledge.sequence_lengths))
        lengths = list(caps)
    else:
        ends = [p for p in range(1, len(pairs.ids)) if pairs.has(p, vocabulary.sep_id)]
        lengths = [p + 1 for p in ends] or [len(pairs.ids)]
    choices, empty = {}, []
    for n in lengths:
        options = length_choices(
            pairs.ids, n, vocabulary.cls_id, vocabulary.sep_id, vocabulary.pad_id
        )
        if 2 <= n <= len(pairs.ids) and all(c.numel() for c in options):
            choices[n] = options
        else:
            empty.append(LengthSearch(n, method="no candidate at some position"))
    found = search_batch(choices, test, settings, generator, knowledge.batch_size, caps)
    return found + empty


def _choose(searches: list[LengthSearch], batch: int) -> list[Found | None]:
    """Certified sequences first (longest first), then the best guesses, then nothing."""
    certified = [f for s in searches for f in s.certified][:batch]
    keys = {f.key for f in certified}
    guesses = sorted((f for s in searches for f in s.guesses), key=lambda f: f.score)
    chosen: list[Found | None] = list(certified)
    for guess in guesses:
        if len(chosen) >= batch:
            break
        if guess.key not in keys:
            chosen.append(guess)
            keys.add(guess.key)
    return chosen + [None] * (batch - len(chosen))


def _largest_distance(span: Span, model: TextModel, rows: torch.Tensor, pad: int) -> float:
    """The largest layer-0 span distance of the returned (non-padding) tokens."""
    with torch.no_grad():
        inputs = model.first_layer_input(rows)
    distances = span.distances(inputs)[rows != pad]
    return float(distances.max()) if distances.numel() else float("nan")


def _labels(
    update: SharedUpdate, model: TextModel, knowledge: Knowledge
) -> tuple[torch.Tensor | None, str]:
    """Granted labels; for one sentence the classifier bias's one entry of its own sign."""
    if knowledge.labels is not None:
        return knowledge.labels.clone(), "known"
    bias = update.tensors.get("classifier.bias")
    if model.task != "classification" or knowledge.batch_size != 1 or bias is None:
        return None, "none"
    # Gradient: softmax − one-hot is negative only at the label; a weight difference
    # steps against the gradient, so there the label's entry is the only positive one.
    signed = -bias if update.kind is UpdateKind.WEIGHT_DELTA else bias
    negative = (signed < 0).nonzero().flatten()
    if negative.numel() != 1:
        return None, "none"
    return negative.clone().long(), "bias sign"


def build() -> SpanAttack:
    """The span attack with its defaults."""
    return SpanAttack()
