"""One optimisation step's loss and gradients for K stacked trials.

Three ways to compute the same numbers:
- one trial, eager: autograd with `create_graph` (the cheapest single double backward);
- several trials, eager: one batched computation, `vmap` of the functional parameter
  gradient under autograd for the derivative with respect to the images;
- `compile=True`: `torch.compile` of the functional (and, for K > 1, vmapped) step.
  Autograd's `create_graph` cannot be compiled; the functional form can. When compiling
  fails the step says so in one line and runs eagerly. Inductor caches the compiled
  graphs under the user's cache folder (`gradleak.attacks.engine.compiling`, which also
  decides `compile: auto`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch.func import grad_and_value, vmap

from gradleak.attacks.matching.problem import MatchingProblem

Notice = Callable[[str], None]


def print_notice(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr)


@dataclass(frozen=True)
class TrialInputs:
    """What differs between trials besides the images (a None axis is shared by all).

    Attributes:
        labels: B integer labels shared by all trials, K×B integer labels (one row per
            trial), or K×B×classes soft labels (logits, one set per trial, optimised).
        target: the shared update to match, by parameter name: the parameter shapes (one
            target for all trials) or K× them (one target per trial).
        tv_weight: the prior's weight of every trial, K values.
        labels_per_trial: `labels` has a leading trial axis.
        target_per_trial: every tensor of `target` has a leading trial axis.
    """

    labels: torch.Tensor  # B integer (shared), K×B integer, or K×B×classes soft
    target: Mapping[str, torch.Tensor]  # parameter shapes (shared), or K× them
    tv_weight: torch.Tensor  # K
    labels_per_trial: bool
    target_per_trial: bool

    @property
    def soft(self) -> bool:
        return self.labels.dtype != torch.long

    def select(self, index: torch.Tensor | None) -> TrialInputs:
        """The inputs of the trials in `index` (None: all)."""
        if index is None:
            return self
        return TrialInputs(
            self.labels[index] if self.labels_per_trial else self.labels,
            {n: t[index] for n, t in self.target.items()} if self.target_per_trial else self.target,
            self.tv_weight[index],
            self.labels_per_trial,
            self.target_per_trial,
        )

    def trial(self, k: int) -> tuple[torch.Tensor, Mapping[str, torch.Tensor], torch.Tensor]:
        labels = self.labels[k] if self.labels_per_trial else self.labels
        target = {n: t[k] for n, t in self.target.items()} if self.target_per_trial else self.target
        return labels, target, self.tv_weight[k]


# (∂loss/∂images, ∂loss/∂soft labels or None, loss, gradient-matching distance), K rows each.
StepOutput = tuple[torch.Tensor, "torch.Tensor | None", torch.Tensor, torch.Tensor]


class TrialStep:
    """(∂loss/∂images, ∂loss/∂soft labels or None, loss, distance) for every trial given.

    Calling it with inputs K×B×C×H×W and their `TrialInputs` returns the gradient of
    each trial's matching loss with respect to its inputs (K×B×C×H×W), with respect to
    its soft labels (K×B×classes; None for integer labels), the K losses and the K
    gradient-matching distances (the loss's data term, `MatchingProblem.loss_terms`), all
    detached. One trial runs through autograd's `create_graph`, several through one
    `vmap`ped computation, and with `compile` through torch.compile (see the module's
    docstring); all three give the same numbers up to rounding.

    Args:
        problem: the matching problem (the loss is `problem.loss`).
        compile: compile the functional step on its first call; when compiling fails,
            `notice` is told in one line and the step runs uncompiled from then on.
        notice: where that one line goes (default: standard error).
    """

    def __init__(
        self, problem: MatchingProblem, *, compile: bool = False, notice: Notice = print_notice
    ) -> None:
        self.problem = problem
        self.compile = compile
        self.notice = notice
        self.compile_seconds = 0.0  # time spent in calls that compiled (first step included)
        self.calls = 0  # steps computed (each one stacked call, whatever its trials)
        self._compiled: dict[bool, Callable] = {}

    @property
    def compiled(self) -> bool:
        return self.compile and bool(self._compiled)

    def __call__(self, images: torch.Tensor, inputs: TrialInputs) -> StepOutput:
        self.calls += 1
        batched = images.shape[0] > 1
        if self.compile:
            fn = self._compiled.get(batched)
            if fn is None:
                return self._first_compiled_call(batched, images, inputs)
            return fn(images, inputs)
        return self._batched(images, inputs) if batched else self._single(images, inputs)

    def _single(self, images: torch.Tensor, inputs: TrialInputs) -> StepOutput:
        labels, target, tv = inputs.trial(0)
        grads, terms = self.problem.terms_and_grad(images[0], labels, target, tv, soft=inputs.soft)
        grad_labels = grads[1].unsqueeze(0) if inputs.soft else None
        return (
            grads[0].unsqueeze(0),
            grad_labels,
            terms.loss.unsqueeze(0),
            terms.distance.unsqueeze(0),
        )

    def _functional(self, batched: bool, soft: bool, labels_axis, target_axis) -> Callable:
        # The distance rides along as the auxiliary output: it costs nothing more.
        fn = grad_and_value(self.problem.loss_terms, argnums=(0, 1) if soft else 0, has_aux=True)
        if batched:
            fn = vmap(fn, in_dims=(0, labels_axis, target_axis, 0))
        return fn

    def _batched(self, images: torch.Tensor, inputs: TrialInputs) -> StepOutput:
        """vmap for the per-trial parameter gradients, autograd for the rest.

        Nesting the outer derivative inside vmap as well (vmap of grad of grad) gives the
        same numbers but costs about a third more per step on the CPU: every operation
        then passes three functorch levels instead of two.
        """
        problem = self.problem
        labels_axis = 0 if inputs.labels_per_trial else None
        target_axis = 0 if inputs.target_per_trial else None
        variables = images.detach().requires_grad_(True)
        labels = inputs.labels.detach().requires_grad_(inputs.soft)
        with torch.enable_grad():
            images = variables if problem.decoder is None else vmap(problem.inputs_of)(variables)
            candidates = vmap(problem.candidate_update, in_dims=(None, 0, labels_axis))(
                problem.params, images, labels
            )
            values, distances = vmap(problem.match_terms, in_dims=(0, 0, target_axis, 0))(
                candidates, images, inputs.target, inputs.tv_weight
            )
            if problem.decoder is not None:
                values = values + vmap(problem.decoder.penalty)(variables)
            wrt = [variables, labels] if inputs.soft else [variables]
            grads = torch.autograd.grad(values.sum(), wrt)
        grad_labels = grads[1] if inputs.soft else None
        return grads[0], grad_labels, values.detach(), distances.detach()

    def _functional_for(self, inputs: TrialInputs, batched: bool) -> Callable:
        return self._functional(
            batched,
            inputs.soft,
            0 if inputs.labels_per_trial else None,
            0 if inputs.target_per_trial else None,
        )

    @staticmethod
    def _run_functional(
        fn: Callable, images: torch.Tensor, inputs: TrialInputs, batched: bool
    ) -> StepOutput:
        if batched:
            grads, (values, distances) = fn(images, inputs.labels, inputs.target, inputs.tv_weight)
        else:
            labels, target, tv = inputs.trial(0)
            grads, (value, distance) = fn(images[0], labels, target, tv)
            grads = tuple(g.unsqueeze(0) for g in grads) if inputs.soft else grads.unsqueeze(0)
            values, distances = value.unsqueeze(0), distance.unsqueeze(0)
        if inputs.soft:
            return grads[0], grads[1], values, distances
        return grads, None, values, distances

    def _first_compiled_call(
        self, batched: bool, images: torch.Tensor, inputs: TrialInputs
    ) -> StepOutput:
        start = time.perf_counter()
        from gradleak.attacks.engine.compiling import use_compile_cache  # imports this module

        use_compile_cache()  # compiled graphs are kept across runs (hits cost a fraction)
        try:
            compiled = torch.compile(self._functional_for(inputs, batched))

            def step(images: torch.Tensor, inputs: TrialInputs) -> StepOutput:
                return self._run_functional(compiled, images, inputs, batched)

            out = step(images, inputs)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # any compiler failure: report it and run eagerly
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self.notice(
                f"--compile is not available here ({type(error).__name__}: {reason[:160]}); "
                "running uncompiled"
            )
            self.compile = False
            return self(images, inputs)
        self._compiled[batched] = step
        self.compile_seconds += time.perf_counter() - start
        return out
