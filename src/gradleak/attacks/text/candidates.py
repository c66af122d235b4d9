"""Which (token, position) pairs can be inputs of the first attention layer.

Every pair's layer-0 input x = LayerNorm(word + position + type-0 embedding) is computed by
the model itself (`TextModel.first_layer_input`) and tested against the span of layer 0's
inputs; a pair is accepted when its relative distance to the span is below the tolerance.

What the test can and cannot tell. Out-of-batch tokens stand far from the span (relative
distance ≥ 0.16 in every case measured on MiniLM-L6 and bert-tiny), the batch's own pairs
within 1e-4 of it. With several sentences, though, pairs that never occurred also lie in
the span: LayerNorm is affine on the embeddings' sum, so when a token u sits at positions
p and q and a token v at q, the pair (v, p) is a combination of the others. Such pairs are
accepted (DAGER's per-position filter has them too); the sequence search discards them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradleak.attacks.text.subspace import Span
from gradleak.models.text import TextModel

# Float32 entries per chunk of candidate inputs (chunk × L × H): about 32 MB.
CHUNK_ELEMENTS = 8_000_000


@dataclass(frozen=True)
class PositionCandidates:
    """The accepted tokens of every position < L, nearest to the span first.

    Attributes:
        ids: per position, the accepted token ids (int64).
        distances: per position, their relative distances to the span (float64).
        tested: how many tokens were tested at every position.
    """

    ids: list[torch.Tensor]
    distances: list[torch.Tensor]
    tested: int

    @property
    def counts(self) -> list[int]:
        return [int(t.numel()) for t in self.ids]

    def has(self, position: int, token: int) -> bool:
        return bool((self.ids[position] == token).any())


def accept_pairs(
    model: TextModel, span: Span, tokens: torch.Tensor, length: int, tolerance: float
) -> PositionCandidates:
    """Test every token of `tokens` at every position < `length` against `span`.

    Chunks of tokens are tested together (one matrix product per chunk, no loop over
    tokens). A float32 pass keeps the pairs within twice the tolerance (its cancellation
    error is about 1e-3 in distance), and float64 settles those.

    Args:
        model: the text model (its embeddings make the inputs).
        span: the span of layer 0's attention inputs.
        tokens: 1-D int64 token ids to test.
        length: positions 0 … length-1 are tested.
        tolerance: the largest relative distance accepted.

    Returns:
        The accepted tokens and distances per position.
    """
    dim = model.hidden_size
    chunk = max(1, CHUNK_ELEMENTS // max(1, length * dim))
    basis32 = span.basis.to(torch.float32)
    coarse = (2 * tolerance) ** 2 + 1e-5  # squared float32 distance kept for float64
    kept_ids: list[list[torch.Tensor]] = [[] for _ in range(length)]
    kept_dist: list[list[torch.Tensor]] = [[] for _ in range(length)]
    with torch.no_grad():
        for start in range(0, tokens.numel(), chunk):
            part = tokens[start : start + chunk]
            inputs = model.first_layer_input(part[:, None].expand(-1, length).contiguous())
            squared = (inputs * inputs).sum(-1)
            inside = inputs @ basis32
            rough = (squared - (inside * inside).sum(-1)) / squared.clamp_min(1e-30)
            token_index, position = (rough < coarse).nonzero(as_tuple=True)
            if token_index.numel() == 0:
                continue
            exact = span.distances(inputs[token_index, position])
            accepted = exact < tolerance
            for p in position[accepted].unique().tolist():
                here = accepted & (position == p)
                kept_ids[p].append(part[token_index[here]])
                kept_dist[p].append(exact[here])
    ids, distances = [], []
    for p in range(length):
        if kept_ids[p]:
            pid, pdist = torch.cat(kept_ids[p]), torch.cat(kept_dist[p])
            order = pdist.argsort()
            ids.append(pid[order])
            distances.append(pdist[order])
        else:
            ids.append(torch.zeros(0, dtype=torch.long, device="cpu"))
            distances.append(torch.zeros(0, dtype=torch.float64, device="cpu"))
    return PositionCandidates(ids, distances, int(tokens.numel()))
