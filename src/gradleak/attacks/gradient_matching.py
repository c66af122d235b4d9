"""Gradient-matching attacks (DLG, iDLG, Inverting Gradients) built from shared parts."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.budget import (
    BudgetEstimate,
    check_budget,
    lbfgs_estimate,
    measure_evaluation_seconds,
    stacked_sample,
)
from gradleak.attacks.engine.compiling import compile_mode, plan_compile
from gradleak.attacks.engine.consistency import DEFAULT_EVERY, DEFAULT_WEIGHT, GroupConsistency
from gradleak.attacks.engine.curvature import CurvatureHistory
from gradleak.attacks.engine.hooks import Observer
from gradleak.attacks.engine.lbfgs import optimize_lbfgs
from gradleak.attacks.engine.line_search import LINE_SEARCHES as LINE_SEARCH_RUNS
from gradleak.attacks.engine.memory import run_in_groups, trial_groups
from gradleak.attacks.engine.step import Notice, TrialInputs, print_notice
from gradleak.attacks.engine.trials import TrialsResult, UpdateObservers, select, trial_inputs
from gradleak.attacks.labels import AUTO, LABEL_STRATEGIES, LabelStrategy, resolve_label_strategy
from gradleak.attacks.matching.objectives import OBJECTIVES, get_objective
from gradleak.attacks.matching.priors import (
    BatchNormPrior,
    PriorSpec,
    bn_weight,
    client_statistics,
    client_statistics_readable,
    parse_priors,
    prior_of,
    server_statistics,
)
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.attacks.priors.latent import LATENT_WEIGHT, GeneratorDecoder, LatentDecoder
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.settings import replace_checked
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.fl.protocols import protocol_sharing
from gradleak.fl.replay import Replay
from gradleak.modalities import Modality, get_modality
from gradleak.modalities.image import TV_FORMS

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("randn", "uniform", "zeros")
LEARNED_INIT = "learned"  # init "learned:INV.pt": the trials start at a learned inverter's output
LEARNED_SPREAD = 0.1  # the noise added to that start for every restart after the first
GIAS_LR_FACTOR = 0.1  # GIAS's second half: the step size relative to `lr`
LINE_SEARCHES = tuple(LINE_SEARCH_RUNS)


@dataclass(frozen=True)
class GradientMatchingConfig:
    """Every hyper-parameter of a gradient-matching attack; presets fill the papers' values.

    The attack draws `restarts` trials of dummy inputs (and, without fixed labels, soft
    labels) and moves them so that the update they would produce matches the shared one:
    the loss is `objective`(replayed update, shared update) + weight × the modality's prior
    (images: total variation). The trial returned is the one whose final inputs have the
    smallest gradient-matching distance, without the prior (Inverting Gradients' rule); a
    diverged trial never wins over one that did not diverge. Both optimisers run all trials
    at once as one stacked computation (in groups one after another when they do not fit
    in free memory together).

    Attributes:
        objective: the distance between the replayed and the shared update, both
            optimisers: "cosine" (1 − cosine similarity of all tensors as one vector,
            Inverting Gradients) or "l2" (sum of squared differences, DLG). Default
            "cosine".
        tv_weight: the weight of the modality's prior (images: anisotropic total
            variation) in the loss, both optimisers; >= 0 and finite. None (default): the
            modality's default for the data's shape (images: 0.05 below 64 pixels a side,
            1e-1 from 64 on).
        optimizer: "adam" (default) or "lbfgs" (per-trial curvature history, step size and
            line search); either stacks all trials in one computation.
        lr: the step size, > 0 and finite. Adam: the base step size of every trial
            (default 0.1), divided by 10 at 3/8, 5/8 and 7/8 of the run with `lr_decay`.
            L-BFGS: torch's `lr`, the step length along each search direction (with
            "strong_wolfe", the length the line search starts from).
        iterations: optimisation steps per trial, > 0 (default 24,000). Adam: steps per
            trial. L-BFGS: outer steps per trial, each up to `lbfgs_inner_iterations`
            L-BFGS iterations; a trial also ends after 10 outer steps without a better
            loss. Also sets the default `log_every` and snapshot iterations.
        restarts: trials K, > 0 (default 8), each from its own dummy inputs; the one with
            the smallest gradient-matching distance (no prior) at its final inputs is kept
            (a diverged trial never wins over one that did not diverge).
        signed: Adam only: step with the sign of the gradient (Inverting Gradients'
            signed Adam). Default True.
        boxed: Adam only: after every step, clamp the inputs to the modality's box of
            valid values (images: the normalised values of pixels 0 and 1, per channel).
            Default True.
        lr_decay: Adam only: multiply the step size by 0.1 at 3/8, 5/8 and 7/8 of each
            trial's iterations. Default True.
        init: how the dummy inputs start, both optimisers: "randn" (standard normal,
            default), "uniform" (uniform in [−0.5, 0.5)) or "zeros", drawn in the
            attacked (normalised) space from `seed`; or "learned:INV.pt": a learned
            inverter's reconstruction (`gradleak train-inverter`), restarts after the first
            with standard-normal noise × 0.1 added.
        label_strategy: where the labels matched with come from, both optimisers: "auto"
            (default: "known" when the labels are granted, else "analytic" for batch 1,
            else "optimize"), "known", "analytic", "optimize" (soft labels optimised with
            the inputs), "sign", "yin" or "count" (see `gradleak.attacks.labels`).
        lbfgs_inner_iterations: L-BFGS only: torch's `max_iter`, the L-BFGS iterations
            of one outer step, > 0 (default 20).
        lbfgs_max_hours: L-BFGS only: before any work, the run's time is estimated
            (stacks × iterations × the most evaluations of one step × the measured time
            of one stacked evaluation; `gradleak.attacks.engine.budget`) and a run whose estimate
            exceeds this many hours is refused; >= 0 and finite, 0: no bound and no
            estimate (default 1).
        line_search: L-BFGS only: "none" (default; a fixed step, as DLG), "strong_wolfe"
            (a strong-Wolfe search with cubic interpolation) or "unit_first" (the step `lr`
            when it lowers the loss, else the strong-Wolfe search from the same point;
            `gradleak.attacks.engine.line_search`).
        tolerance: a trial stops once its matching loss is at most this, >= 0 and finite
            (default 0: only an exact match stops). Adam checks it every `log_every`
            iterations; L-BFGS after every outer step. Trials whose loss is not finite
            stop too.
        log_every: iterations between history rows and observer calls, >= 0; 0
            (default): iterations // 100, at least 1 (about 100 rows). Adam also checks
            `tolerance` at these iterations.
        compile: torch.compile the functional step, both optimisers: True ("on"), False
            ("off", default) or "auto" (when the run's planned evaluations repay the
            expected compile time, `gradleak.attacks.engine.compiling`); where compiling
            fails the attack says so in one line and runs uncompiled.
        priors: the prior terms of the loss, as `--prior` spells them (`parse_priors`):
            "tv[:W]" (total variation), "bn[:W]", "bn-server[:W]", "bn-client[:W]"
            (batch-norm statistics), "gan:PATH" (a trained generator's latent searched,
            GGL) and "gias:PATH" (the latent searched for the first half of the
            iterations, then each image's generator fine-tuned, GIAS). Empty (default):
            the modality's prior weighted by `tv_weight`. With a generative prior the
            optimisers move latents (unsigned Adam, unboxed) and the images are decoded.
        group_consistency: 0 (default) or the number of seeds, >= 2, that form one group
            pulled toward its registered mean (GradInversion); Adam only, and it must equal
            `restarts`.
        group_weight: the group-consistency weight, > 0 (default 0.01).
        group_every: iterations between refreshes of the group's mean, > 0 (default 100).
        latent_weight: gan/gias only: the weight of the latent's KL term, >= 0 (default
            0.01).
        tv_form: the form of the total-variation prior: "auto" (default: the modality's
            own prior; images: the interior form), "interior" (differences between neighbouring
            pixels inside the image only) or "padded" (the image zero-padded on its right
            and bottom, which also pulls the last row and column toward the mean colour;
            `gradleak.modalities.image.TV_FORMS`).
        keep_best: Adam only: return each trial's lowest-loss iterate (loss with the
            prior, as the steps compute it; the final iterate is scored too) instead of its
            last one. Default False (the last iterate).
        admm: read FedADMM increments Δ (the -admm presets). Default False: gradients and
            FedAvg weight differences are read.
        admm_reading: how an increment Δ is read, with `admm` only: "replay" (default;
            the FedADMM client's round replayed on the candidate data from its state, ρ
            and local training as the attacker believes them, and −Δ'/η matched with
            −Δ/η, η the believed local rate: DLG-ADMM as published) or "gradient" (−Δ/η
            matched with one plain gradient per user, which is 2∇f in a first round of
            one step, so the L2 distance has no zero at the truth; kept for contrast).
    """

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
    lbfgs_max_hours: float = 1.0  # L-BFGS only: refuse runs estimated longer (0: no bound)
    line_search: str = "none"  # L-BFGS only: "none" (fixed step, as DLG), or a search
    tolerance: float = 0.0
    log_every: int = 0  # 0: about 100 rows over the run
    # torch.compile the functional step: true, false or "auto" (`engine.compiling`); falls
    # back when it cannot
    compile: bool | str = False
    # DLG-ADMM / iDLG-ADMM: the update is a FedADMM increment Δ, read as `admm_reading` says
    # (a name of the FedADMM protocol's readings).
    admm: bool = False
    admm_reading: str = "replay"
    # Priors (`gradleak.attacks.matching.priors`): empty, the modality's prior weighted by
    # tv_weight; else exactly the named ones (tv[:W], bn[:W], bn-server, bn-client, gan:PATH,
    # gias:PATH).
    priors: tuple[str, ...] = ()
    group_consistency: int = 0  # >= 2: the restarts form one group pulled together (Adam)
    group_weight: float = DEFAULT_WEIGHT
    group_every: int = DEFAULT_EVERY
    latent_weight: float = LATENT_WEIGHT  # gan/gias: the latent's KL term
    tv_form: str = AUTO  # auto: the modality's prior; else a name of image.TV_FORMS
    keep_best: bool = False  # Adam: each trial's lowest-loss iterate instead of its last
    # signed, boxed and lr_decay apply to Adam; L-BFGS takes lr, line_search, tolerance.

    def validate(self) -> GradientMatchingConfig:
        """Check every setting; return the config itself.

        Returns:
            This config, unchanged.

        Raises:
            GradleakError: when `objective`, `optimizer`, `init`, `label_strategy` or
                `line_search` is not one of its choices.
            GradleakError: when `lr`, `iterations`, `restarts` or `lbfgs_inner_iterations`
                is not positive and finite.
            GradleakError: when `tv_weight`, `tolerance` or `lbfgs_max_hours` is negative
                or not finite.
            GradleakError: when `log_every` is negative.
            GradleakError: when `compile` is not true, false, "on", "off" or "auto".
            GradleakError: when `admm_reading` is not one of the FedADMM readings, or is
                not "replay" without `admm`.
        """
        admm_readings = protocol_sharing(UpdateKind.ADMM_INCREMENT).readings
        choices = {
            "objective": (self.objective, tuple(OBJECTIVES)),
            "optimizer": (self.optimizer, OPTIMIZERS),
            "init": (self.init, (*INITS, f"{LEARNED_INIT}:PATH")),
            "label_strategy": (self.label_strategy, (AUTO, *LABEL_STRATEGIES)),
            "line_search": (self.line_search, LINE_SEARCHES),
            "admm_reading": (self.admm_reading, tuple(r.name for r in admm_readings)),
            "tv_form": (self.tv_form, (AUTO, *TV_FORMS)),
        }
        if not self.admm and self.admm_reading != admm_readings[0].name:
            from gradleak.attacks.registry import readers_of  # the registry imports presets

            readers = " or ".join(readers_of(UpdateKind.ADMM_INCREMENT))
            raise GradleakError(
                f"admm_reading applies to FedADMM increments only; drop it or use {readers}"
            )
        for key, (value, allowed) in choices.items():
            if key == "init" and _learned_path(value):
                continue  # learned:PATH, its file checked when the attack runs
            if value not in allowed:
                raise GradleakError(f"{key} {value!r} is not one of: {', '.join(allowed)}")
        positive = {"lr": self.lr, "iterations": self.iterations, "restarts": self.restarts}
        positive["lbfgs_inner_iterations"] = self.lbfgs_inner_iterations
        for key, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise GradleakError(f"{key} must be positive and finite, got {value}")
        tv = 0.0 if self.tv_weight is None else self.tv_weight
        bounds = {"tv_weight": tv, "tolerance": self.tolerance}
        bounds["lbfgs_max_hours"] = self.lbfgs_max_hours
        for key, value in bounds.items():
            if not (value >= 0 and math.isfinite(value)):
                raise GradleakError(f"{key} must be zero or positive and finite, got {value}")
        if self.log_every < 0:
            raise GradleakError(f"log_every must be zero or positive, got {self.log_every}")
        compile_mode(self.compile)  # true, false, on, off or auto
        self._validate_priors()
        return self

    def _validate_priors(self) -> None:
        """The prior specs, their combinations, group consistency and the latent's weight."""
        specs = parse_priors(self.priors)
        generative = prior_of(specs, "generative")
        if specs and self.tv_weight and prior_of(specs, "tv") is None:
            raise GradleakError(
                f"tv_weight {self.tv_weight:g} weighs the TV prior, which --prior leaves out; "
                f"add --prior tv:{self.tv_weight:g} (or drop --tv)"
            )
        if generative is not None and _learned_path(self.init):
            raise GradleakError(
                f"--prior {generative} searches a generator's latent, so the learned start "
                f"{self.init} would be ignored; drop one of them"
            )
        if generative is not None and generative.info.fine_tunes and self.iterations < 2:
            raise GradleakError(
                f"--prior {generative} needs at least 2 iterations (half search the latent, "
                f"half fine-tune the generator), got {self.iterations}"
            )
        if not (self.latent_weight >= 0 and math.isfinite(self.latent_weight)):
            raise GradleakError(f"latent_weight must be zero or positive, got {self.latent_weight}")
        if not self.group_consistency:
            return
        if self.group_consistency < 2:
            raise GradleakError(
                f"group consistency needs at least 2 seeds, got {self.group_consistency}"
            )
        if self.optimizer != "adam":
            raise GradleakError(
                f"group consistency needs the Adam optimiser, and this attack uses "
                f"{self.optimizer}; use --attack ig (or the option optimizer: adam)"
            )
        if self.restarts != self.group_consistency:
            raise GradleakError(
                f"group consistency of {self.group_consistency} seeds needs restarts "
                f"{self.group_consistency}, got {self.restarts}; drop --restarts"
            )
        if not (self.group_weight > 0 and math.isfinite(self.group_weight)):
            raise GradleakError(f"group_weight must be positive, got {self.group_weight}")
        if self.group_every < 1:
            raise GradleakError(f"group_every must be positive, got {self.group_every}")

    def tv_for(self, data_shape: tuple[int, ...], modality: Modality) -> float:
        """The prior's weight: `tv_weight` if set, else the modality's default for the shape."""
        if self.tv_weight is not None:
            return self.tv_weight
        return modality.default_prior_weight(data_shape)


