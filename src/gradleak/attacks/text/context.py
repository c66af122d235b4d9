"""The second test: a whole candidate sequence against the span of a context-dependent layer.

Layer 0's feed-forward block reads u_t = LayerNorm(x_t + attention output_t), which depends
on every token of t's sequence (the encoder attends both ways). Its first Linear's weight
gradient spans the u_t of the batch, so a candidate sequence is right when every one of its
u_t lies in that span — and a sequence built from accepted pairs in the wrong order or from
two sentences mixed puts some u_t outside.

Why layer 0's feed-forward input rather than layer 1's attention input (DAGER's choice):
both depend on the whole sequence, but in a 2-layer classifier layer 1 is the last layer,
whose query, key and value gradients only see [CLS]'s path (rank ≤ 1 + 2 × heads), so its
span cannot certify anything; the feed-forward input of layer 0 has a full-rank span in
every model of two layers or more, and it is cheaper to compute.

Speed: a (token, position)'s layer-0 input and its query, key and value do not depend on the
rest of the sequence, so they are computed once per candidate pair with the model's own
modules; a sequence then costs its attention (softmax(q kᵀ · scale) v per head, as BERT's
eager attention computes it) and the model's attention-output block. `feed_forward_inputs`
gives the same vectors as the model's forward pass to float32 rounding.
"""

from __future__ import annotations

import torch

from gradleak.attacks.text.subspace import Span
from gradleak.models.text import TextModel

# Float32 entries of the gathered inputs per evaluation chunk (sequences × length × H).
CHUNK_ELEMENTS = 4_000_000


def context_layer_name(model: TextModel) -> str:
    """The parameter whose gradient spans layer 0's feed-forward inputs."""
    return "bert.encoder.layer.0.intermediate.dense.weight"


class ContextTest:
    """Relative distances of candidate sequences' layer-0 feed-forward inputs to a span.

    Args:
        model: the text model (evaluated without gradients; left unchanged).
        span: the span of those inputs, from the update.
        tokens: per position, the tokens sequences may hold there (int64).
    """

    def __init__(self, model: TextModel, span: Span, tokens: list[torch.Tensor]) -> None:
        self.model = model
        self.span = span
        self.attention = model.bert.encoder.layer[0].attention
        own = self.attention.self
        self.heads = int(own.num_attention_heads)
        self.head_size = int(own.attention_head_size)
        self.scale = float(getattr(own, "scaling", self.head_size**-0.5))
        self.evaluated = 0  # sequences evaluated so far
        self.ids = [torch.unique(t.long()) for t in tokens]  # sorted, per position
        widest = max(1, max(t.numel() for t in self.ids))
        pad = model.vocabulary.pad_id
        table = torch.full((widest, len(self.ids)), pad, dtype=torch.long, device="cpu")
        for p, ids in enumerate(self.ids):
            table[: ids.numel(), p] = ids
        with torch.no_grad():
            x = model.first_layer_input(table)  # widest × L × H: row i, position p
            self.x = x
            self.q, self.k, self.v = own.query(x), own.key(x), own.value(x)
        self.table = table

    def _rows(self, sequences: torch.Tensor) -> torch.Tensor:
        """Each token's row in the per-position tables (n × ℓ)."""
        rows = torch.empty_like(sequences)
        for p in range(sequences.shape[1]):
            ids = self.ids[p]
            column = sequences[:, p].contiguous()
            found = torch.searchsorted(ids, column).clamp_max(ids.numel() - 1)
            if not bool((ids[found] == column).all()):
                raise ValueError(f"a sequence holds a token not prepared at position {p}")
            rows[:, p] = found
        return rows

    def feed_forward_inputs(
        self, sequences: torch.Tensor, attended: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Layer 0's feed-forward inputs (n × ℓ × H) of n unpadded sequences of ℓ tokens.

        Args:
            sequences: n × ℓ token ids, each prepared at its position.
            attended: ℓ booleans, the positions every token attends to (None: all), as
                the model's padding mask would leave them; the others are not yet chosen.
        """
        n, length = sequences.shape
        rows = self._rows(sequences)
        positions = torch.arange(length, device="cpu").expand(n, length)
        with torch.no_grad():
            x = self.x[rows, positions]
            heads = (n, length, self.heads, self.head_size)
            q, k, v = (
                t[rows, positions].view(heads).transpose(1, 2) for t in (self.q, self.k, self.v)
            )
            scores = q @ k.transpose(2, 3) * self.scale
            if attended is not None:
                scores = scores.masked_fill(~attended, float("-inf"))
            context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, length, -1)
            return self.attention.output(context, x)

    def distances(
        self, sequences: torch.Tensor, attended: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Distances (n × ℓ, float64) of n unpadded sequences of ℓ tokens (see
        `feed_forward_inputs` for `attended`)."""
        n, length = sequences.shape
        rows = max(1, CHUNK_ELEMENTS // max(1, length * self.model.hidden_size))
        out = [
            self.span.distances(self.feed_forward_inputs(sequences[s : s + rows], attended))
            for s in range(0, n, rows)
        ]
        self.evaluated += n
        return torch.cat(out) if out else torch.zeros(0, length, dtype=torch.float64, device="cpu")
