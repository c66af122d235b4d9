"""Gradient-matching attacks (DLG, iDLG, Inverting Gradients) built from shared parts."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.memory import ensure_trials_fit
from gradleak.attacks.engine.trials import TrialsResult, best_trial, trial_inputs
from gradleak.attacks.labels import AUTO, LABEL_STRATEGIES, LabelStrategy, resolve_label_strategy
from gradleak.attacks.matching.objectives import OBJECTIVES, get_objective
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.settings import replace_checked
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.protocols import protocol_sharing
from gradleak.fl.replay import Replay
from gradleak.modalities import Modality, get_modality

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("randn", "uniform", "zeros")
LINE_SEARCHES = ("none", "strong_wolfe")


@dataclass(frozen=True)
class GradientMatchingConfig:
    """Every hyper-parameter of a gradient-matching attack; presets fill the papers' values."""

    objective: str = "cosine"
    tv_weight: float | None = None  # None: the modality's default (images: by size)
    optimizer: str = "adam"
    lr: float = 0.1
    iterations: int = 24_000
    restarts: int = 8
    signed: bool = True
    boxed: bool = True
    lr_decay: bool = True
    init: str = "randn"
    label_strategy: str = AUTO
    lbfgs_inner_iterations: int = 20
    line_search: str = "none"  # L-BFGS only: "none" (fixed step, as DLG) or "strong_wolfe"
    tolerance: float = 0.0
    log_every: int = 0  # 0: about 100 rows over the run
    compile: bool = False  # torch.compile the functional step; falls back when it cannot
    # DLG-ADMM / iDLG-ADMM: the update is a FedADMM increment Δ and −Δ/η (η the local
    # learning rate) is matched as if it were the gradient.
    admm: bool = False
    # signed, boxed and lr_decay apply to Adam; L-BFGS takes lr, line_search, tolerance.

    def validate(self) -> GradientMatchingConfig:
        choices = {
            "objective": (self.objective, tuple(OBJECTIVES)),
            "optimizer": (self.optimizer, OPTIMIZERS),
            "init": (self.init, INITS),
            "label_strategy": (self.label_strategy, (AUTO, *LABEL_STRATEGIES)),
            "line_search": (self.line_search, LINE_SEARCHES),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise GradleakError(f"{key} {value!r} is not one of: {', '.join(allowed)}")
        positive = {"lr": self.lr, "iterations": self.iterations, "restarts": self.restarts}
        positive["lbfgs_inner_iterations"] = self.lbfgs_inner_iterations
        for key, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise GradleakError(f"{key} must be positive and finite, got {value}")
        tv = 0.0 if self.tv_weight is None else self.tv_weight
        for key, value in {"tv_weight": tv, "tolerance": self.tolerance}.items():
            if not (value >= 0 and math.isfinite(value)):
                raise GradleakError(f"{key} must be zero or positive and finite, got {value}")
        if self.log_every < 0:
            raise GradleakError(f"log_every must be zero or positive, got {self.log_every}")
        return self

    def tv_for(self, data_shape: tuple[int, ...], modality: Modality) -> float:
        """The prior's weight: `tv_weight` if set, else the modality's default for the shape."""
        if self.tv_weight is not None:
            return self.tv_weight
        return modality.default_prior_weight(data_shape)


class GradientMatchingAttack:
    """Finds inputs whose gradient on the server's model matches the shared gradient."""

    def __init__(self, name: str, config: GradientMatchingConfig) -> None:
        self.name = name
        self.config = config.validate()

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """FedADMM increments for the -admm presets; gradients and FedAvg differences else."""
        if self.config.admm:
            return frozenset({UpdateKind.ADMM_INCREMENT})
        return frozenset({UpdateKind.GRADIENT, UpdateKind.WEIGHT_DELTA})

    def with_options(self, options: Mapping[str, Any]) -> GradientMatchingAttack:
        """A copy with hyper-parameters overridden (unknown keys are errors)."""
        return GradientMatchingAttack(
            self.name, replace_checked(self.config, options, f"attack '{self.name}' options")
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
        """Attack `update`, seeing only it, the server's `model` and the granted `knowledge`."""
        cfg = self.config
        update, replay = self._matched(update, model, knowledge)
        strategy, fixed_labels = self._labels_for(update, model, knowledge)
        problem = self._problem(update, model, knowledge, replay)
        k = cfg.restarts
        # Before allocating anything per trial: Adam stacks all K trials, L-BFGS runs one.
        self._check_memory(problem, knowledge, fixed_labels, 1 if cfg.optimizer == "lbfgs" else k)
        images, labels = self._start(knowledge, fixed_labels, seed)
        log_every = self._log_every()

        start = time.perf_counter()
        result = self._optimize(problem, images, labels, knowledge, log_every, observer, progress)
        seconds = time.perf_counter() - start
        rows = range(len(result.losses))  # an interrupted L-BFGS run has fewer trials
        return self._reconstruction(result, rows, strategy, problem, seconds, result.history)

    def reconstruct_many(
        self,
        updates: Sequence[SharedUpdate],
        model: nn.Module,
        knowledge: Knowledge,
        *,
        seed: int = 0,
        progress: bool = True,
    ) -> list[Reconstruction]:
        """Attack several clients' updates (one model, one threat model) at once.

        With Adam, the len(updates) × restarts trials run as one stacked computation, each
        trial matching its own update; update i gets what `reconstruct(updates[i], seed=seed)`
        gives, up to float rounding. L-BFGS attacks the updates one after another.
        `seconds` of each result is the whole batch's time; the history stays empty (the
        observer hook needs one ground truth).
        """
        cfg = self.config
        if not updates:
            return []
        if cfg.optimizer == "lbfgs":
            results = []
            for update in updates:
                one = self.reconstruct(update, model, knowledge, seed=seed, progress=progress)
                results.append(one)
                if one.interrupted:  # Ctrl-C ends the whole batch, not one update
                    break
            return results
        matched = [self._matched(u, model, knowledge) for u in updates]
        updates = [u for u, _ in matched]
        recovered = [self._labels_for(u, model, knowledge) for u in updates]
        strategy = recovered[0][0]
        problem = self._problem(updates[0], model, knowledge, matched[0][1])
        n, k = len(updates), cfg.restarts
        self._check_memory(problem, knowledge, recovered[0][1], n * k)
        starts = [self._start(knowledge, fixed, seed) for _, fixed in recovered]
        images = torch.cat([images for images, _ in starts])
        if recovered[0][1] is None:  # soft labels, optimised: K×B×classes per update
            labels = torch.cat([labels for _, labels in starts])
        else:  # one integer label row per trial
            labels = torch.cat([labels.expand(k, -1) for _, labels in starts])
        targets = {
            name: torch.stack([u.tensors[name] for u in updates]).repeat_interleave(k, dim=0)
            for name in problem.names
        }
        start = time.perf_counter()
        result = self._optimize(
            problem, images, labels, knowledge, self._log_every(), None, progress, targets
        )
        seconds = time.perf_counter() - start
        return [
            self._reconstruction(result, range(i * k, (i + 1) * k), strategy, problem, seconds, [])
            for i in range(n)
        ]

    def _matched(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge
    ) -> tuple[SharedUpdate, Replay]:
        """Check the update; return what is matched against it and the replay behind it."""
        from gradleak.attacks.registry import check_readable

        update.validate_for(model)
        check_readable(self.name, self.reads, update.kind)
        who = f"attack '{self.name}' on a {update.kind.value}"
        replay = protocol_sharing(update.kind).replay(knowledge, who)
        return replay.read(update), replay

    def _labels_for(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge
    ) -> tuple[LabelStrategy, torch.Tensor | None]:
        """The label strategy and its labels (None: the attack optimises them)."""
        strategy = resolve_label_strategy(self.config.label_strategy, knowledge)
        knowledge.require(strategy.requires, f"label strategy '{strategy.name}'")
        # A weight difference points against the summed gradients: −Δ has their signs.
        signs = update if update.kind is UpdateKind.GRADIENT else update.scaled(-1.0, update.kind)
        fixed_labels = strategy.recover(signs, model, knowledge)
        if fixed_labels is not None:
            _check_labels(fixed_labels, knowledge)
            fixed_labels = fixed_labels.long()
        return strategy, fixed_labels

    def _problem(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge, replay: Replay
    ) -> MatchingProblem:
        modality = get_modality(knowledge.modality)
        return MatchingProblem(
            attacker_model(model, knowledge.model_mode),
            update.tensors,
            get_objective(self.config.objective),
            self.config.tv_for(knowledge.data_shape, modality),
            replay,
            prior=modality.prior,
        )

    def _start(
        self, knowledge: Knowledge, fixed_labels: torch.Tensor | None, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial images (K×B×C×H×W) and labels (B integers, or K×B×classes soft)."""
        k, b = self.config.restarts, knowledge.batch_size
        generator = torch.Generator().manual_seed(seed)
        modality = get_modality(knowledge.modality)
        images = modality.initial_inputs(self.config.init, (k, b, *knowledge.data_shape), generator)
        if fixed_labels is not None:
            return images, fixed_labels
        return images, torch.randn(k, b, knowledge.num_classes, generator=generator)

    def _log_every(self) -> int:
        return self.config.log_every or max(1, self.config.iterations // 100)

    def _reconstruction(
        self,
        result: TrialsResult,
        rows: range,
        strategy: LabelStrategy,
        problem: MatchingProblem,
        seconds: float,
        history: list[dict[str, float | int | None]],
    ) -> Reconstruction:
        """The best of the trials in `rows` as one update's reconstruction."""
        losses = result.losses[rows.start : rows.stop]
        best = best_trial(losses)
        row = rows.start + best
        steps = result.trial_iterations[rows.start : rows.stop] or [result.iterations]
        return Reconstruction(
            images=result.images[row],
            labels=result.labels[row],
            loss=float(losses[best]),
            iterations=max(steps),
            seconds=seconds,
            history=history,
            trial_losses=[float(v) for v in losses],
            best_trial=best,
            loss_evaluations=result.loss_evaluations
            if len(rows) == len(result.losses)
            else sum(steps) + len(rows),
            label_strategy=strategy.name,
            labels_recovered=strategy.recovers,
            interrupted=result.interrupted,
            stopped=result.stopped,
            compiled=result.compiled,
            compile_seconds=result.compile_seconds,
            details={
                "tv_weight": problem.tv_weight,
                "log_every": self._log_every(),
                "replay": problem.replay.describe(),
            },
        )

    @staticmethod
    def _check_memory(
        problem: MatchingProblem,
        knowledge: Knowledge,
        fixed_labels: torch.Tensor | None,
        trials: int,
    ) -> None:
        b = knowledge.batch_size
        sample = torch.zeros(1, b, *knowledge.data_shape)
        if fixed_labels is None:
            labels = torch.zeros(1, b, knowledge.num_classes)
        else:
            labels = fixed_labels.long()
        inputs = trial_inputs(sample, labels, problem, None, None)
        ensure_trials_fit(problem, sample, inputs, trials)

    def _optimize(
        self,
        problem: MatchingProblem,
        images: torch.Tensor,
        labels: torch.Tensor,
        knowledge: Knowledge,
        log_every: int,
        observer: Observer | None,
        progress: bool,
        targets: Mapping[str, torch.Tensor] | None = None,
    ) -> TrialsResult:
        cfg = self.config
        if cfg.optimizer == "lbfgs":
            return optimize_lbfgs(
                problem,
                images,
                labels,
                lr=cfg.lr,
                steps=cfg.iterations,
                inner_iterations=cfg.lbfgs_inner_iterations,
                line_search=None if cfg.line_search == "none" else cfg.line_search,
                tolerance=cfg.tolerance,
                log_every=log_every,
                observer=observer,
                progress=progress,
                compile=cfg.compile,
            )
        bounds = get_modality(knowledge.modality).bounds(knowledge) if cfg.boxed else None
        return optimize_adam(
            problem,
            images,
            labels,
            lr=cfg.lr,
            iterations=cfg.iterations,
            signed=cfg.signed,
            bounds=bounds,
            lr_decay=cfg.lr_decay,
            log_every=log_every,
            observer=observer,
            progress=progress,
            tolerance=cfg.tolerance,
            compile=cfg.compile,
            check_memory=False,  # checked before the trials were allocated
            targets=targets,
        )


def _check_labels(labels: torch.Tensor, knowledge: Knowledge) -> None:
    if labels.shape != (knowledge.batch_size,):
        raise GradleakError(
            f"label strategy gave {tuple(labels.shape)} labels for a batch of "
            f"{knowledge.batch_size}"
        )
    if labels.min() < 0 or labels.max() >= knowledge.num_classes:
        raise GradleakError(
            f"labels must lie in 0..{knowledge.num_classes - 1}; got {labels.tolist()}"
        )