class GradientMatchingAttack:
    """Finds inputs whose gradient on the server's model matches the shared gradient.

    DLG, iDLG, Inverting Gradients and the -admm variants are presets of this one attack
    (`presets.py`). The attacker replays what the clients computed (`fl.replay`: one
    gradient, FedAvg's unrolled local steps, FedADMM's round from the client's state, the
    mean over users) on candidate inputs and
    optimises the candidates until the replayed update matches the shared one.

    Args:
        name: the attack's name, for errors and reports.
        config: its hyper-parameters.

    Raises:
        GradleakError: when `config` is invalid (`GradientMatchingConfig.validate`).
    """

    def __init__(self, name: str, config: GradientMatchingConfig) -> None:
        self.name = name
        self.config = config.validate()

    @property
    def reads(self) -> frozenset[UpdateKind]:
        """FedADMM increments for the -admm presets; gradients and FedAvg differences else.

        Returns:
            {ADMM_INCREMENT} with `config.admm`, else {GRADIENT, WEIGHT_DELTA}.
        """
        if self.config.admm:
            return frozenset({UpdateKind.ADMM_INCREMENT})
        return frozenset({UpdateKind.GRADIENT, UpdateKind.WEIGHT_DELTA})

    def with_options(self, options: Mapping[str, Any]) -> GradientMatchingAttack:
        """A copy with hyper-parameters overridden (unknown keys are errors).

        Args:
            options: fields of `GradientMatchingConfig` mapped to new values (e.g.
                {"iterations": 300, "optimizer": "lbfgs"}); a float field also takes an
                integer or a numeric string.

        Returns:
            A new attack of the same name; this one is left unchanged.

        Raises:
            GradleakError: when a key is not a field of `GradientMatchingConfig`.
            GradleakError: when a value does not have, or convert to, the field's type.
            GradleakError: when the new config is invalid (`GradientMatchingConfig.validate`).
        """
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
        """Attack `update`, seeing only it, the server's `model` and the granted `knowledge`.

        The update is read as the protocol that shares its kind says (a FedADMM increment
        Δ: its client replayed, or with `admm_reading` "gradient" −Δ/η as one gradient),
        the labels come from the label strategy, and K = `restarts` trials of
        dummy inputs K×B×C×H×W are optimised against it (loss: distance + weighted prior);
        the trial with the smallest finite gradient-matching distance, without the prior,
        at its final inputs is returned, a diverged trial only when every trial diverged.
        The result's `status` says whether it is an attack result (ok) or diverged, made
        no progress or was interrupted. Ctrl-C ends the optimisation early and returns
        what it has (`interrupted` is set).

        Args:
            update: the shared update (the mean over `knowledge.num_users` users): a
                gradient or FedAvg weight difference, or with `config.admm` a FedADMM
                increment; one tensor per named parameter of `model`.
            model: the server's model the update was computed at; the attack runs on its
                own replica in `knowledge.model_mode`, so `model` is left unchanged.
            knowledge: what the threat model grants: data shape, classes, batch size B,
                users, normalisation, labels if granted, the belief of the local training
                (FedAvg, FedADMM) and the batch-norm mode.
            seed: seeds the dummy inputs and the initial soft labels (default 0).
            observer: called every `log_every` iterations with (iteration, per-trial
                losses, per-trial inputs) and may add history columns or stop the attack
                (see `gradleak.attacks.engine.hooks`); None: nothing watches.
            progress: show a progress bar on a terminal (default True).

        Returns:
            The kept trial's inputs (B×C×H×W, normalised space) and labels (B integers:
            the fixed labels, or the argmax of its optimised soft labels), its distance,
            every trial's final distance, the status of the result and of every trial,
            the steps it took, the history rows, and details (`tv_weight`, `log_every`,
            `replay`).

        Raises:
            GradleakError: when the update's names or shapes do not fit `model`, or it
                holds NaN or Inf.
            GradleakError: when the attack does not read the update's kind.
            GradleakError: when a weight difference or FedADMM increment comes without a
                belief of the local training in `knowledge`, or a FedADMM increment after
                round 1 without the clients' state (the "replay" reading).
            GradleakError: when the label strategy needs what is not granted (known
                labels; batch 1 for "analytic") or cannot read the update ("sign", "yin",
                "count" on a weight difference or FedADMM increment; "count" without a
                classifier bias).
            GradleakError: when the strategy's labels are not B labels in 0..classes−1.
            GradleakError: when not even one trial (or the trials' inputs alone) would fit
                in free memory; more trials than fit run in groups, one after another.
            GradleakError: with L-BFGS, when the run's estimated time exceeds
                `lbfgs_max_hours`.
        """
        cfg = self.config
        strategy, fixed_labels, problem = self._prepare(update, model, knowledge)
        k = cfg.restarts
        # Before allocating anything per trial: both optimisers stack the K trials, in
        # groups one after another when they do not fit at once.
        groups = self._check_memory(problem, knowledge, fixed_labels, k)
        self._check_budget(problem, knowledge, fixed_labels, stack=len(groups[0]))
        seeded = self._learned_start(update, model, knowledge)
        return self._attack(
            problem, strategy, fixed_labels, knowledge, seed, observer, progress, seeded, groups
        )

    def _attack(
        self,
        problem: MatchingProblem,
        strategy: LabelStrategy,
        fixed_labels: torch.Tensor | None,
        knowledge: Knowledge,
        seed: int,
        observer: Observer | None,
        progress: bool,
        seeded: torch.Tensor | None = None,
        groups: list[range] | None = None,
    ) -> Reconstruction:
        """The optimisation of one update's prepared problem, after the up-front checks."""
        images, labels = self._initial(problem, knowledge, fixed_labels, seed, seeded)
        log_every = self._log_every()

        start = time.perf_counter()
        result = self._optimize_groups(
            groups or [range(len(images))],
            problem,
            images,
            labels,
            knowledge,
            log_every,
            observer,
            progress,
        )
        seconds = time.perf_counter() - start
        rows = range(len(result.losses))  # a run interrupted between groups has fewer trials
        return self._reconstruction(result, rows, strategy, problem, seconds, result.history)

    def reconstruct_many(
        self,
        updates: Sequence[SharedUpdate],
        model: nn.Module,
        knowledge: Knowledge | Sequence[Knowledge],
        *,
        seed: int | Sequence[int] = 0,
        progress: bool = True,
        observer: Observer | None = None,
        observers: Sequence[Observer | None] | None = None,
    ) -> list[Reconstruction]:
        """Attack several clients' updates (one model, one threat model) at once.

        With Adam, the len(updates) × restarts trials run as one stacked computation, each
        trial matching its own update; update i gets what `reconstruct(updates[i], seed=seed)`
        gives, up to float rounding; so do L-BFGS's, unless `observers` are given (then
        L-BFGS attacks the updates one after another). Trials that do not fit in free
        memory together run in groups of whole updates, one group after another.
        `seconds` of each result is the whole batch's time; the history stays empty unless
        `observers` are given.

        Args:
            updates: the updates, all of kinds this attack reads and all fitting `model`.
            model: the server's model they were computed at (left unchanged).
            knowledge: the threat model, the same for every update; or one per update, in
                order, that differ at most in the labels they grant (clients with their
                own labels under one threat model).
            seed: seeds every update's trials as `reconstruct` would (default 0); or one
                seed per update, in order.
            progress: show a progress bar on a terminal (default True).
            observer: the engine's callback hook, for hooks that read no ground truth
                (one truth does not fit several updates), e.g. `deadline_observer`. With
                Adam it sees every stacked trial; with L-BFGS each stacked trial in turn.
                A `StopAttack` ends the stack.
            observers: one observer per update (or None for an update nobody watches),
                instead of `observer`: each sees only its own update's trials, as it would
                in `reconstruct` (so it may score them against that update's truth), and
                each result keeps its own history. With Adam, an update whose observer
                raises `StopAttack` is no longer observed while its trials go on with the
                stack, which stops once every observed update has stopped.

        Returns:
            One reconstruction per update, in order; an empty list for no updates. Ctrl-C
            ends the batch: when it lands between groups of trials (or, one update after
            another, between updates), the list stops at the interrupted update.

        Raises:
            GradleakError: as `reconstruct`, for any of the updates.
            ValueError: `knowledge`, `seed` or `observers` not one per update, or both
                `observer` and `observers` given.
        """
        cfg = self.config
        if not updates:
            return []
        knowledges, trial_seeds, watchers = _per_update(len(updates), knowledge, seed, observers)
        if observer is not None and observers is not None:
            raise ValueError("give reconstruct_many an observer or observers, not both")
        knowledge = knowledges[0]
        one_by_one = observers is not None and self._observed_one_by_one()
        if one_by_one or self._problem_per_update(updates[0], knowledge):
            pairs = zip(updates, knowledges, strict=True)
            prepared = [self._prepare(update, model, known) for update, known in pairs]
            _, first_labels, first_problem = prepared[0]
            groups = self._check_memory(first_problem, knowledge, first_labels, cfg.restarts)
            # One time check for the whole batch: the updates run one after another.
            self._check_budget(
                first_problem, knowledge, first_labels, updates=len(updates), stack=len(groups[0])
            )
            results = []
            for i, (strategy, fixed_labels, problem) in enumerate(prepared):
                update, known, watch = updates[i], knowledges[i], watchers[i] or observer
                seeded = self._learned_start(update, model, known)
                one = self._attack(
                    problem,
                    strategy,
                    fixed_labels,
                    known,
                    trial_seeds[i],
                    watch,
                    progress,
                    seeded,
                    groups,
                )
                results.append(one)
                if one.interrupted:  # Ctrl-C ends the whole batch, not one update
                    break
            return results
        matched = [self._matched(u, model, kn) for u, kn in zip(updates, knowledges, strict=True)]
        recovered = [
            self._labels_for(replay.label_reading(u, model), model, known)
            for u, (_, replay), known in zip(updates, matched, knowledges, strict=True)
        ]
        seeds = [
            self._learned_start(u, model, kn) for u, kn in zip(updates, knowledges, strict=True)
        ]
        updates = [u for u, _ in matched]
        strategy = recovered[0][0]
        problem = self._problem(updates[0], model, knowledge, matched[0][1])
        n, k = len(updates), cfg.restarts
        groups = self._check_memory(problem, knowledge, recovered[0][1], n * k, per_update=k)
        self._check_budget(problem, knowledge, recovered[0][1], updates=n, stack=len(groups[0]))
        starts = [
            self._initial(problem, known, fixed, one_seed, seeded)
            for (_, fixed), seeded, known, one_seed in zip(
                recovered, seeds, knowledges, trial_seeds, strict=True
            )
        ]
        images = torch.cat([images for images, _ in starts])
        if recovered[0][1] is None:  # soft labels, optimised: K×B×classes per update
            labels = torch.cat([labels for _, labels in starts])
        else:  # one integer label row per trial
            labels = torch.cat([labels.expand(k, -1) for _, labels in starts])
        targets = {
            name: torch.stack([u.tensors[name] for u in updates]).repeat_interleave(k, dim=0)
            for name in problem.names
        }
        # Observers of their own update each see its rows and keep its history.
        watch = observer if observers is None else UpdateObservers(k, watchers)
        start = time.perf_counter()
        result = self._optimize_groups(
            groups, problem, images, labels, knowledge, self._log_every(), watch, progress, targets
        )
        seconds = time.perf_counter() - start
        histories = [[] for _ in range(n)]
        if isinstance(watch, UpdateObservers):
            histories = watch.histories
        return [  # a run interrupted between groups has only its first updates' trials
            self._reconstruction(
                result, range(i * k, (i + 1) * k), strategy, problem, seconds, histories[i]
            )
            for i in range(len(result.losses) // k)
        ]

    def _observed_one_by_one(self) -> bool:
        """Whether `reconstruct_many` with per-update observers attacks the updates in turn."""
        # A generator's decoder shows the observer decoded images: one update at a time.
        generative = prior_of(parse_priors(self.config.priors), "generative") is not None
        # L-BFGS stacks as Adam does; its per-trial observer calls do not fit `observers`.
        return generative or self.config.optimizer == "lbfgs"

    def stacks_observed_updates(self) -> bool:
        """Whether `reconstruct_many` with one observer per update attacks every update in
        one stacked computation, whatever the updates (what a stacked study relies on).

        Returns:
            False with L-BFGS or a generative prior (the updates run in turn), and with a
            batch-norm prior that may read each client's own statistics (one problem per
            update); True otherwise.
        """
        if self._observed_one_by_one():
            return False
        spec = prior_of(parse_priors(self.config.priors), "batch-norm")
        return spec is None or spec.info.statistics == "server"

    def _problem_per_update(self, update: SharedUpdate, knowledge: Knowledge) -> bool:
        """Whether each update needs its own problem: a prior reads the client's statistics."""
        spec = prior_of(parse_priors(self.config.priors), "batch-norm")
        return spec is not None and _reads_client_statistics(spec, update, knowledge)

    def _prepare(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge
    ) -> tuple[LabelStrategy, torch.Tensor | None, MatchingProblem]:
        """The label strategy, its labels (None: optimised) and the problem for one update."""
        matched, replay = self._matched(update, model, knowledge)
        labels_from = replay.label_reading(update, model)
        strategy, fixed_labels = self._labels_for(labels_from, model, knowledge)
        return strategy, fixed_labels, self._problem(matched, model, knowledge, replay)

    def _matched(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge
    ) -> tuple[SharedUpdate, Replay]:
        """Check the update; return what is matched against it and the replay behind it."""
        from gradleak.attacks.registry import check_readable

        update.validate_for(model)
        check_readable(self.name, self.reads, update.kind)
        who = f"attack '{self.name}' on a {update.kind.value}"
        reading = protocol_sharing(update.kind).reading(self.config.admm_reading)
        replay = reading.replay(knowledge, who)
        return replay.read(update), replay

    def _labels_for(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge
    ) -> tuple[LabelStrategy, torch.Tensor | None]:
        """The label strategy and its labels (None: the attack optimises them) from the
        replay's label reading of the update (`Replay.label_reading`)."""
        strategy = resolve_label_strategy(self.config.label_strategy, knowledge)
        knowledge.require(strategy.requires, f"label strategy '{strategy.name}'")
        fixed_labels = strategy.recover(update, model, knowledge)
        if fixed_labels is not None:
            _check_labels(fixed_labels, knowledge)
            fixed_labels = fixed_labels.long()
        return strategy, fixed_labels

    def _problem(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge, replay: Replay
    ) -> MatchingProblem:
        modality = get_modality(knowledge.modality)
        specs = parse_priors(self.config.priors)
        replica = attacker_model(model, knowledge.model_mode)
        return MatchingProblem(
            replica,
            update.tensors,
            get_objective(self.config.objective),
            self._tv_weight(specs, knowledge, modality),
            replay,
            prior=TV_FORMS.get(self.config.tv_form, modality.prior),
            extra_prior=_batch_norm_prior(specs, replica, model, update, knowledge),
            decoder=self._decoder(specs, knowledge),
        )

    def _tv_weight(
        self, specs: tuple[PriorSpec, ...], knowledge: Knowledge, modality: Modality
    ) -> float:
        """The modality prior's weight: tv_weight without specs, else the tv spec's (or 0)."""
        default = self.config.tv_for(knowledge.data_shape, modality)
        if not specs:
            return default
        tv = prior_of(specs, "tv")
        if tv is None:
            return 0.0
        return default if tv.weight is None else tv.weight

    def _decoder(self, specs: tuple[PriorSpec, ...], knowledge: Knowledge) -> LatentDecoder | None:
        """The generator whose latent is searched (gan, gias), checked against the data."""
        from gradleak.attacks.priors.generative import load_generative_prior

        spec = prior_of(specs, "generative")
        if spec is None:
            return None
        prior = load_generative_prior(spec.path)
        prior.check_fits(tuple(knowledge.data_shape), f"--prior {spec}")
        return LatentDecoder(prior, knowledge.mean, knowledge.std, self.config.latent_weight)

    def _fine_tunes_generator(self) -> bool:
        spec = prior_of(parse_priors(self.config.priors), "generative")
        return spec is not None and spec.info.fine_tunes

    def _learned_start(
        self, update: SharedUpdate, model: nn.Module, knowledge: Knowledge
    ) -> torch.Tensor | None:
        """A learned inverter's reconstruction B×C×H×W for init "learned:PATH", checked."""
        path = _learned_path(self.config.init)
        if path is None:
            return None
        from gradleak.attacks.priors.inverter import load_inverter

        inverter = load_inverter(path)
        inverter.check_fits(model, knowledge, update, f"init {self.config.init}")
        return inverter.invert(update).detach()

    def _start(
        self, knowledge: Knowledge, fixed_labels: torch.Tensor | None, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial images (K×B×C×H×W) and labels (B integers, or K×B×classes soft)."""
        k, b = self.config.restarts, knowledge.batch_size
        generator = torch.Generator().manual_seed(seed)
        modality = get_modality(knowledge.modality)
        # A learned start replaces these images (`_initial`); they only keep the seed's draws.
        init = "randn" if _learned_path(self.config.init) else self.config.init
        images = modality.initial_inputs(init, (k, b, *knowledge.data_shape), generator)
        if fixed_labels is not None:
            return images, fixed_labels
        # Drawn on the CPU generator (the same start on any device); the engine moves it.
        soft = torch.randn(k, b, knowledge.num_classes, generator=generator, device="cpu")
        return images, soft

    def _initial(
        self,
        problem: MatchingProblem,
        knowledge: Knowledge,
        fixed_labels: torch.Tensor | None,
        seed: int,
        seeded: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the trials start from: `_start`'s, a generator's latents (K×B×latent), or
        a learned inverter's output `seeded` (B×C×H×W; the first trial exactly, the others
        with noise × `LEARNED_SPREAD`)."""
        images, labels = self._start(knowledge, fixed_labels, seed)
        k = images.shape[0]
        generator = torch.Generator().manual_seed(seed + 1)
        if isinstance(problem.decoder, LatentDecoder):
            return problem.decoder.start(k, knowledge.batch_size, generator), labels
        if seeded is not None:
            noise = torch.randn(k, *seeded.shape, generator=generator, device="cpu")
            noise = noise.to(seeded.device) * LEARNED_SPREAD
            noise[0] = 0
            return seeded.unsqueeze(0) + noise, labels
        return images, labels

    def _soft_label_shape(self, problem: MatchingProblem, knowledge: Knowledge) -> tuple[int, ...]:
        """One sample's optimised soft labels (logits), as the checks made before a run
        allocate them: one per class. Attacks on models with other outputs (a class per
        token) override it."""
        return (knowledge.num_classes,)

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
        """The trial of `rows` that restart selection keeps, as one update's reconstruction."""
        chosen = select(result, rows)
        best = chosen.best
        row = rows.start + best
        steps = result.trial_iterations[rows.start : rows.stop] or [result.iterations]
        return Reconstruction(
            images=result.images[row],
            labels=result.labels[row],
            loss=chosen.distances[best],
            iterations=max(steps),
            seconds=seconds,
            history=history,
            trial_losses=chosen.distances,
            best_trial=best,
            loss_evaluations=_evaluations(result, rows, self.config.keep_best),
            label_strategy=strategy.name,
            labels_recovered=strategy.recovers,
            interrupted=result.interrupted,
            stopped=result.stopped,
            compiled=result.compiled,
            compile_seconds=result.compile_seconds,
            compile_report=result.compile_report,
            details={
                **_prior_details(problem, self.config),
                "tv_weight": problem.tv_weight,
                "log_every": self._log_every(),
                "replay": problem.replay.describe(),
            },
            status=chosen.status.status,
            status_reason=chosen.status.reason,
            trial_status=[s.status for s in chosen.statuses],
        )

    def _check_memory(
        self,
        problem: MatchingProblem,
        knowledge: Knowledge,
        fixed_labels: torch.Tensor | None,
        trials: int,
        *,
        per_update: int = 1,
        notice: Notice = print_notice,
    ) -> list[range]:
        """The groups of the stacked trials that fit in free memory (`trial_groups`).

        L-BFGS also keeps each trial's curvature history (2 × `HISTORY_SIZE` × N floats);
        groups hold whole consistency groups and, with `per_update`, whole updates.
        """
        cfg = self.config
        sample, inputs = _sample_trial(
            problem, knowledge, fixed_labels, self._soft_label_shape(problem, knowledge)
        )
        multiple = math.lcm(per_update, cfg.group_consistency or 1)
        checks = [(problem, sample)]
        if self._fine_tunes_generator() and isinstance(problem.decoder, LatentDecoder):
            # GIAS's second half moves every image's generator too: the larger of the two.
            tuned = _fine_tuning(problem)
            checks.append((tuned, tuned.decoder.start(sample)))
        groups: list[range] = []
        told: list[str] = []
        for checked, variables in checks:
            extra = 0
            if cfg.optimizer == "lbfgs":
                n = variables[0].numel() + (inputs.labels[0].numel() if inputs.soft else 0)
                extra = CurvatureHistory.bytes_per_trial(n, element_size=variables.element_size())
            lines: list[str] = []
            found = trial_groups(
                checked,
                variables,
                inputs,
                trials,
                extra_bytes=extra,
                multiple=multiple,
                notice=lines.append,
            )
            if not groups or len(found[0]) < len(groups[0]):
                groups, told = found, lines
        for line in told:  # the one line of the check that split the trials most
            notice(line)
        return groups

    def _optimize_groups(
        self,
        groups: list[range],
        problem: MatchingProblem,
        images: torch.Tensor,
        labels: torch.Tensor,
        knowledge: Knowledge,
        log_every: int,
        observer: Observer | UpdateObservers | None,
        progress: bool,
        targets: Mapping[str, torch.Tensor] | None = None,
    ) -> TrialsResult:
        """`_optimize` of the stacked trials, group after group (`run_in_groups`)."""
        k = self.config.restarts
        updates = observer if isinstance(observer, UpdateObservers) else None

        def run(group: range) -> TrialsResult:
            rows = slice(group.start, group.stop)
            watch = observer
            if updates is not None and len(groups) > 1:  # the group's own updates
                first, last = group.start // k, -(-group.stop // k)
                watch = UpdateObservers(k, updates.observers[first:last])
                watch.histories = updates.histories[first:last]
            return self._optimize(
                problem,
                images[rows],
                labels[rows] if labels.dim() > 1 else labels,
                knowledge,
                log_every,
                watch,
                progress,
                None if targets is None else {n: t[rows] for n, t in targets.items()},
            )

        # An update's observer stops only its update: the next groups' updates still run.
        return run_in_groups(groups, run, stop_when_stopped=updates is None)

    def check_budget(
        self,
        update: SharedUpdate,
        model: nn.Module,
        knowledge: Knowledge,
        *,
        notice: Notice = print_notice,
    ) -> BudgetEstimate | None:
        """The time check `reconstruct` makes before any work, without attacking.

        L-BFGS's time grows with its steps and the line searches' evaluations: one stacked
        loss evaluation of the trials that run together is timed, the run's upper bound
        is estimated
        (`gradleak.attacks.engine.budget`), told to `notice` when it is a minute or more,
        and refused beyond `lbfgs_max_hours`. Adam's stacked trials are not estimated
        (their memory is checked instead).

        Args:
            update: the shared update (only its kind, shapes and labels' reading matter).
            model: the server's model (left unchanged).
            knowledge: the threat model.
            notice: where a long estimate is told in one line (default: standard error).

        Returns:
            The estimate with L-BFGS; None with Adam.

        Raises:
            GradleakError: as `reconstruct`, for an update, model or threat model it
                refuses; when the estimate exceeds `lbfgs_max_hours` (the line says how
                many restarts fit and how to raise the bound).
        """
        _, fixed_labels, problem = self._prepare(update, model, knowledge)
        return self._check_budget(problem, knowledge, fixed_labels, notice)

    def _check_budget(
        self,
        problem: MatchingProblem,
        knowledge: Knowledge,
        fixed_labels: torch.Tensor | None,
        notice: Notice = print_notice,
        *,
        updates: int = 1,
        stack: int | None = None,
    ) -> BudgetEstimate | None:
        cfg = self.config
        # Unbounded runs are not estimated: the estimate's timed evaluations and its notice
        # would serve no bound (time-budgeted studies end L-BFGS by a deadline instead).
        if cfg.optimizer != "lbfgs" or cfg.lbfgs_max_hours == 0:
            return None
        sample, inputs = _sample_trial(
            problem, knowledge, fixed_labels, self._soft_label_shape(problem, knowledge)
        )
        trials = cfg.restarts * updates
        if stack is None:  # the groups the trials run in, without telling the split
            groups = self._check_memory(
                problem,
                knowledge,
                fixed_labels,
                trials,
                per_update=cfg.restarts,
                notice=lambda line: None,
            )
            stack = len(groups[0])
        # Stacked trials share each evaluation: time one evaluation of a whole stack.
        seconds = measure_evaluation_seconds(problem, *stacked_sample(sample, inputs, stack))
        estimate = lbfgs_estimate(
            trials, cfg.iterations, cfg.lbfgs_inner_iterations, seconds, stack
        )
        return check_budget(estimate, cfg.lbfgs_max_hours, notice=notice, updates=updates)

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
        if problem.decoder is None:
            return self._optimize_inputs(
                problem, images, labels, knowledge, log_every, observer, progress, targets
            )
        return self._optimize_latents(
            problem, images, labels, knowledge, log_every, observer, progress, targets
        )

    def _optimize_latents(
        self,
        problem: MatchingProblem,
        latents: torch.Tensor,
        labels: torch.Tensor,
        knowledge: Knowledge,
        log_every: int,
        observer: Observer | None,
        progress: bool,
        targets: Mapping[str, torch.Tensor] | None,
    ) -> TrialsResult:
        """A generative prior's search: latents (GGL), then each image's generator (GIAS).

        The optimisers move the decoder's variables with unsigned steps and no box (the
        generator's pixels are valid by construction); the result holds decoded images.
        GIAS gives the first half of the iterations to the latents and the second half to
        the latents and the per-image generators together, from where the first half ended,
        at a tenth of the step size (the first half ended its schedule far below `lr`); a
        trial whose fine-tuning matched worse keeps its first-half image (`_keep_better`).
        """
        cfg = self.config
        first = cfg.iterations // 2 if self._fine_tunes_generator() else cfg.iterations
        result = self._optimize_inputs(
            problem,
            latents,
            labels,
            knowledge,
            log_every,
            _decoding(observer, problem),
            progress,
            targets,
            iterations=first,
            unboxed=True,
        )
        images = _decoded(problem, result.images)
        if not self._fine_tunes_generator() or result.interrupted or result.stopped:
            return dataclasses.replace(result, images=images)
        tuned = _fine_tuning(problem)
        second = self._optimize_inputs(
            tuned,
            tuned.decoder.start(result.images),
            result.labels,  # the first half's labels, fixed from here on
            knowledge,
            log_every,
            _decoding(observer, tuned),
            progress,
            targets,
            iterations=cfg.iterations - first,
            unboxed=True,
            lr=cfg.lr * GIAS_LR_FACTOR,
        )
        return _keep_better(result, images, second, _decoded(tuned, second.images))

    def _optimize_inputs(
        self,
        problem: MatchingProblem,
        images: torch.Tensor,
        labels: torch.Tensor,
        knowledge: Knowledge,
        log_every: int,
        observer: Observer | None,
        progress: bool,
        targets: Mapping[str, torch.Tensor] | None = None,
        *,
        iterations: int | None = None,
        unboxed: bool = False,
        lr: float | None = None,
    ) -> TrialsResult:
        cfg = self.config
        iterations = cfg.iterations if iterations is None else iterations
        lr = cfg.lr if lr is None else lr
        inner = cfg.lbfgs_inner_iterations if cfg.optimizer == "lbfgs" else 1
        plan = plan_compile(cfg.compile, problem, images, labels, targets, iterations * inner)
        if cfg.optimizer == "lbfgs":
            result = optimize_lbfgs(
                problem,
                images,
                labels,
                lr=lr,
                steps=iterations,
                inner_iterations=cfg.lbfgs_inner_iterations,
                line_search=cfg.line_search,
                tolerance=cfg.tolerance,
                log_every=log_every,
                observer=observer,
                progress=progress,
                targets=targets,
                compile=plan.compile,
            )
            return plan.finish(result)
        boxed = cfg.boxed and not unboxed
        bounds = get_modality(knowledge.modality).bounds(knowledge) if boxed else None
        consistency = None
        if cfg.group_consistency:
            consistency = GroupConsistency(cfg.group_consistency, cfg.group_weight, cfg.group_every)
        result = optimize_adam(
            problem,
            images,
            labels,
            lr=lr,
            iterations=iterations,
            signed=cfg.signed and not unboxed,
            bounds=bounds,
            lr_decay=cfg.lr_decay,
            log_every=log_every,
            observer=observer,
            progress=progress,
            tolerance=cfg.tolerance,
            compile=plan.compile,
            check_memory=False,  # checked before the trials were allocated
            targets=targets,
            consistency=consistency,
            keep_best=cfg.keep_best,
        )
        return plan.finish(result)


def _per_update(
    n: int,
    knowledge: Knowledge | Sequence[Knowledge],
    seed: int | Sequence[int],
    observers: Sequence[Observer | None] | None,
) -> tuple[list[Knowledge], list[int], list[Observer | None]]:
    """`reconstruct_many`'s threat model, seed and observer of each of its n updates.

    Raises:
        ValueError: a sequence that does not hold one value per update.
    """
    knowledges = [knowledge] * n if isinstance(knowledge, Knowledge) else list(knowledge)
    seeds = [seed] * n if isinstance(seed, int) else [int(s) for s in seed]
    watchers = [None] * n if observers is None else list(observers)
    for name, values in (("knowledge", knowledges), ("seed", seeds), ("observers", watchers)):
        if len(values) != n:
            raise ValueError(
                f"reconstruct_many: {name} needs one per update ({n}), got {len(values)}"
            )
    return knowledges, seeds, watchers


def _evaluations(result: TrialsResult, rows: range, keep_best: bool) -> int:
    """The loss evaluations of one update's trials `rows` (all of them: the run's count)."""
    if len(rows) == len(result.losses):
        return result.loss_evaluations
    if result.trial_evaluations:  # counted per trial (L-BFGS)
        return sum(result.trial_evaluations[rows.start : rows.stop])
    steps = result.trial_iterations[rows.start : rows.stop] or [result.iterations]
    # One evaluation per Adam step; each trial is scored at its end, and with keep_best
    # once more before that.
    return sum(steps) + len(rows) * (1 + int(keep_best and max(steps) > 0))


def _sample_trial(
    problem: MatchingProblem,
    knowledge: Knowledge,
    fixed_labels: torch.Tensor | None,
    soft_shape: tuple[int, ...],
) -> tuple[torch.Tensor, TrialInputs]:
    """One trial's inputs (zeros 1×B×C×H×W, or latents) and labels, for the up-front checks."""
    b, device = knowledge.batch_size, problem.device  # the memory check asks this device
    if isinstance(problem.decoder, LatentDecoder):  # the trials move latents
        sample = problem.decoder.start(1, b, torch.Generator().manual_seed(0)).to(device)
    else:
        sample = torch.zeros(1, b, *knowledge.data_shape, device=device)
    if fixed_labels is None:
        labels = torch.zeros(1, b, *soft_shape, device=device)
    else:
        labels = fixed_labels.long().to(device)
    return sample, trial_inputs(sample, labels, problem, None, None)


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


def _decoding(observer: Observer | None, problem: MatchingProblem) -> Observer | None:
    """The observer, shown decoded images instead of the decoder's variables."""
    if observer is None:
        return None

    def watch(iteration: int, distances: torch.Tensor, variables: torch.Tensor):
        return observer(iteration, distances, _decoded(problem, variables))

    return watch


def _batch_norm_prior(
    specs: tuple[PriorSpec, ...],
    replica: nn.Module,
    model: nn.Module,
    update: SharedUpdate,
    knowledge: Knowledge,
) -> BatchNormPrior | None:
    """The batch-norm statistics prior the specs name, with the targets the threat model grants.

    "bn-server" pulls toward the server model's running statistics; "bn-client" toward the
    client's batch statistics read from its shared buffers (refused where they are not
    shared or not readable); "bn" takes the client's where readable, else the server's.
    """
    spec = prior_of(specs, "batch-norm")
    if spec is None:
        return None
    if _reads_client_statistics(spec, update, knowledge):
        targets = client_statistics(model, update, **_client_reading(knowledge))
    else:
        targets = server_statistics(model)
    params = {n: p.detach() for n, p in replica.named_parameters()}
    buffers = {n: b.detach() for n, b in replica.named_buffers()}
    return BatchNormPrior(replica, params, buffers, targets, bn_weight(spec))


def _prior_details(problem: MatchingProblem, config: GradientMatchingConfig) -> dict[str, Any]:
    """What a reconstruction says about its priors: the specs, the statistics' source, the
    generator's file and what it was trained on, and the group consistency."""
    details: dict[str, Any] = {}
    if config.priors:
        details["priors"] = [str(s) for s in parse_priors(config.priors)]
    if isinstance(problem.extra_prior, BatchNormPrior):
        details["bn_statistics"] = problem.extra_prior.targets.source
    decoder = problem.decoder
    latent = decoder.latent if isinstance(decoder, GeneratorDecoder) else decoder
    if isinstance(latent, LatentDecoder):
        details["prior_file"] = latent.prior.path
        details["prior_trained_on"] = latent.prior.dataset
    learned = _learned_path(config.init)
    if learned is not None:
        details["inverter_file"] = learned
    if config.group_consistency:
        details["group_consistency"] = config.group_consistency
        details["group_weight"] = config.group_weight
    return details


def _decoded(problem: MatchingProblem, variables: torch.Tensor) -> torch.Tensor:
    """Every trial's candidate images from its decoder variables (K×B×…)."""
    with torch.no_grad():
        return torch.stack([problem.inputs_of(v) for v in variables])


def _keep_better(
    first: TrialsResult,
    first_images: torch.Tensor,
    second: TrialsResult,
    second_images: torch.Tensor,
) -> TrialsResult:
    """GIAS's result: per trial, the fine-tuned image where it matches at least as well as
    the latent search's, else the latent search's; counts and history of both halves."""
    finite = torch.isfinite(second.distances)
    better = finite & (~torch.isfinite(first.distances) | (second.distances <= first.distances))
    view = better.view(-1, *([1] * (first_images.dim() - 1)))
    keep = better.tolist()
    history = list(first.history)
    history += [  # the second half's row 0 is the first half's last row again
        {**row, "iteration": int(row["iteration"] or 0) + first.iterations}
        for row in second.history
        if row["iteration"]
    ]
    return TrialsResult(
        torch.where(view, second_images, first_images),
        first.labels,
        torch.where(better, second.losses, first.losses),
        history,
        first.iterations + second.iterations,
        first.loss_evaluations + second.loss_evaluations,
        second.interrupted,
        second.stopped,
        trial_iterations=[
            a + b for a, b in zip(first.trial_iterations, second.trial_iterations, strict=False)
        ],
        compile_seconds=first.compile_seconds + second.compile_seconds,
        compiled=second.compiled,
        compile_report=second.compile_report,
        seconds=first.seconds + second.seconds,
        distances=torch.where(better, second.distances, first.distances),
        statuses=[
            s if k else f for s, f, k in zip(second.statuses, first.statuses, keep, strict=True)
        ],
    )


def _client_reading(knowledge: Knowledge) -> dict[str, Any]:
    """What decides whether the client's batch statistics can be read from its buffers."""
    return {
        "users": knowledge.num_users,
        "one_forward": knowledge.local_training is None and knowledge.admm is None,
        "model_mode": knowledge.model_mode,
    }


def _reads_client_statistics(spec: PriorSpec, update: SharedUpdate, knowledge: Knowledge) -> bool:
    """Whether the batch-norm prior `spec` pulls toward the client's statistics: always for
    "client" (refused later where unreadable), where readable for "granted"."""
    if spec.info.statistics == "client":
        return True
    if spec.info.statistics == "server":
        return False
    return client_statistics_readable(update, **_client_reading(knowledge)) is None


def _learned_path(init: str) -> str | None:
    """The inverter file of init "learned:PATH"; None for another init.

    Raises:
        GradleakError: "learned" or "learned:" without a file.
    """
    kind, colon, path = init.partition(":")
    if kind != LEARNED_INIT:
        return None
    if not path:
        raise GradleakError("init learned needs the inverter's file: --init learned:INV.pt")
    return path


def _fine_tuning(problem: MatchingProblem) -> MatchingProblem:
    """The problem of GIAS's second half: the latent problem, each image's generator moving."""
    assert isinstance(problem.decoder, LatentDecoder)
    tuned = copy.copy(problem)
    tuned.decoder = GeneratorDecoder(problem.decoder)
    return tuned
