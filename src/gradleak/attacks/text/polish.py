"""Polishing a candidate sequence: iterated conditional modes with word exchanges, and the
margin check that a certified sequence stands far from its one-edit neighbours."""

from __future__ import annotations

import itertools

import torch

from gradleak.attacks.text.context import ContextTest
from gradleak.attacks.text.sequences import Found, SearchSettings

ROTATED = 6  # positions farthest from the span whose triples are rotated


def conditional_modes(
    start: torch.Tensor, choices: list[torch.Tensor], test: ContextTest, settings: SearchSettings
) -> Found:
    """Sweeps of single-token changes, then reorderings when those are stuck, until the
    sequence certifies, nothing improves, or `max_sweeps` sweeps ran."""
    sequence = start.clone()
    distances = test.distances(sequence[None])[0]
    for _ in range(settings.max_sweeps):
        sequence, distances, changed = sweep(sequence, distances, choices, test, settings)
        if not changed and not bool((distances < settings.tolerance).all()):
            sequence, distances, changed = reorder(sequence, distances, choices, test)
        if not changed or bool((distances < settings.tolerance).all()):
            break
    return Found(sequence, distances, bool((distances < settings.tolerance).all()))


def sweep(
    sequence: torch.Tensor,
    distances: torch.Tensor,
    choices: list[torch.Tensor],
    test: ContextTest,
    settings: SearchSettings,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One pass over the positions (the `limit` farthest only, if given), each taking the
    candidate of least energy Σ_t d_t²; stops as soon as the sequence certifies. The
    positions farthest from the span go first: a near miss's wrong token is fixed before
    other positions drift to make up for it."""
    changed = False
    order = [p for p in distances.argsort(descending=True).tolist() if choices[p].numel() > 1]
    for p in order[:limit]:
        options = choices[p]
        if bool((distances < settings.tolerance).all()):
            break
        trials = sequence.repeat(options.numel(), 1)
        trials[:, p] = options
        trial_distances = test.distances(trials)
        best = int((trial_distances**2).sum(dim=1).argmin())
        changed |= int(options[best]) != int(sequence[p])
        sequence, distances = trials[best].clone(), trial_distances[best]
    return sequence, distances, changed


def reorder(
    sequence: torch.Tensor,
    distances: torch.Tensor,
    choices: list[torch.Tensor],
    test: ContextTest,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The best reordering of the words that lowers the energy, or the sequence unchanged.

    Attention mixes a sentence's words almost like a bag of words, so a sentence with two
    or three of its words in the wrong places is a local minimum of single-token changes.
    Tried: every exchange of two positions, and both rotations of every three of the
    `ROTATED` positions farthest from the span.
    """
    length = sequence.numel()
    moves: list[list[tuple[int, int]]] = []
    for i in range(1, length - 1):
        for j in range(i + 1, length - 1):
            if sequence[i] != sequence[j]:
                moves.append([(i, j), (j, i)])
    worst = [p for p in distances.argsort(descending=True).tolist() if 0 < p < length - 1]
    for trio in itertools.combinations(sorted(worst[:ROTATED]), 3):
        a, b, c = trio
        moves.append([(a, b), (b, c), (c, a)])
        moves.append([(a, c), (b, a), (c, b)])
    if not moves:
        return sequence, distances, False
    trials = sequence.repeat(len(moves), 1)
    for row, move in enumerate(moves):
        for target, source in move:
            trials[row, target] = sequence[source]
    valid = torch.ones(len(moves), dtype=torch.bool, device="cpu")
    for p, options in enumerate(choices):
        valid &= torch.isin(trials[:, p], options)
    if not bool(valid.any()):
        return sequence, distances, False
    trials = trials[valid]
    trial_distances = test.distances(trials)
    energy = (trial_distances**2).sum(dim=1)
    best = int(energy.argmin())
    if float(energy[best]) >= float((distances**2).sum()):
        return sequence, distances, False
    return trials[best].clone(), trial_distances[best], True


def nearest_neighbour(found: Found, choices: list[torch.Tensor], test: ContextTest) -> float:
    """The smallest score (largest distance) among the sequences one edit away from
    `found`: one position changed to another candidate, or two positions exchanged.

    A certified sequence should stand far below all of them; where it does not (a model
    whose attention hardly tells one order from another), its certificate means little.
    """
    sequence, length = found.ids, found.ids.numel()
    edits = []
    for p, options in enumerate(choices):
        others = options[options != sequence[p]]
        if others.numel():
            trials = sequence.repeat(others.numel(), 1)
            trials[:, p] = others
            edits.append(trials)
    for i in range(1, length - 1):
        for j in range(i + 1, length - 1):
            fits = bool((choices[i] == sequence[j]).any() and (choices[j] == sequence[i]).any())
            if sequence[i] != sequence[j] and fits:
                swapped = sequence.clone()
                swapped[i], swapped[j] = sequence[j], sequence[i]
                edits.append(swapped[None])
    if not edits:
        return float("inf")
    return float(test.distances(torch.cat(edits)).max(dim=1).values.min())
