"""Which cells of a study share one stacked attack, and the chunks they run in.

Cells that differ only in the data they attack (the image, and the seed that draws the
attack's start) share their attack: the same attack and settings, model, protocol,
defenses and threat model. Such a group runs as stacked attacks (`scenario/stacked.py`),
in chunks of at most `CHUNK_CELLS` cells, so that Ctrl-C loses at most one chunk's work and
memory stays bounded. The group is read off each cell's described configuration (what its
marker records, `studies/cells.py`), so what counts as "the same attack" cannot drift from
what counts as "the same cell".

A seed also seeds the model's initialisation: cells of one group with different seeds then
attack different models, and `run_stacked` attacks them in separate stacks. Within a group
the cells are ordered by seed, so a chunk mostly holds one seed's cells.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from gradleak.core.errors import GradleakError
from gradleak.scenario.config import RunConfig
from gradleak.scenario.stacked import stackable
from gradleak.studies.cells import described_config

# The most cells one chunk holds (one stacked computation of this many images' trials).
CHUNK_CELLS = 16
# What a cell's described configuration holds about the data it attacks, not its attack.
DATA_KEYS = ("indices", "seed")

T = TypeVar("T")


def stack_key(config: RunConfig) -> str | None:
    """The cell's attack, as a key: cells with equal keys may share one stacked attack.

    Args:
        config: the cell's run configuration.

    Returns:
        Its described configuration (`described_config`) less the data it attacks
        (`DATA_KEYS`), as canonical JSON; None for a cell that runs on its own (an attack
        that does not stack updates, text, a target PSNR: `scenario.stacked.stackable`).
    """
    if not stackable(config):
        return None
    plain = {k: v for k, v in described_config(config).items() if k not in DATA_KEYS}
    return json.dumps(plain, sort_keys=True, default=str)


def stack_chunks(
    items: Sequence[T],
    config_of: Callable[[T], RunConfig],
    *,
    size: int = CHUNK_CELLS,
    workers: int = 1,
) -> list[list[T]]:
    """The items as chunks: cells of one group together, each other cell alone.

    Args:
        items: the cells to run, in the study's order.
        config_of: each item's run configuration.
        size: the most cells per chunk, >= 1 (1: every cell alone, as without stacking).
        workers: the processes the chunks are spread over: a group is cut into at least
            this many chunks where it has the cells, so every worker gets work.

    Returns:
        Chunks in order of each group's first cell; within a chunk, cells by seed, then in
        the study's order.
    """
    groups: dict[object, list[tuple[int, T]]] = {}
    for position, item in enumerate(items):
        config = config_of(item)
        key = stack_key(config) if size > 1 else None
        groups.setdefault(position if key is None else key, []).append((config.seed, item))
    chunks: list[list[T]] = []
    for group in groups.values():
        group.sort(key=lambda member: member[0])  # stable: the study's order within a seed
        members = [item for _, item in group]
        per_chunk = max(1, min(size, math.ceil(len(members) / max(1, workers))))
        chunks += [members[i : i + per_chunk] for i in range(0, len(members), per_chunk)]
    return chunks


def tell_fallback(
    cells: int, error: Exception, notice: Callable[[str], None] | None = None
) -> None:
    """Say in one line that a chunk's stacked attack failed and its cells run one by one.

    Args:
        cells: the chunk's cells.
        error: what the stacked attack raised (each cell alone then records its own
            outcome, so the sweep's tables hold the reason of any cell that fails alone).
        notice: where the line goes (default: standard error, as "notice: …").
    """
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    reason = text if isinstance(error, GradleakError) else f"{type(error).__name__}: {text}"
    line = f"the stacked attack of {cells} cells failed ({reason[:200]}); running them one by one"
    if notice is None:
        print(f"notice: {line}", file=sys.stderr)
    else:
        notice(line)
