"""Assembling sequences from per-position candidates with the context test.

A sequence of length ℓ is [CLS], one accepted token per position 1 … ℓ-2, [SEP]; it is
certified when all its layer-0 feed-forward inputs lie in their span (`ContextTest`). The
possible lengths are those where [SEP] was accepted. With several sentences the layer-0
test accepts nearly every batch token at nearly every position (see `candidates`), so the
candidate sequences of a length are many; they are searched in three stages, until B are
certified:

1. Exhaustive: lengths with at most `exhaustive_limit` candidate sequences are all tested.
2. Decoding: the word position with the fewest candidates (often exactly the batch's own
   tokens there) anchors the sentences. From each of its tokens a beam search decodes the
   other positions left to right, scoring partial sentences by their inputs' distances
   with attention over the chosen positions only; on a trained encoder (MiniLM) this lands
   within a word or two of a batch sentence. The decoded words are cut into every possible
   length, the nearest frames are polished (below), and a certified result steers the next
   decodings away from its word pairs.
3. Random starts, one per open length and round, polished, for what decoding missed.

Polishing is iterated conditional modes: each position, farthest from the span first,
takes the candidate that minimises the energy Σ_t d_t² (d_t: the t-th input's distance),
the others held; when single changes are stuck, exchanges of two words and rotations of
three are tried (attention mixes a sentence's words almost like a bag of words, so a
sentence with words in the wrong places is a local minimum of single changes).

A randomly initialised encoder (bert-tiny) attends almost uniformly: a wrong or misplaced
token moves every input by about 2e-4 to 8e-4, not far above float32 rounding, so only the
exhaustive stage is reliable there and certificates need the margin check of
`nearest_neighbour`.
"""

from __future__ import annotations

import math

import torch

from gradleak.attacks.text.context import ContextTest
from gradleak.attacks.text.decode import decode_phase
from gradleak.attacks.text.polish import conditional_modes
from gradleak.attacks.text.sequences import (
    GUESSES,
    Found,
    LengthSearch,
    SearchSettings,
    random_start,
    within,
)

EXHAUSTIVE_BATCH = 512  # sequences per batch of the exhaustive test


def search_batch(
    choices: dict[int, list[torch.Tensor]],
    test: ContextTest,
    settings: SearchSettings,
    generator: torch.Generator,
    batch: int,
    caps: dict[int, int] | None = None,
) -> list[LengthSearch]:
    """Find up to `batch` certified sequences over the possible lengths.

    Lengths with few candidate sequences are tested exhaustively first. The others take
    one start each per round (round robin), so that a sentence found at its own length
    steers the other lengths' starts away from its tokens; the search ends when `batch`
    sequences are certified or `patience` rounds in a row certify nothing new.

    Args:
        choices: per possible length, its candidates per position (none empty).
        test: the context test.
        settings: tolerance, exhaustive limit, patience, sweeps.
        generator: draws the starts.
        batch: how many sequences the batch holds.
        caps: per length, how many sequences have it (granted lengths), or None.

    Returns:
        One search record per length, longest first.
    """
    searches = {n: LengthSearch(n) for n in sorted(choices, reverse=True)}
    sequential = []
    for n, options in choices.items():
        size = math.prod(int(c.numel()) for c in options)
        if size <= settings.exhaustive_limit:
            searches[n].method = f"exhaustive ({size} sequences)"
            exhaustive(options, test, settings, searches[n])
        else:
            searches[n].method = "decoded and polished"
            sequential.append(n)

    def certified() -> list[Found]:
        return [f for s in searches.values() for f in s.certified]

    if sequential:
        decode_phase(sequential, choices, searches, test, settings, batch, caps)
    misses = 0
    while misses < settings.patience and len(certified()) < batch and within(test, settings):
        lengths = [n for n in sequential if caps is None or len(searches[n].certified) < caps[n]]
        if not lengths:
            break
        progress = False
        for n in lengths:  # one start per length and round
            if len(certified()) >= batch or not within(test, settings):
                break
            start = random_start(choices[n], certified(), generator)
            searches[n].starts += 1
            progress |= searches[n].add(conditional_modes(start, choices[n], test, settings))
        misses = 0 if progress else misses + 1
    return list(searches.values())


def exhaustive(
    choices: list[torch.Tensor], test: ContextTest, settings: SearchSettings, result: LengthSearch
) -> None:
    """Test every sequence of one length (in batches) and record the certified ones and
    the best guesses."""
    grids = torch.meshgrid(*[torch.arange(c.numel(), device="cpu") for c in choices], indexing="ij")
    index = torch.stack([g.reshape(-1) for g in grids], dim=1)
    table = torch.nn.utils.rnn.pad_sequence(choices, batch_first=True)  # positions × widest
    positions = torch.arange(len(choices), device="cpu")
    for start in range(0, index.shape[0], EXHAUSTIVE_BATCH):
        sequences = table[positions, index[start : start + EXHAUSTIVE_BATCH]]
        distances = test.distances(sequences)
        worst = distances.max(dim=1).values
        for row in worst.argsort().tolist():
            ok = bool(worst[row] < settings.tolerance)
            full = len(result.guesses) >= GUESSES
            if not ok and full and worst[row] >= result.guesses[-1].score:
                break
            result.add(Found(sequences[row].clone(), distances[row], ok))
