"""The attacker's copy of a text model that reads candidate word embeddings.

The optimisation attacks on text move dummy word embeddings, not token ids: the replica
takes the output of the word-embedding lookup directly, so the lookup itself never runs
and the word-embedding matrix gets no gradient from it. The matrix is therefore turned
into a buffer: it stays in the forward pass (the masked-language-modelling decoder is tied
to it) but is not one of the parameters whose update is replayed and matched. What the
shared update says about it (which rows are non-zero) is read by the token-set step
instead.

Each candidate row carries its attention mask as one extra channel (B×L×(H + 1)): the
clients' replay splits the batch into users' shares and mini-batches, and a mask held on
the model would no longer line up with the rows it is called on. The replica splits the
channel off on every call. Positions the attacker knows are pinned to their token's
embedding whatever the candidate holds there: [CLS] at position 0, padding beyond each
row's mask, and, with `pin_sep`, [SEP] at each row's last attended position.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.attacks.matching.problem import attacker_model
from gradleak.core.knowledge import Knowledge


def embedding_replica(model: nn.Module, model_mode: str, *, pin_sep: bool) -> nn.Module:
    """The attacker's replica of a text model, fed candidate embeddings with a mask channel.

    Args:
        model: the server's text model (`gradleak.models.text.TextModel`; left unchanged).
        model_mode: the clients' mode ("train" or "eval"; text models have no batch norm,
            so both compute the same).
        pin_sep: pin [SEP] at each row's last attended position (the attacker knows where
            each sequence ends: lengths granted, or a single sequence).

    Returns:
        A deep copy whose word-embedding matrix is a buffer, not a parameter, and which
        takes inputs B×L×(H + 1) (embeddings and mask, see `with_mask`) or B×L×H
        (embeddings attended everywhere).
    """
    replica = attacker_model(model, model_mode)
    tied = replica.word_embeddings.weight
    weight = tied.detach()
    # The lookup is skipped, so its rows are not matched; every module that shares the
    # matrix (the masked-language-modelling decoder) gets the same buffer, still tied.
    for module in replica.modules():
        for name, value in list(module._parameters.items()):
            if value is tied:
                del module._parameters[name]
                module.register_buffer(name, weight)
    vocabulary = replica.vocabulary
    pins = _Pins(
        weight[vocabulary.cls_id],
        weight[vocabulary.sep_id],
        weight[vocabulary.pad_id],
        pin_sep=pin_sep,
    )
    replica.register_forward_pre_hook(pins)
    return replica


def attention_mask(knowledge: Knowledge) -> torch.Tensor:
    """B×L: 1 inside each granted sequence length, 0 beyond; all ones when not granted.

    Without the lengths every row attends to all L positions, which is exact only when the
    sequences share one length (the padded length L is the longest).
    """
    b, length = knowledge.batch_size, knowledge.data_shape[0]
    # On the CPU, from what the threat model grants; users move it to their inputs' device.
    if knowledge.sequence_lengths is None:
        return torch.ones(b, length, device="cpu")
    positions = torch.arange(length, device="cpu")
    lengths = torch.tensor(knowledge.sequence_lengths, device="cpu")
    return (positions < lengths[:, None]).float()


def with_mask(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Candidate embeddings …×B×L×H with the mask B×L appended as channel H."""
    channel = mask.to(embeddings).expand(*embeddings.shape[:-1])
    return torch.cat([embeddings, channel.unsqueeze(-1)], dim=-1)


def split_mask(inputs: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings …×H, mask …) from inputs with a mask channel; all ones without one."""
    if inputs.shape[-1] == hidden + 1:
        return inputs[..., :hidden], inputs[..., hidden].detach()
    return inputs, torch.ones(inputs.shape[:-1], dtype=inputs.dtype, device=inputs.device)


def pin_weights(mask: torch.Tensor, pin_sep: bool) -> tuple[torch.Tensor, ...]:
    """Where [CLS], [SEP] and padding are pinned, as three 0/1 tensors shaped like `mask`.

    [CLS] at position 0; padding where the mask is 0; with `pin_sep`, [SEP] at each row's
    last attended position (not position 0).
    """
    first = torch.zeros_like(mask)
    first[..., 0] = 1.0
    after = torch.cat([mask[..., 1:], torch.zeros_like(mask[..., :1])], dim=-1)
    last = mask * (1.0 - after) * (1.0 - first)
    sep = last if pin_sep else torch.zeros_like(mask)
    return first, sep, 1.0 - mask


class _Pins:
    """Forward pre-hook: split the mask channel off, set it as the model's input mask, and
    put the known tokens' embeddings at the pinned positions."""

    def __init__(
        self, cls: torch.Tensor, sep: torch.Tensor, pad: torch.Tensor, *, pin_sep: bool
    ) -> None:
        self.tokens = torch.stack([cls, sep, pad])  # 3×H
        self.pin_sep = pin_sep

    def __call__(
        self, module: nn.Module, args: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor] | None:
        (inputs,) = args
        if not inputs.is_floating_point():  # token ids: the model masks padding itself
            return None
        hidden = self.tokens.shape[-1]
        embeddings, mask = split_mask(inputs, hidden)
        weights = torch.stack(pin_weights(mask, self.pin_sep), dim=-1)  # …×L×3
        pinned = weights.sum(dim=-1, keepdim=True).clamp(max=1.0)
        known = weights @ self.tokens.to(embeddings)
        # TextModel.forward hands it to BERT for floating inputs. It is set on every call,
        # so it always belongs to the rows being computed.
        module.input_mask = additive_mask(mask)
        return (embeddings * (1.0 - pinned) + known,)


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask …×B×L as the additive mask …×B×1×1×L BERT's attention adds to its scores.

    Hugging Face's BERT takes a four-dimensional mask as it is, while it inspects the
    values of a B×L one (whether any position is masked) to decide how to build the mask,
    which a mask varying over vmapped trials cannot answer.
    """
    lowest = torch.finfo(mask.dtype).min
    return ((1.0 - mask) * lowest).unsqueeze(-2).unsqueeze(-2)
