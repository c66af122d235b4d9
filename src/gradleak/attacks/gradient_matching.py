"""Gradient-matching attacks (DLG, iDLG, Inverting Gradients) built from shared parts."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradleak.attacks.labels import AUTO, LABEL_STRATEGIES, resolve_label_strategy
from gradleak.attacks.matching import MatchingProblem, attacker_model
from gradleak.attacks.memory import ensure_trials_fit
from gradleak.attacks.objectives import OBJECTIVES, get_objective
from gradleak.attacks.optimize import (
    Observer,
    TrialsResult,
    optimize_adam,
    optimize_lbfgs,
    trial_inputs,
)
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.config import replace_checked
from gradleak.data.normalize import pixel_bounds
from gradleak.errors import GradleakError
from gradleak.fl.update import SharedUpdate, UpdateKind
from gradleak.threat_model import Knowledge

# Inverting Gradients' total-variation weights: 1e-4 for CIFAR-scale images (the reference
# command-line default) and 1e-1 for ImageNet-scale images (its ImageNet ResNet examples).
SMALL_IMAGE_TV_WEIGHT = 1e-4
LARGE_IMAGE_TV_WEIGHT = 1e-1
LARGE_IMAGE_SIDE = 64  # images at least this tall and wide count as ImageNet-scale

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("randn", "uniform", "zeros")
LINE_SEARCHES = ("none", "strong_wolfe")


@dataclass(frozen=True)
class GradientMatchingConfig:
    """Every hyper-parameter of a gradient-matching attack; presets fill the papers' values."""

    objective: str = "cosine"
    tv_weight: float | None = None  # None: the per-dataset default above
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

    def tv_for(self, data_shape: tuple[int, int, int]) -> float:
        if self.tv_weight is not None:
            return self.tv_weight
        large = min(data_shape[1:]) >= LARGE_IMAGE_SIDE
        return LARGE_IMAGE_TV_WEIGHT if large else SMALL_IMAGE_TV_WEIGHT


class GradientMatchingAttack:
    """Finds inputs whose gradient on the server's model matches the shared gradient."""

    def __init__(self, name: str, config: GradientMatchingConfig) -> None:
        self.name = name
        self.config = config.validate()

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
        if update.kind is not UpdateKind.GRADIENT:
            raise GradleakError(
                f"attack '{self.name}' matches gradients but the update is a {update.kind.value}"
            )
        update.validate_for(model)
        strategy = resolve_label_strategy(cfg.label_strategy, knowledge)
        knowledge.require(strategy.requires, f"label strategy '{strategy.name}'")
        fixed_labels = strategy.recover(update, model, knowledge)
        if fixed_labels is not None:
            _check_labels(fixed_labels, knowledge)

        problem = MatchingProblem(
            attacker_model(model, knowledge.model_mode),
            update.tensors,
            get_objective(cfg.objective),
            cfg.tv_for(knowledge.data_shape),
        )
        k, b = cfg.restarts, knowledge.batch_size
        # Before allocating anything per trial: Adam stacks all K trials, L-BFGS runs one.
        self._check_memory(problem, knowledge, fixed_labels, 1 if cfg.optimizer == "lbfgs" else k)
        generator = torch.Generator().manual_seed(seed)
        images = _initial_images(cfg.init, (k, b, *knowledge.data_shape), generator)
        if fixed_labels is None:
            labels = torch.randn(k, b, knowledge.num_classes, generator=generator)
        else:
            labels = fixed_labels.long()
        log_every = cfg.log_every or max(1, cfg.iterations // 100)

        start = time.perf_counter()
        result = self._optimize(problem, images, labels, knowledge, log_every, observer, progress)
        seconds = time.perf_counter() - start

        best = result.best
        return Reconstruction(
            images=result.images[best],
            labels=result.labels[best],
            loss=float(result.losses[best]),
            iterations=result.iterations,
            seconds=seconds,
            history=result.history,
            trial_losses=[float(v) for v in result.losses],
            best_trial=best,
            loss_evaluations=result.loss_evaluations,
            label_strategy=strategy.name,
            labels_recovered=strategy.recovers,
            interrupted=result.interrupted,
            stopped=result.stopped,
            compiled=result.compiled,
            compile_seconds=result.compile_seconds,
            details={"tv_weight": problem.tv_weight, "log_every": log_every},
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
        bounds = pixel_bounds(knowledge.mean, knowledge.std) if cfg.boxed else None
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
        )


def _initial_images(init: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    makers = {
        "randn": lambda: torch.randn(shape, generator=generator),
        "uniform": lambda: torch.rand(shape, generator=generator) - 0.5,
        "zeros": lambda: torch.zeros(shape),
    }
    return makers[init]()


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
