"""The gradient-matching problem as a pure function of a candidate batch (torch.func)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import torch
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_
from torch.nn import functional as F

from gradleak.attacks.matching.objectives import Objective
from gradleak.core.device import module_device
from gradleak.fl.replay import Replay

# A prior on one trial's inputs (the modality's; images: total variation).
Prior = Callable[[torch.Tensor], torch.Tensor]


class Decoder(Protocol):
    """What the optimisers move when they do not move the inputs themselves.

    A generative prior searches a generator's latent space (and, GIAS, its weights): each
    trial's variable `v` is decoded into the candidate inputs, and a penalty on `v` (the
    latent's prior) joins the loss. Both are pure functions of one trial's variable.
    """

    def decode(self, variable: torch.Tensor) -> torch.Tensor:
        """One trial's candidate inputs (B×C×H×W, attacked space) from its variable."""
        ...

    def penalty(self, variable: torch.Tensor) -> torch.Tensor:
        """The variable's own prior term (a scalar), already weighted."""
        ...

    def to(self, device: torch.device) -> Decoder:
        """This decoder with its networks on `device` (the problem's)."""
        ...


class LossTerms(NamedTuple):
    """One trial's matching loss and its data term.

    Attributes:
        loss: what the optimisers minimise: distance + weight · prior.
        distance: the gradient-matching distance alone (no prior terms); restarts are
            ranked by it.
    """

    loss: torch.Tensor
    distance: torch.Tensor


