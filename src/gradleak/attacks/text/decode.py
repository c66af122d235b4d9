"""Decoding sentences from an anchor position with a beam, then polishing them in the
lengths they fit best (the search's second stage)."""

from __future__ import annotations

import torch

from gradleak.attacks.text.context import ContextTest
from gradleak.attacks.text.polish import conditional_modes, sweep
from gradleak.attacks.text.sequences import Found, LengthSearch, SearchSettings, within

SEED_TRIES = 2  # decodings per anchor token
FRAMES = 3  # lengths a decoded sentence is polished in, nearest first
QUICK_FIXES = 2  # worst positions changed before the frames are compared


def decode_phase(
    lengths: list[int],
    choices: dict[int, list[torch.Tensor]],
    searches: dict[int, LengthSearch],
    test: ContextTest,
    settings: SearchSettings,
    batch: int,
    caps: dict[int, int] | None,
) -> None:
    """Starts decoded around each token of the anchor position, polished in their best frame.

    The anchor is the word position with the fewest candidates (where the layer-0 test
    leaves little besides the batch's own tokens), so its tokens seed the sentences. Each
    seed is tried up to `SEED_TRIES` times (sentences may share the anchor's token), those
    no certified sentence holds first; the phase ends when `batch` sequences are certified
    or `patience` + `batch` seeds in a row certify nothing new.
    """
    longest = choices[max(lengths)]
    words = range(1, len(longest) - 1)
    anchor = min(words, key=lambda p: (longest[p].numel(), p)) if len(words) else 0
    tries: dict[int, int] = {}
    misses = 0
    while misses < settings.patience + batch and within(test, settings):
        known = [f for s in searches.values() for f in s.certified]
        open_lengths = [n for n in lengths if caps is None or len(searches[n].certified) < caps[n]]
        if len(known) >= batch or not open_lengths:
            return
        held = {int(f.ids[anchor]) for f in known if f.ids.numel() > anchor}
        seeds = [t for t in longest[anchor].tolist() if tries.get(t, 0) < SEED_TRIES]
        if not seeds:
            return
        seed = min(seeds, key=lambda t: (tries.get(t, 0), t in held))
        tries[seed] = tries.get(seed, 0) + 1
        decoded = beam(anchor, seed, longest, test, known, settings.beam_width)
        new = False
        frames = best_frames(decoded, open_lengths, choices, test, settings)
        for frame, start in frames[:FRAMES]:
            searches[frame].starts += 1
            found = conditional_modes(start, choices[frame], test, settings)
            new = searches[frame].add(found)
            if found.certified:
                break
        misses = 0 if new else misses + 1


def beam(
    anchor: int,
    seed: int,
    choices: list[torch.Tensor],
    test: ContextTest,
    known: list[Found],
    width: int,
) -> torch.Tensor:
    """The words of one sentence decoded left to right around `seed` at `anchor`.

    Each position takes every candidate in turn and a beam of `width` partial sentences
    is kept, scored by the mean squared distance of the chosen positions' feed-forward
    inputs when attention reaches the chosen positions only (what is not chosen yet is
    masked out, as padding would be). A trained encoder's inputs depend most on nearby
    words, so the beam follows one sentence. A certified sentence's word pair at the same
    place is avoided, so a beam that runs into a known sentence leaves it.

    Returns:
        The best beam: [CLS] and the words of positions 1 … len(choices)-2.
    """
    end = len(choices) - 1
    base = torch.tensor([int(c[0]) for c in choices[:end]], device="cpu")
    base[anchor] = seed
    chosen = torch.zeros(end, dtype=torch.bool, device="cpu")
    chosen[0] = chosen[anchor] = True
    beams = [base]
    for p in range(1, end):
        if p == anchor:
            continue
        chosen[p] = True
        size = max(p, anchor) + 1
        options = choices[p]
        trials = torch.cat([b[:size].repeat(options.numel(), 1) for b in beams])
        trials[:, p] = options.repeat(len(beams))
        distances = test.distances(trials, chosen[:size])
        score = (distances[:, chosen[:size]] ** 2).mean(dim=1)
        for f in known:
            if f.ids.numel() > p + 1:
                same = (trials[:, p - 1] == f.ids[p - 1]) & (trials[:, p] == f.ids[p])
                if not bool(same.all()):
                    score[same] = float("inf")
        order = score.argsort()[:width].tolist()
        beams = [torch.cat([trials[i], beams[i // options.numel()][size:]]) for i in order]
    return beams[0]


def best_frames(
    decoded: torch.Tensor,
    lengths: list[int],
    choices: dict[int, list[torch.Tensor]],
    test: ContextTest,
    settings: SearchSettings,
) -> list[tuple[int, torch.Tensor]]:
    """The decoded words in each length's frame ([SEP] after the words cut there), each
    with its `QUICK_FIXES` worst positions changed as one sweep would, nearest the span
    (mean squared distance) first."""
    framed = []
    for n in lengths:
        sequence = torch.cat([decoded[: n - 1], choices[n][-1]])
        distances = test.distances(sequence[None])[0]
        sequence, distances, _ = sweep(
            sequence, distances, choices[n], test, settings, limit=QUICK_FIXES
        )
        framed.append((float((distances**2).mean()), n, sequence))
    framed.sort(key=lambda item: item[0])
    return [(n, sequence) for _, n, sequence in framed]
