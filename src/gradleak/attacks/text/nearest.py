"""From optimised word embeddings back to token ids: each position's nearest token.

Two ways to compare a candidate embedding x at position l with the vocabulary's rows e_v:

- "cosine": the cosine similarity of x with e_v (TAG's and LAMP's rule; the default).
- "layer_input": the distance between what the first attention layer receives,
  LayerNorm(x + p_l + t) against LayerNorm(e_v + p_l + t), p_l the position embedding and t
  the token-type embedding. The gradient sees the embeddings only through that
  LayerNorm, which cannot tell x from a(x + p_l + t) + c·1 − p_l − t for any a > 0 and c:
  the matching leaves x free along those directions, and this comparison is blind to them.
  Measured, it placed no more words than the cosine (`TextMatchingConfig.token_match`).

Candidates are the leaked token set when it could be read (plus [CLS] and [SEP]), else
every token but padding. Positions the attacker knows are then set: [CLS] at 0, padding
beyond each granted length, [SEP] at each sequence's last position where lengths are
granted or there is one sequence.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.attacks.text.replica import pin_weights
from gradleak.models.text import Vocabulary

TOKEN_MATCHES = ("cosine", "layer_input")


def candidate_ids(model: nn.Module, leaked: torch.Tensor | None) -> torch.Tensor:
    """The token ids a position may take: the leaked set with [CLS] and [SEP], or (None)
    the whole vocabulary; never padding, which only the lengths place.

    Args:
        model: the server's text model (its vocabulary's special ids).
        leaked: sorted int64 ids read from the update, or None.

    Returns:
        Sorted distinct int64 ids.
    """
    vocabulary = model.vocabulary
    # Kept on the CPU (host-side bookkeeping); `nearest_tokens` moves them to the model.
    if leaked is None:
        ids = torch.arange(vocabulary.size, device="cpu")
    else:
        specials = torch.tensor([vocabulary.cls_id, vocabulary.sep_id], device="cpu")
        ids = torch.cat([leaked.long().flatten().cpu(), specials]).unique()
    return ids[ids != vocabulary.pad_id]


def nearest_tokens(
    embeddings: torch.Tensor,
    model: nn.Module,
    candidates: torch.Tensor,
    mask: torch.Tensor,
    *,
    pin_sep: bool,
    match: str = "cosine",
) -> torch.Tensor:
    """Each position's nearest candidate token, then the known positions set.

    Args:
        embeddings: the recovered word embeddings B×L×H.
        model: the server's text model (its word, position and token-type embeddings and
            their LayerNorm).
        candidates: the token ids positions may take (`candidate_ids`).
        mask: B×L, 1 inside each sequence (all ones when the lengths are not granted).
        pin_sep: set [SEP] at each row's last attended position.
        match: "cosine" or "layer_input" (see the module's docstring).

    Returns:
        B×L int64 token ids: [CLS] first, padding beyond each row's mask. Without pinned
        ends a row ends at the first [SEP] found after position 0 (padding follows it), or
        with [SEP] at the last position when none is found.
    """
    layer = model.bert.embeddings
    words = layer.word_embeddings.weight.detach()
    x = embeddings.detach().to(words.dtype)
    length = x.shape[1]
    ids = candidates.to(words.device)
    chosen = torch.empty(x.shape[:2], dtype=torch.long, device="cpu")
    with torch.no_grad():
        if match == "cosine":
            rows = nn.functional.normalize(words[ids], dim=-1)
            scores = nn.functional.normalize(x, dim=-1) @ rows.T  # B×L×A
            chosen = ids[scores.argmax(dim=-1)].cpu()
        else:
            offsets = (
                layer.position_embeddings.weight[:length] + layer.token_type_embeddings.weight[0]
            )
            seen = layer.LayerNorm(x + offsets)
            # One position at a time: the candidates at that position are A×H, which keeps
            # the whole vocabulary affordable when no token set could be read.
            for position in range(length):
                options = layer.LayerNorm(words[ids] + offsets[position])
                distance = torch.cdist(seen[:, position], options)  # B×A
                chosen[:, position] = ids[distance.argmin(dim=-1)].cpu()
    return _set_known(chosen, mask.cpu(), model.vocabulary, pin_sep)


def _set_known(
    ids: torch.Tensor, mask: torch.Tensor, vocabulary: Vocabulary, pin_sep: bool
) -> torch.Tensor:
    """[CLS] at 0, padding outside the mask, [SEP] where each row ends."""
    first, sep, pad = (w.bool() for w in pin_weights(mask.float(), pin_sep))
    out = ids.clone()
    out[first] = vocabulary.cls_id
    out[pad] = vocabulary.pad_id
    if pin_sep:
        out[sep] = vocabulary.sep_id
        return out
    for row in out:  # the first [SEP] after [CLS] ends the row
        found = (row[1:] == vocabulary.sep_id).nonzero()
        end = int(found[0]) + 1 if len(found) else row.numel() - 1
        row[end] = vocabulary.sep_id
        row[end + 1 :] = vocabulary.pad_id
    return out