def label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against integer labels, or against softmax(labels) for soft logits.

    Args:
        logits: the model's outputs B×classes, or B×classes×L (a class per position, as
            masked-language modelling gives them).
        labels: integer labels (int64: B, or B×L with -100 where the client's loss skips a
            position), or soft labels given as logits (any floating dtype) with the classes
            last: B×classes or B×L×classes, whose softmax is the target distribution. Soft
            labels B×L×(classes + 1) also say how much of each position is in the loss: the
            last class's mass is left out, and the cross-entropy of the rest is summed over
            the positions and divided by B. A client that averaged over M >= B positions of
            its own choosing (the masked ones) is then reproduced by mass B/M on the true
            token at each of them and all mass on the last class elsewhere.

    Returns:
        A scalar: the cross-entropy averaged over the samples (and positions), or, with the
        extra class, summed over positions and divided by B.
    """
    if labels.dtype == torch.long:
        return F.cross_entropy(logits, labels)
    if logits.dim() > 2:  # B×classes×L: classes last, as the soft labels hold them
        logits = logits.movedim(1, -1)
    log_probs = logits.log_softmax(dim=-1)
    classes = log_probs.shape[-1]
    target = labels.softmax(dim=-1)
    if labels.shape[-1] == classes:
        return -(target * log_probs).sum(dim=-1).mean()
    return -(target[..., :classes] * log_probs).sum() / labels.shape[0]


def attacker_model(server_model: nn.Module, model_mode: str) -> nn.Module:
    """The attacker's replica of the server's model, in the client's batch-norm mode.

    In train mode batch norm normalises with batch statistics; without running-stat
    updates the forward pass is a pure function, which vmap needs.

    Args:
        server_model: the server's model (deep-copied; left unchanged).
        model_mode: "train" (batch norm uses the batch's statistics and keeps no running
            statistics) or "eval" (batch norm uses the server's running statistics).

    Returns:
        The replica, in train or eval mode, its parameters still requiring grad.
    """
    replica = copy.deepcopy(server_model)
    if model_mode == "train":
        replace_all_batch_norm_modules_(replica)
        replica.train()
    else:
        replica.eval()
    return replica


class MatchingProblem:
    """loss(x, labels) = objective(replay(x, labels), shared) + tv_weight · prior(x).

    `x` is one trial's candidate inputs B×C×H×W in the attacked (normalised) space and
    `labels` B integer labels or B×classes soft labels (logits). The replay computes the
    update the clients would share with these data: ∇θ of `label_loss` at the server's
    parameters (mean cross-entropy over the batch), FedAvg's unrolled local steps, and
    the mean over the users' equal shares.

    `loss` is a pure function of its arguments (torch.func can vmap and compile it); the
    target and the TV weight may be passed per call, which lets K trials attack K
    different updates (independent images) or use K TV weights at once.
    `value_and_grad` (and `terms_and_grad`) computes the same loss and its gradient for one
    trial with autograd's `create_graph`, which is cheaper than torch.func when there is
    nothing to batch. `loss_terms` gives the data term (the gradient-matching distance, no
    prior) beside the loss: the optimisers minimise the loss, restarts are ranked by the
    distance.
    `replay` says how the shared update was produced (a gradient by default; FedAvg's
    local steps, or the mean over several users). `prior` is the modality's prior on the
    inputs (images: total variation) and `tv_weight` its weight.
    """

    def __init__(
        self,
        model: nn.Module,
        target: Mapping[str, torch.Tensor],
        objective: Objective,
        tv_weight: float = 0.0,
        replay: Replay | None = None,
        prior: Prior | None = None,
        extra_prior: Prior | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        """`model` is the attacker's replica (attacker_model); its parameters stay trainable.

        Args:
            model: the attacker's replica of the server's model (`attacker_model`).
            target: the shared update to match (as read by the replay), one tensor per
                named parameter of `model`; extra names are ignored.
            objective: the distance between a candidate update and the target
                (`get_objective`).
            tv_weight: the prior's weight, >= 0 (default 0).
            replay: how the update was produced (default: one plain gradient).
            prior: the modality's prior on one trial's inputs, weighted by `tv_weight`
                (None: no such term).
            extra_prior: further prior terms on one trial's inputs, already weighted (the
                batch-norm statistics prior, `gradleak.attacks.matching.priors`); None:
                none.
            decoder: what the optimisers move instead of the inputs (a generator's latent,
                `Decoder`); None (default): the inputs themselves.

        Raises:
            ValueError: when a parameter of `model` does not require grad.
            KeyError: when `target` lacks a parameter of `model`.
        """
        self.model = model
        self.replay = Replay() if replay is None else replay
        self.names = [n for n, _ in model.named_parameters()]
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        # The target joins the replica's device once (an update read from a file is on the
        # CPU), so no step copies it.
        self.target = {n: target[n].detach().to(self.device) for n in self.names}
        self.objective = objective
        self.tv_weight = float(tv_weight)
        if prior is None and tv_weight:
            raise ValueError("a prior weight needs a prior: pass the modality's prior")
        self.prior = prior
        self.extra_prior = extra_prior
        self.decoder = None if decoder is None else decoder.to(self.device)
        # The autograd path differentiates through the replica's own parameters.
        self._leaves = list(model.parameters())
        if not all(p.requires_grad for p in self._leaves):
            raise ValueError("the attacker's model must keep requires_grad on its parameters")

    @property
    def device(self) -> torch.device:
        """Where the replica's parameters are: every trial computes there."""
        return module_device(self.model)

    def client_loss(
        self, params: Mapping[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The loss the client differentiates, as a function of the parameters (pure)."""
        logits = functional_call(self.model, (dict(params), self.buffers), (images,))
        return label_loss(logits, labels)

    def candidate_update(
        self, params: Mapping[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The update the client would share with these data (pure)."""
        if self.replay.is_plain_gradient:
            return grad(self.client_loss)(params, images, labels)
        return self.replay(grad(self.client_loss), params, images, labels)

    def _autograd_gradient(
        self, params: Mapping[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """∇θ of the client's loss with autograd's create_graph (params must need grad)."""
        loss = self.client_loss(params, images, labels)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        return dict(zip(params, grads, strict=True))

    def candidate_gradient(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return self.candidate_update(self.params, images, labels)

    def match_terms(
        self,
        candidate: Mapping[str, torch.Tensor],
        images: torch.Tensor,
        target: Mapping[str, torch.Tensor],
        tv_weight: torch.Tensor | float,
    ) -> LossTerms:
        """The loss and its data term given the candidate's update (pure).

        This is the one place the loss is composed: the data term is the objective's
        distance between the candidate's update and the target; the loss adds the weighted
        prior. Restart selection ranks trials by the data term alone (Inverting Gradients),
        while the optimisers minimise the loss.

        Args:
            candidate: the update the candidate inputs would produce, by parameter name.
            images: the candidate inputs B×C×H×W (the prior's argument).
            target: the update to match, by parameter name.
            tv_weight: the prior's weight.

        Returns:
            `LossTerms(loss, distance)`, two scalars; equal when there is no prior.
        """
        distance = self.objective(candidate, target)
        loss = distance
        if self.prior is not None:
            loss = loss + tv_weight * self.prior(images)
        if self.extra_prior is not None:
            loss = loss + self.extra_prior(images)
        return LossTerms(loss, distance)

    def inputs_of(self, variable: torch.Tensor) -> torch.Tensor:
        """One trial's candidate inputs from what the optimisers move (pure).

        Args:
            variable: the trial's variable: its inputs, or with a `decoder` its latent.

        Returns:
            The candidate inputs (the variable itself without a decoder).
        """
        return variable if self.decoder is None else self.decoder.decode(variable)

    def variable_terms(self, terms: LossTerms, variable: torch.Tensor) -> LossTerms:
        """`terms` with the decoder's penalty on the variable added to the loss (pure)."""
        if self.decoder is None:
            return terms
        return LossTerms(terms.loss + self.decoder.penalty(variable), terms.distance)

    def match(
        self,
        candidate: Mapping[str, torch.Tensor],
        images: torch.Tensor,
        target: Mapping[str, torch.Tensor],
        tv_weight: torch.Tensor | float,
    ) -> torch.Tensor:
        """The matching loss given the candidate's update (pure): `match_terms`' loss."""
        return self.match_terms(candidate, images, target, tv_weight).loss

    def loss_terms(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        target: Mapping[str, torch.Tensor] | None = None,
        tv_weight: torch.Tensor | float | None = None,
    ) -> LossTerms:
        """The loss and the gradient-matching distance of one trial (pure).

        Args:
            images: the candidate inputs B×C×H×W (with a `decoder`: its variable).
            labels: B integer labels, or B×classes soft labels (logits).
            target: the update to match (None: the problem's `target`).
            tv_weight: the prior's weight (None: the problem's `tv_weight`).

        Returns:
            `LossTerms(loss, distance)`: objective + tv_weight · prior, and the objective
            alone.
        """
        target = self.target if target is None else target
        tv_weight = self.tv_weight if tv_weight is None else tv_weight
        variable, images = images, self.inputs_of(images)
        candidate = self.candidate_gradient(images, labels)
        return self.variable_terms(self.match_terms(candidate, images, target, tv_weight), variable)

    def loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        target: Mapping[str, torch.Tensor] | None = None,
        tv_weight: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """The matching loss of one trial (pure: safe under vmap, grad and compile).

        Args:
            images: the candidate inputs B×C×H×W (with a `decoder`: its variable).
            labels: B integer labels, or B×classes soft labels (logits).
            target: the update to match (None: the problem's `target`); K trials may
                each pass their own.
            tv_weight: the prior's weight (None: the problem's `tv_weight`).

        Returns:
            A scalar: objective(candidate update, target) + tv_weight · prior(images).
        """
        return self.loss_terms(images, labels, target, tv_weight).loss

    def distance(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        target: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The gradient-matching distance of one trial, without the prior (pure).

        Args:
            images: the candidate inputs B×C×H×W (with a `decoder`: its variable).
            labels: B integer labels, or B×classes soft labels (logits).
            target: the update to match (None: the problem's `target`).

        Returns:
            A scalar: objective(candidate update, target).
        """
        return self.loss_terms(images, labels, target, 0.0).distance

    def value_and_grad(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        target: Mapping[str, torch.Tensor] | None = None,
        tv_weight: torch.Tensor | float | None = None,
        *,
        soft: bool = False,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(∂loss/∂images[, ∂loss/∂labels]), loss for one trial, through autograd."""
        grads, terms = self.terms_and_grad(images, labels, target, tv_weight, soft=soft)
        return grads, terms.loss

    def terms_and_grad(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        target: Mapping[str, torch.Tensor] | None = None,
        tv_weight: torch.Tensor | float | None = None,
        *,
        soft: bool = False,
    ) -> tuple[tuple[torch.Tensor, ...], LossTerms]:
        """(∂loss/∂images[, ∂loss/∂labels]) and the detached `LossTerms`, through autograd.

        Args:
            images: the candidate inputs B×C×H×W (with a `decoder`: its variable).
            labels: B integer labels, or B×classes soft labels (logits).
            target: the update to match (None: the problem's `target`).
            tv_weight: the prior's weight (None: the problem's `tv_weight`).
            soft: differentiate with respect to the labels too.

        Returns:
            The gradients (images first, then labels when `soft`) and the loss and
            distance, both detached.
        """
        target = self.target if target is None else target
        tv_weight = self.tv_weight if tv_weight is None else tv_weight
        variable = images.detach().requires_grad_(True)
        inputs = [variable]
        if soft:
            labels = labels.detach().requires_grad_(True)
            inputs.append(labels)
        with torch.enable_grad():
            images = self.inputs_of(variable)
            if self.replay.is_plain_gradient:
                client_loss = label_loss(self.model(images), labels)
                grads = torch.autograd.grad(client_loss, self._leaves, create_graph=True)
                candidate = dict(zip(self.names, grads, strict=True))
            else:  # unrolled local steps or several users
                leaves = dict(zip(self.names, self._leaves, strict=True))
                candidate = self.replay(self._autograd_gradient, leaves, images, labels)
            terms = self.match_terms(candidate, images, target, tv_weight)
            terms = self.variable_terms(terms, variable)
            return torch.autograd.grad(terms.loss, inputs), LossTerms(
                terms.loss.detach(), terms.distance.detach()
            )
