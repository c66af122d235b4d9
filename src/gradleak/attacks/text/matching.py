"""DLG and TAG on text: dummy word embeddings matched to the shared update, then tokens.

DLG (Zhu et al. 2019, whose language experiment attacked BERT) and TAG (Deng et al. 2021,
"TAG: Gradient Attack on Transformer-based Language Models") are the gradient-matching
attack (`GradientMatchingAttack`) run on the output of the word-embedding lookup: the
candidates are B×L×H dummy embeddings (L = knowledge.data_shape[0]), replayed through the
attacker's replica (`replica.py`: the lookup is skipped, so the word-embedding matrix is
neither replayed nor matched, and each row carries its attention mask), and, when the
labels are not known, soft labels optimised with them:

- classification: B×classes logits as DLG, or a label read from the update (`labels.py`:
  "auto" takes the granted labels, else iDLG's argmin of the classifier's bias gradient for
  one sentence: p − onehot(y) is negative only at y, whatever the sign of the pooled tanh
  features; else soft labels);
- masked-language modelling: the attacker does not know which positions were masked, so
  every position gets soft labels over the vocabulary plus one class meaning "not in the
  loss" (B×L×(V + 1), `problem.label_loss`), which can reproduce a client that averaged
  over any M ≥ B masked positions.

The mask comes from `knowledge.sequence_lengths` when granted (padding pinned beyond each
length); otherwise every row attends to all L positions, which is exact only when the
sequences share one length. Known positions are pinned during the optimisation ([CLS] at
0, [SEP] at each sequence's end when the lengths are granted or there is one sequence).
Afterwards each position becomes its nearest token (`nearest.py`) among the leaked token
set (`tokens.token_set`: the non-zero rows of the word-embedding update) plus [CLS] and
[SEP]; for masked-language modelling a position recovered as [MASK] takes its soft label's
token. The reconstruction's `images` are those B×L int64 ids.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.engine.trials import TrialsResult
from gradleak.attacks.gradient_matching import GradientMatchingAttack, GradientMatchingConfig
from gradleak.attacks.labels import AUTO, LABEL_STRATEGIES, LabelStrategy
from gradleak.attacks.matching.objectives import TAG_ALPHA, get_objective, tag_distance
from gradleak.attacks.matching.problem import MatchingProblem
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.attacks.text.nearest import TOKEN_MATCHES, candidate_ids, nearest_tokens
from gradleak.attacks.text.replica import attention_mask, embedding_replica, with_mask
from gradleak.attacks.text.tokens import check_text_model, token_set
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.settings import replace_checked
from gradleak.core.update import SharedUpdate
from gradleak.fl.replay import Replay
from gradleak.modalities import get_modality


@dataclass(frozen=True)
class TextMatchingConfig(GradientMatchingConfig):
    """A gradient-matching attack's settings, plus how its embeddings become tokens.

    Every field of `GradientMatchingConfig` means what it means there, with embeddings for
    images; `admm` is refused (text attacks read gradients and FedAvg weight differences),
    `boxed` has no effect (embeddings are unbounded) and `tv_weight` none either (text has
    no prior).

    Attributes:
        token_match: how a position's embedding is compared with the vocabulary's:
            "cosine" (default; cosine similarity of the embeddings, TAG's and LAMP's rule)
            or "layer_input" (distance between what the first attention layer receives,
            LayerNorm(embedding + position + type), blind to what the gradient cannot
            see). Measured on the same optimised embeddings (dlg-text, lengths granted),
            the cosine placed as many words or more: bert-tiny 95% vs 91% of the words of
            six sentences attacked one at a time; MiniLM 21% vs 21% (one sentence), 14% vs
            14% (two) and 12% vs 9% (four).
        tag_alpha: with objective "tag", the weight α of the L1 term, >= 0 and finite
            (default 0.01, `objectives.TAG_ALPHA`).
    """

    token_match: str = "cosine"
    tag_alpha: float = TAG_ALPHA

    def validate(self) -> TextMatchingConfig:
        """Check every setting (those of `GradientMatchingConfig` too); return the config.

        Returns:
            This config, unchanged.

        Raises:
            GradleakError: as `GradientMatchingConfig.validate`.
            GradleakError: when `admm` is set, `token_match` is not one of its choices, or
                `tag_alpha` is negative or not finite.
            GradleakError: when image priors, group consistency or a learned start are
                asked for.
        """
        if self.admm:
            raise GradleakError(
                "text attacks read gradients and FedAvg weight differences, not FedADMM "
                "increments; drop admm"
            )
        image_only = {
            "priors": bool(self.priors),
            "group_consistency": bool(self.group_consistency),
            "init learned:PATH": self.init.startswith("learned"),
        }
        for name, given in image_only.items():
            if given:
                raise GradleakError(
                    f"{name} applies to image attacks; text attacks take none, so drop it"
                )
        super().validate()
        if self.token_match not in TOKEN_MATCHES:
            raise GradleakError(
                f"token_match {self.token_match!r} is not one of: {', '.join(TOKEN_MATCHES)}"
            )
        if not (self.tag_alpha >= 0 and math.isfinite(self.tag_alpha)):
            raise GradleakError(
                f"tag_alpha must be zero or positive and finite, got {self.tag_alpha}"
            )
        return self


@dataclass(frozen=True)
class TokenMapping:
    """What turns one update's optimised embeddings into token ids.

    Attributes:
        model: the server's text model (its embeddings and vocabulary).
        candidates: the ids a position may take (`nearest.candidate_ids`).
        leaked: how many tokens the update's token set held, or None when it was unreadable.
        mask: B×L attention mask (all ones without granted lengths).
        lengths_granted: the threat model granted the sequences' lengths.
        pin_sep: [SEP] sits at each row's last attended position.
        match: "cosine" or "layer_input".
    """

    model: nn.Module
    candidates: torch.Tensor
    leaked: int | None
    mask: torch.Tensor
    lengths_granted: bool
    pin_sep: bool
    match: str

    def tokens(self, inputs: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """B×L ids from one trial's inputs B×L×(H + 1), and how many [MASK]s were restored.

        Args:
            inputs: the kept trial's embeddings with their mask channel.
            labels: masked-language modelling: the soft labels' argmax per position (B×L;
                the vocabulary's size means "not in the loss"); None otherwise.
        """
        hidden = inputs.shape[-1] - 1
        ids = nearest_tokens(
            inputs[..., :hidden],
            self.model,
            self.candidates,
            self.mask,
            pin_sep=self.pin_sep,
            match=self.match,
        )
        if labels is None:
            return ids, 0
        vocabulary = self.model.vocabulary
        labels = labels.to(ids.device)
        restore = (ids == vocabulary.mask_id) & (labels < vocabulary.size)
        return torch.where(restore, labels, ids), int(restore.sum())


class TextProblem(MatchingProblem):
    """A matching problem on candidate embeddings, with what maps its result to tokens."""

    def __init__(self, *args: Any, mapping: TokenMapping, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mapping = mapping


class TextMatchingAttack(GradientMatchingAttack):
    """Gradient matching on a text model's input embeddings, returning token ids.

    Args:
        name: the attack's name, for errors and reports.
        config: its hyper-parameters.

    Raises:
        GradleakError: when `config` is invalid (`TextMatchingConfig.validate`).
    """

    config: TextMatchingConfig

    def with_options(self, options: Mapping[str, Any]) -> TextMatchingAttack:
        """A copy with hyper-parameters overridden (unknown keys are errors).

        Args:
            options: fields of `TextMatchingConfig` mapped to new values.

        Returns:
            A new attack of the same name; this one is left unchanged.

        Raises:
            GradleakError: when a key is not a field, a value does not have or convert to
                the field's type, or the new config is invalid.
        """
        return TextMatchingAttack(
            self.name, replace_checked(self.config, options, f"attack '{self.name}' options")
        )

    def check_model(self, model: nn.Module, data_shape: tuple[int, ...], batch_size: int) -> None:
        """Refuse a model that is not a text model, or inputs it does not take.

        Raises:
            GradleakError: naming what to use instead.
        """
        text_model = check_text_model(model, self.name)
        if len(data_shape) != 2 or data_shape[1] != text_model.hidden_size:
            raise GradleakError(
                f"attack '{self.name}' optimises L × {text_model.hidden_size} embeddings for "
                f"{text_model.model_name}, but the data's shape is {tuple(data_shape)}"
            )
        if data_shape[0] > text_model.max_length:
            raise GradleakError(
                f"sequences of {data_shape[0]} tokens exceed the {text_model.max_length} "
                f"positions of {text_model.model_name}; attack shorter sentences"
            )

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
        """Recover the token ids (and labels) behind one shared update.

        As `GradientMatchingAttack.reconstruct`, on dummy embeddings: the observer is given
        the trials' embeddings (floating, with their mask channel) while the run goes on.

        Args:
            update: the shared gradient or FedAvg weight difference (the mean over users).
            model: the server's text model (left unchanged).
            knowledge: the threat model: data_shape (L, H), batch size, users, labels and
                sequence lengths if granted, local training.
            seed: seeds the dummy embeddings and soft labels.
            observer: the engine's callback hook; None: nothing watches.
            progress: show a progress bar on a terminal.

        Returns:
            images: B×L int64 token ids ([CLS] … [SEP], then padding); labels: the class
            labels (classification) or None (masked-language modelling); the matching
            loss, status and history of the kept trial; details: the token set's size, the
            lengths' grant, the token comparison and the [MASK]s restored.

        Raises:
            GradleakError: a model that is not a text model or data that does not fit it,
                and everything `GradientMatchingAttack.reconstruct` raises.
        """
        self.check_model(model, knowledge.data_shape, knowledge.batch_size)
        return super().reconstruct(
            update, model, knowledge, seed=seed, observer=observer, progress=progress
        )

    def reconstruct_many(
        self,
        updates: Sequence[SharedUpdate],
        model: nn.Module,
        knowledge: Knowledge,
        *,
        seed: int = 0,
        progress: bool = True,
    ) -> list[Reconstruction]:
        """Attack several updates one after another (each has its own token set).

        Returns:
            One reconstruction per update, in order; after Ctrl-C the list stops at the
            interrupted update.

        Raises:
            GradleakError: as `reconstruct`, for any of the updates.
        """
        results = []
        for update in updates:
            one = self.reconstruct(update, model, knowledge, seed=seed, progress=progress)
            results.append(one)
            if one.interrupted:
                break
        return results

    def _labels_for(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge
    ) -> tuple[LabelStrategy, torch.Tensor | None]:
        if getattr(model, "task", None) != "mlm":
            return super()._labels_for(update, model, knowledge)
        if self.config.label_strategy not in (AUTO, "optimize"):
            raise GradleakError(
                f"label strategy '{self.config.label_strategy}' reads one class per sentence, "
                "but masked-language modelling has a label per masked position; use "
                "'optimize' (or 'auto')"
            )
        return LABEL_STRATEGIES["optimize"], None

    def _soft_label_shape(self, problem: MatchingProblem, knowledge: Knowledge) -> tuple[int, ...]:
        assert isinstance(problem, TextProblem)
        model = problem.mapping.model
        if model.task == "mlm":  # per position: the tokens, and "not in the loss"
            return (knowledge.data_shape[0], model.vocabulary.size + 1)
        return super()._soft_label_shape(problem, knowledge)

    def _problem(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge, replay: Replay
    ) -> MatchingProblem:
        text_model = check_text_model(model, self.name)
        cfg = self.config
        # The end of every sequence is known with the lengths, and for one sequence (its
        # padded length is its length).
        pin_sep = knowledge.sequence_lengths is not None or knowledge.batch_size == 1
        leaked = token_set(update, text_model)
        mapping = TokenMapping(
            model=text_model,
            candidates=candidate_ids(text_model, leaked),
            leaked=None if leaked is None else int(leaked.numel()),
            mask=attention_mask(knowledge),
            lengths_granted=knowledge.sequence_lengths is not None,
            pin_sep=pin_sep,
            match=cfg.token_match,
        )
        objective = get_objective(cfg.objective)
        if cfg.objective == "tag":
            objective = partial(tag_distance, alpha=cfg.tag_alpha)
        modality = get_modality(knowledge.modality)
        return TextProblem(
            embedding_replica(text_model, knowledge.model_mode, pin_sep=pin_sep),
            update.tensors,
            objective,
            cfg.tv_for(knowledge.data_shape, modality),
            replay,
            prior=modality.prior,
            mapping=mapping,
        )

    def _initial(
        self,
        problem: MatchingProblem,
        knowledge: Knowledge,
        fixed_labels: torch.Tensor | None,
        seed: int,
        seeded: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dummy embeddings K×B×L×H with their mask channel, and the fixed labels or soft
        labels (standard normal logits, `_soft_label_shape` per sentence), drawn from `seed`
        (`seeded` is always None: the config refuses a learned start)."""
        k, b = self.config.restarts, knowledge.batch_size
        generator = torch.Generator().manual_seed(seed)
        modality = get_modality(knowledge.modality)
        shape = (k, b, *knowledge.data_shape)
        embeddings = modality.initial_inputs(self.config.init, shape, generator)
        inputs = with_mask(embeddings, attention_mask(knowledge))
        if fixed_labels is not None:
            return inputs, fixed_labels
        soft = self._soft_label_shape(problem, knowledge)
        # Drawn on the CPU generator (the same start on any device); the engine moves it.
        return inputs, torch.randn(k, b, *soft, generator=generator, device="cpu")

    def _reconstruction(
        self,
        result: TrialsResult,
        rows: range,
        strategy: LabelStrategy,
        problem: MatchingProblem,
        seconds: float,
        history: list[dict[str, float | int | None]],
    ) -> Reconstruction:
        base = super()._reconstruction(result, rows, strategy, problem, seconds, history)
        assert isinstance(problem, TextProblem)
        mapping = problem.mapping
        mlm = mapping.model.task == "mlm"
        ids, restored = mapping.tokens(base.images, base.labels if mlm else None)
        details = dict(base.details)
        details.update(
            token_set="unreadable" if mapping.leaked is None else mapping.leaked,
            sequence_lengths="granted" if mapping.lengths_granted else "not granted",
            token_match=mapping.match,
        )
        if mlm:
            details["masks_restored"] = restored
        return dataclasses.replace(
            base, images=ids, labels=None if mlm else base.labels, details=details
        )
