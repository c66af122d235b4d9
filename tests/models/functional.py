"""Functional (torch.func) losses shared by the model tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

Params = dict[str, torch.Tensor]


def split_state(model: nn.Module) -> tuple[Params, Params]:
    """Detached parameters and buffers of `model`, as functional_call wants them."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    return params, buffers


def make_loss(model: nn.Module, buffers: Params) -> Callable[..., torch.Tensor]:
    """Cross-entropy of the model on a batch, as a pure function of (params, x, y)."""

    def loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)

    return loss


def input_grads(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """d loss / d x for each trial of xs (trials, batch, C, H, W), vmapped over trials."""
    params, buffers = split_state(model)
    loss = make_loss(model, buffers)
    return vmap(grad(loss, argnums=1), in_dims=(None, 0, 0))(params, xs, ys)


def gradient_matching_grads(
    model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, target: Params
) -> torch.Tensor:
    """d ||grad_params(x) - target||^2 / d x per trial: a gradient of a gradient."""
    params, buffers = split_state(model)
    loss = make_loss(model, buffers)

    def mismatch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shared = grad(loss)(params, x, y)
        return sum(((shared[k] - target[k]) ** 2).sum() for k in shared)

    return vmap(grad(mismatch), in_dims=(0, 0))(xs, ys)


def autograd_matching_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Params
) -> torch.Tensor:
    """The same quantity for one trial through autograd's create_graph path."""
    x = x.clone().requires_grad_(True)
    names = [name for name, _ in model.named_parameters()]
    loss = F.cross_entropy(model(x), y)
    shared = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    mismatch = sum(((g - target[n]) ** 2).sum() for n, g in zip(names, shared, strict=True))
    (result,) = torch.autograd.grad(mismatch, x)
    return result


def param_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Params:
    """The gradient a client would share for one batch."""
    params, buffers = split_state(model)
    return grad(make_loss(model, buffers))(params, x, y)
