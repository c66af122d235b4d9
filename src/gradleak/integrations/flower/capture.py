"""The capture folder: every round's global model and every client's update, as files.

Layout (rounds and nodes as Flower numbers them)::

    OUT/captures.jsonl                      one line per captured update (the index)
    OUT/round-001/global.pt                 the round's global model (a state dict)
    OUT/round-001/node-<id>/update.pt       the client's update (`SharedUpdate.save`)
    OUT/round-001/node-<id>/attack/         the attack's run directory, once attacked

The files hold tensors only: `gradleak attack --update round-001/node-<id>/update.pt
--checkpoint round-001/global.pt ...` attacks one of them again, and `attack_capture_folder`
all of them afterwards.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically, write_atomically
from gradleak.core.update import SharedUpdate
from gradleak.core.update_files import read_state_file

INDEX = "captures.jsonl"
GLOBAL_FILE = "global.pt"
UPDATE_FILE = "update.pt"
ATTACK_DIR = "attack"


@dataclass(frozen=True)
class Captured:
    """One client's update in one round, as saved.

    Attributes:
        round: the server round (from 1).
        node: the client's node id.
        num_samples: the number of examples the client reported.
        update_file: its update (`SharedUpdate.save`), relative to the capture folder.
        global_file: the global model it received, relative to the capture folder.
        reply_metrics: the numeric metrics of its reply (a client-side guard's report).
    """

    round: int
    node: int
    num_samples: int
    update_file: str
    global_file: str
    reply_metrics: Mapping[str, float]

    @property
    def name(self) -> str:
        return f"round {self.round}, node {self.node}"


class CaptureFolder:
    """Writes and reads a capture folder (see the module's layout); safe across threads.

    Args:
        root: the folder (created when the first file is written).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._lines: list[str] = []  # the index lines this object wrote

    def round_dir(self, server_round: int) -> Path:
        return self.root / f"round-{server_round:03d}"

    def node_dir(self, server_round: int, node: int) -> Path:
        return self.round_dir(server_round) / f"node-{node}"

    def attack_dir(self, item: Captured) -> Path:
        return self.node_dir(item.round, item.node) / ATTACK_DIR

    def save_global(
        self, server_round: int, state: Mapping[str, torch.Tensor], suffix: str = ""
    ) -> str:
        """Write a global model of the round (`suffix` tells apart the models of a
        strategy that sends its clients different ones); returns its path inside the
        folder."""
        path = self.round_dir(server_round) / GLOBAL_FILE.replace(".pt", f"{suffix}.pt")
        with replaced_atomically(path) as partial:
            torch.save({name: t.detach().cpu() for name, t in state.items()}, partial)
        return str(path.relative_to(self.root))

    def save_update(
        self,
        server_round: int,
        node: int,
        update: SharedUpdate,
        global_file: str,
        reply_metrics: Mapping[str, float],
    ) -> Captured:
        """Write one client's update and add it to the index."""
        path = self.node_dir(server_round, node) / UPDATE_FILE
        with replaced_atomically(path) as partial:
            update.save(partial)
        item = Captured(
            round=server_round,
            node=node,
            num_samples=int(update.num_samples or 0),
            update_file=str(path.relative_to(self.root)),
            global_file=global_file,
            reply_metrics=dict(reply_metrics),
        )
        with self._lock:
            # The whole index is rewritten, so a reader never sees half a line.
            self._lines.append(json.dumps(asdict(item)))
            write_atomically(self.root / INDEX, "\n".join(self._lines) + "\n")
        return item

    def global_state(self, item: Captured) -> dict[str, torch.Tensor]:
        """The global model `item` received (loaded tensors-only)."""
        return read_state_file(self.root / item.global_file, "global model")

    def update(self, item: Captured) -> SharedUpdate:
        """The update `item` names."""
        return SharedUpdate.load(self.root / item.update_file)

    def captured(self) -> list[Captured]:
        """Every update the index lists, in the order captured.

        Raises:
            GradleakError: no index in the folder, or a line that is not a capture.
        """
        path = self.root / INDEX
        if not path.is_file():
            raise GradleakError(
                f"{self.root} holds no {INDEX}; pass the folder a capturing strategy wrote"
            )
        items = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(Captured(**json.loads(line)))
            except (TypeError, ValueError) as exc:
                raise GradleakError(f"{path}, line {number}: not a capture ({exc})") from exc
        return items
