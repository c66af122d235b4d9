"""The search's shared pieces: a candidate sequence, a length's record, the settings, the
candidates of each position of a length, and random starts."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gradleak.attacks.text.context import ContextTest

GUESSES = 8  # best uncertified sequences kept per length, to fill a batch's gaps


@dataclass(frozen=True)
class Found:
    """One candidate sequence and its context distances.

    Attributes:
        ids: ℓ token ids.
        distances: ℓ distances of its feed-forward inputs to their span.
        certified: every distance is below the sequence tolerance.
    """

    ids: torch.Tensor
    distances: torch.Tensor
    certified: bool

    @property
    def score(self) -> float:
        return float(self.distances.max())

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(int(t) for t in self.ids)


@dataclass
class LengthSearch:
    """The outcome of searching one length: certified sequences and the best guesses."""

    length: int
    certified: list[Found] = field(default_factory=list)
    guesses: list[Found] = field(default_factory=list)
    method: str = ""
    starts: int = 0

    def add(self, found: Found) -> bool:
        """Record a result; True when it is a new certified sequence."""
        keys = {f.key for f in self.certified}
        if found.certified:
            if found.key in keys:
                return False
            self.certified.append(found)
            self.guesses = [g for g in self.guesses if g.key != found.key]
            return True
        if found.key not in keys and all(g.key != found.key for g in self.guesses):
            self.guesses.append(found)
            self.guesses.sort(key=lambda f: f.score)
            del self.guesses[GUESSES:]
        return False


@dataclass(frozen=True)
class SearchSettings:
    """How hard to search (see the module's notes)."""

    tolerance: float
    exhaustive_limit: int
    patience: int
    max_sweeps: int
    beam_width: int
    max_evaluations: int = 0  # sequences the context test may evaluate; 0: no bound


def within(test: ContextTest, settings: SearchSettings) -> bool:
    """Whether the search may start another decoding or start (its budget is not spent)."""
    return settings.max_evaluations <= 0 or test.evaluated < settings.max_evaluations


def length_choices(
    accepted: list[torch.Tensor], length: int, cls_id: int, sep_id: int, pad_id: int
) -> list[torch.Tensor]:
    """The candidates of each position of a sequence of `length` tokens: [CLS] first,
    [SEP] last, accepted word tokens between (no special token mid-sequence)."""
    specials = torch.tensor([cls_id, sep_id, pad_id], device="cpu")
    middle = [c[~torch.isin(c, specials)] for c in accepted[1 : length - 1]]
    return [torch.tensor([cls_id], device="cpu"), *middle, torch.tensor([sep_id], device="cpu")]


def random_start(
    choices: list[torch.Tensor], known: list[Found], generator: torch.Generator
) -> torch.Tensor:
    """A random sequence preferring, at each position, tokens no certified sequence uses."""
    start = torch.empty(len(choices), dtype=torch.long, device="cpu")
    for p, options in enumerate(choices):
        used = {int(f.ids[p]) for f in known if f.ids.numel() > p}
        unused = [t for t in options.tolist() if t not in used]
        fresh = torch.tensor(unused, dtype=torch.long, device="cpu")
        pool = fresh if fresh.numel() else options
        start[p] = pool[int(torch.randint(pool.numel(), (1,), generator=generator, device="cpu"))]
    return start
