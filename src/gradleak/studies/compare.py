"""Attacks side by side: each attack against its protocol on the same images of several
datasets, one run directory per (dataset, image, attack), then tables and figures.

Layout under the output folder:

    runs/<dataset>/image-<i>/<attack>-<protocol>/   an ordinary run directory, plus
        snapshots.pt (the reconstruction at the snapshot iterations and the truth) and
        compare-run.json (what the run was asked for; written last, so its presence
        means the run finished)
    results.csv, summary.csv, summary.md            one row per run; means per dataset × attack
    grid-image<i>.png                               snapshots per dataset × attack, truth last
    curves-<dataset>.png                            image MSE and matching loss per iteration

A run is written under a `.partial` name and renamed when it is complete; an interrupted run
stays partial (and is removed by the next call), so tables and figures show finished runs
only. The images of one dataset attacked by one attack share that attack: where the attack
stacks several updates in one computation (Adam attacks on images, `scenario/stacked.py`'s
`stackable`; not the L-BFGS attacks this comparison defaults to) they run as stacked
attacks, in chunks (`studies/stacking.py`, `scenario/stacked.py`), each run still
written as its own directory (its metrics say how many runs were stacked, `stacked`, and
its `seconds` is the stack's time split equally); a chunk interrupted by Ctrl-C writes
none of its runs. Finished runs whose request is unchanged are not run again (see studies/cells.py).

Sentences are one more source (`text`, or `text=FILE` for a file of sentences, one per
line): their runs go under `runs/<name>/sentence-<i>/`, score what the text modality scores
(`Modality.scores`), are drawn in no snapshot grid (there is no picture to draw) and list
each original sentence beside the recovered one at the end of summary.md. A comparison of
pictures and sentences gives each row its own modality's columns and leaves the others
empty; its tables then name each row's modality.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from gradleak import attacks
from gradleak.attacks.registry import readers_of
from gradleak.core.errors import GradleakError
from gradleak.core.files import replaced_atomically, write_atomically, write_bytes_atomically
from gradleak.core.knowledge import GUESSABLE
from gradleak.core.settings import replace_checked, to_plain
from gradleak.data.loading import FILE_DATASETS
from gradleak.fl.protocols import PROTOCOLS, protocols_read_by
from gradleak.modalities import Modality, get_modality
from gradleak.report.compare_plots import Curve, GridRow, Tile, curves_png, snapshot_grid_png
from gradleak.report.tables import brief, brief_spread, score_format, write_csv
from gradleak.scenario.case import build_case
from gradleak.scenario.config import DATASET_CHOICES, MODALITY_DEFAULTS, RunConfig
from gradleak.scenario.run import RunResult, run_attack
from gradleak.studies.cells import CellRef, CellStore, described_config
from gradleak.studies.stacking import CHUNK_CELLS, stack_chunks, tell_fallback
from gradleak.studies.summary import (
    COUNTED_STATUSES,
    DEFAULT_MODALITY,
    FAILED,
    MODALITY,
    OK,
    Stat,
    among,
    counted,
    modalities_of,
    modality_of,
    of,
    score_keys,
    status_of,
    summarise_groups,
)

RUNS_DIR = "runs"
RUN_MARKER = "compare-run.json"
SPEC_FILE = "compare.json"  # what was compared; written by every call, it marks the folder
SNAPSHOT_FILE = "snapshots.pt"

DEFAULT_SNAPSHOTS = (1, 10, 30, 100, 300)
# Settings of the protocol's local training: only runs whose protocol trains locally get them
# (FedSGD refuses them, and its gradient does not depend on them).
LOCAL_TRAINING_KEYS = frozenset(
    {f"local_{key}" for key in GUESSABLE}
    | {f"guess_local_{key}" for key in GUESSABLE}
    | {"admm_rho", "rounds"}
)
FOLDER_KEYS = frozenset({"image_size"})  # only the user's images (FILE_DATASETS) are resized
TEXT_KEYS = frozenset({"task", "lengths_known"})  # only sentences have a task and lengths
# Only runs whose protocol's clients keep a state between rounds (FedADMM) get these.
STATE_KEYS = frozenset({"client_state_known"})
# Each cell sets these itself.
CELL_KEYS = frozenset(
    {
        "attack",
        "protocol",
        "dataset",
        "data_root",
        "modality",
        "texts",
        "text_file",
        "indices",
        "out",
        "snapshots",
        "progress",
    }
)
# The source kind of sentences; every other kind (DATASET_CHOICES) is a set of pictures.
TEXT_SOURCE = "text"
RUN_KEYS = ("iterations", "seconds", "matching_loss")  # besides the scores, in every row
# How a finished run can end besides ok (an interrupted run is never published, and a
# comparison has no failed runs: an error ends the call); each is counted in the summary.
NOT_OK = {status: column for status, column in COUNTED_STATUSES.items() if status != FAILED}


@dataclass(frozen=True)
class AttackRun:
    """One attack against the update of one protocol."""

    attack: str
    protocol: str

    @property
    def name(self) -> str:
        return f"{self.attack}-{self.protocol}"

    @property
    def label(self) -> str:
        return f"{self.attack} ({self.protocol})"


def default_protocol(attack: str) -> str:
    """The first protocol (in registry order) whose updates the attack reads."""
    return protocols_read_by(attacks.get(attack).reads)[0].name


def parse_attack_run(text: str) -> AttackRun:
    """'ATTACK[:PROTOCOL]', e.g. 'dlg', 'dlg:fedsgd', 'idlg-admm:fedadmm'."""
    attack, _, protocol = text.strip().partition(":")
    attacks.get(attack)  # an unknown name is a one-line error naming the choices
    protocol = protocol or default_protocol(attack)
    if protocol not in PROTOCOLS:
        raise GradleakError(
            f"protocol {protocol!r} in {text!r} is not one of: {', '.join(PROTOCOLS)}"
        )
    return AttackRun(attack, protocol)


DEFAULT_RUNS = (
    AttackRun("dlg", "fedsgd"),
    AttackRun("idlg", "fedsgd"),
    AttackRun("dlg-admm", "fedadmm"),
    AttackRun("idlg-admm", "fedadmm"),
)


@dataclass(frozen=True)
class DatasetSource:
    """A dataset and where its files are; named by the folder for image folders (e.g. lfw).

    The kind `text` is sentences: `data_root` is then a file of sentences, one per line (None:
    the bundled sentences), and the source is named by the file.
    """

    dataset: str
    data_root: Path | None = None

    @property
    def label(self) -> str:
        if self.dataset in (*FILE_DATASETS, TEXT_SOURCE) and self.data_root is not None:
            path = self.data_root.resolve()
            return (path.name if self.dataset == "folder" else path.stem) or self.dataset
        return self.dataset

    @property
    def pictures(self) -> bool:
        """Whether the source's samples are pictures (drawn in snapshot grids)."""
        return self.dataset != TEXT_SOURCE

    @property
    def item(self) -> str:
        """What one sample is called in run folders: image or sentence."""
        return "image" if self.pictures else "sentence"

    def run_settings(self) -> dict[str, Any]:
        """The run configuration's settings that read this source."""
        if self.pictures:
            return {"dataset": self.dataset, "data_root": self.data_root}
        return {"modality": "text", "text_file": self.data_root}


def parse_dataset(text: str) -> DatasetSource:
    """'KIND[=ROOT]', e.g. 'mnist=/data/mnist', 'folder=/data/lfw', 'cifar10' (bundled),
    'text' (the bundled sentences) or 'text=/data/sentences.txt'."""
    kind, _, root = text.strip().partition("=")
    kinds = (*DATASET_CHOICES, TEXT_SOURCE)
    if kind not in kinds:
        raise GradleakError(
            f"dataset {kind!r} in {text!r} is not one of: {', '.join(kinds)}; "
            "write KIND=ROOT, e.g. mnist=/data/mnist"
        )
    if kind in FILE_DATASETS and not root:
        raise GradleakError(
            f"{text!r}: an image folder needs its path, an image list or tensor file its file, "
            "e.g. folder=/data/lfw or tensors=/data/faces.npz"
        )
    return DatasetSource(kind, Path(root).expanduser() if root else None)


@dataclass(frozen=True)
class Cell:
    """One run of the comparison: an attack on one image of one dataset."""

    source: DatasetSource
    index: int
    run: AttackRun

    @property
    def path(self) -> Path:
        """The run directory relative to the comparison's folder."""
        sample = f"{self.source.item}-{self.index}"
        return Path(RUNS_DIR) / self.source.label / sample / self.run.name


@dataclass(frozen=True)
class CompareSpec:
    """What to compare: attacks × datasets × images, and the settings every run shares.

    `settings` are RunConfig keys (model, seed, batch_size, local_lr, admm_rho, rounds, …);
    local-training keys reach only runs whose protocol trains locally, `client_state_known`
    only runs whose clients keep a state (FedADMM), `image_size` only image folders, `task`
    and `lengths_known` only sentences. Without a `model`, sentences are attacked on their
    modality's default model (minilm) and pictures on lenet.
    `attack_options` override every attack's hyper-parameters; by default every iteration
    is logged, so snapshots fall on the requested iterations.
    """

    datasets: tuple[DatasetSource, ...]
    runs: tuple[AttackRun, ...] = DEFAULT_RUNS
    indices: tuple[int, ...] = (0,)
    snapshots: tuple[int, ...] = DEFAULT_SNAPSHOTS
    settings: Mapping[str, Any] = field(default_factory=dict)
    attack_options: Mapping[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """Dataset by dataset, image by image, the attacks in the order given."""
        return [
            Cell(source, index, run)
            for source in self.datasets
            for index in self.indices
            for run in self.runs
        ]

    def config(self, cell: Cell) -> RunConfig:
        """The run configuration of one cell (not yet validated; `out` left unset)."""
        source = cell.source.run_settings()
        modality = source.get("modality", RunConfig.modality)
        defaults = {k: v for k, v in MODALITY_DEFAULTS.get(modality, {}).items() if k == "model"}
        settings = {
            key: value
            for key, value in self.settings.items()
            if (key not in LOCAL_TRAINING_KEYS or PROTOCOLS[cell.run.protocol].trains_locally)
            and (key not in FOLDER_KEYS or cell.source.dataset in FILE_DATASETS)
            and (key not in STATE_KEYS or PROTOCOLS[cell.run.protocol].client_state is not None)
            and (key not in TEXT_KEYS or not cell.source.pictures)
        }
        base = replace_checked(RunConfig(), {**defaults, **settings}, "comparison settings")
        # Every iteration in the history, for attacks that iterate (closed forms have no
        # log_every and would refuse it).
        logging = {"log_every": 1} if _logs_iterations(cell.run.attack) else {}
        return replace(
            base,
            **source,
            attack=cell.run.attack,
            protocol=cell.run.protocol,
            indices=(cell.index,),
            snapshots=self.snapshots,
            attack_options={**logging, **self.attack_options},
        )

    def check(self) -> None:
        """Refuse a comparison that cannot run, before anything runs."""
        if not self.datasets:
            raise GradleakError("give at least one --dataset, e.g. --dataset mnist=/data/mnist")
        if not self.runs:
            raise GradleakError("give at least one attack in --runs, e.g. dlg:fedsgd")
        if not self.indices:
            raise GradleakError("give at least one image --index")
        _unique([s.label for s in self.datasets], "dataset", "give each dataset once")
        _unique([r.name for r in self.runs], "attack run", "give each ATTACK:PROTOCOL once")
        _unique(list(self.indices), "image index", "give each index once")
        if any(i < 0 for i in self.indices):
            raise GradleakError(f"image indices must be non-negative, got {list(self.indices)}")
        if not self.snapshots or any(s < 0 for s in self.snapshots):
            raise GradleakError(
                f"snapshot iterations must be non-negative and at least one, "
                f"got {list(self.snapshots)}"
            )
        fixed = sorted(CELL_KEYS & set(self.settings))
        if fixed:
            raise GradleakError(
                f"setting {fixed[0]!r} is chosen per run by the comparison; use --runs, "
                "--dataset, --index, --snapshots or --out instead"
            )
        for run in self.runs:
            _check_pairing(run)
        for source in self.datasets:
            for index in self.indices:
                config = self.config(Cell(source, index, self.runs[0])).validate()
                build_case(config)  # loads the image: a missing file or bad index fails now
        for cell in self.cells():
            config = self.config(cell).validate()
            attack = attacks.get(config.attack).with_options(config.attack_options)
            attack.config.validate()

    def describe(self) -> dict[str, Any]:
        return {
            "datasets": [
                {"label": s.label, "dataset": s.dataset, "data_root": to_plain(s.data_root)}
                for s in self.datasets
            ],
            "runs": [{"attack": r.attack, "protocol": r.protocol} for r in self.runs],
            "indices": list(self.indices),
            "snapshots": list(self.snapshots),
            "settings": to_plain(self.settings),
            "attack_options": to_plain(self.attack_options),
        }


@functools.cache
def _logs_iterations(attack: str) -> bool:
    """Whether `attack` takes `log_every` (closed forms do not); built once per name."""
    return "log_every" in {f.name for f in dataclasses.fields(attacks.get(attack).config)}


def _unique(values: Sequence[object], what: str, fix: str) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise GradleakError(f"{what} {repeated[0]} is given more than once; {fix}")


def _check_pairing(run: AttackRun) -> None:
    """Refuse an attack against a protocol whose updates it cannot read."""
    reads = attacks.get(run.attack).reads
    shared = PROTOCOLS[run.protocol].shares
    if shared in reads:
        return
    readable = protocols_read_by(reads)
    if len(readable) == 1:
        raise GradleakError(
            f"{run.attack} reads {readable[0].shares.description}; write "
            f"{run.attack}:{readable[0].name}, not {run.attack}:{run.protocol}"
        )
    readers = readers_of(shared)
    # The same attack's variant for this protocol, when there is one (dlg → dlg-admm).
    variant = next((n for n in readers if n.startswith(f"{run.attack}-")), None)
    choices = variant or " or ".join(readers)
    raise GradleakError(
        f"{run.attack} cannot read {shared.noun}; use {choices} with {run.protocol}"
    )


@dataclass
class CompareResult:
    """What a call did: runs made now, runs already there, and whether Ctrl-C ended it."""

    out_dir: Path
    cells: int
    ran: int = 0
    skipped: int = 0
    removed_partial: int = 0
    interrupted: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


Report = Callable[[Cell, Mapping[str, Any]], None]


def run_compare(
    spec: CompareSpec,
    out_dir: Path,
    *,
    progress: bool = True,
    report: Report | None = None,
    device: str | None = None,
    stack: bool = True,
) -> CompareResult:
    """Run every cell not yet finished, then write tables and figures from the finished ones.

    Ctrl-C stops after the current run's partial results are written; the tables and
    figures still appear.

    Args:
        spec: the comparison: attacks × datasets × images and their shared settings.
        out_dir: the comparison's folder (runs under `runs/`, tables and figures beside).
        progress: show each attack's progress bar.
        report: called as `report(cell, metrics)` after each run that finishes now.
        device: where the runs compute (auto, cpu, cuda, cuda:N, mps; None: auto); not
            part of a run's description, so a run finished on one device is kept on another.
        stack: attack the images of one dataset and attack together, in chunks, where the
            attack stacks (default); False: every run on its own.

    Returns:
        The cells, how many ran now, were kept or removed, the rows and the figures written.

    Raises:
        GradleakError: a comparison that cannot run (checked before any run) or a folder
            that cannot be written.
    """
    spec.check()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradleakError(f"cannot create the comparison folder {out_dir}: {exc}") from exc
    store = cell_store(out_dir)
    cells = spec.cells()
    result = CompareResult(out_dir, len(cells), removed_partial=store.remove_leftovers())
    pending = [cell for cell in cells if not store.finished(_ref(spec, cell))]
    result.skipped = len(cells) - len(pending)
    size = CHUNK_CELLS if stack else 1
    for chunk in stack_chunks(pending, spec.config, size=size):
        try:
            runs = _run_chunk(spec, chunk, store, progress, device)
        except KeyboardInterrupt:
            result.interrupted = True
            break
        for cell, metrics in runs:
            result.ran += 1
            if report is not None:
                report(cell, metrics)
        if len(runs) < len(chunk):  # Ctrl-C inside an attack: its run stays unpublished
            result.interrupted = True
            break
    result.rows, result.figures = write_compare_outputs(spec, out_dir)
    return result


def cell_store(out_dir: Path) -> CellStore:
    """The comparison's runs: `runs/<dataset>/image-<i>/<attack>-<protocol>/`, each finished
    one marked by its `compare-run.json`; an interrupted run keeps what it wrote so far
    under its `.partial` name until the next call."""
    return CellStore(Path(out_dir), RUN_MARKER, layout=f"{RUNS_DIR}/*/*/*", keep_unpublished=True)


def _run_chunk(
    spec: CompareSpec, chunk: Sequence[Cell], store: CellStore, progress: bool, device: str | None
) -> list[tuple[Cell, dict[str, Any]]]:
    """Run a chunk's cells (one cell alone, several as stacked attacks) and publish each.

    A stacked chunk that cannot run (a stack the attack refuses, a cell's error) runs its
    unpublished cells one by one, where each cell's own error ends the comparison as it
    would without stacking.

    Returns:
        (cell, metrics) of each cell published, in order; fewer than the chunk's cells
        when Ctrl-C reached a run on its own (the cells after it are not run).

    Raises:
        KeyboardInterrupt: Ctrl-C reached a stacked chunk's attack: none of it is published.
    """
    if len(chunk) > 1:
        try:
            runs = _run_stacked_chunk(spec, chunk, store, progress, device)
            return [(cell, run.metrics) for cell, run in runs]
        except Exception as exc:  # noqa: BLE001 - the cells run one by one below, errors and all
            tell_fallback(len(chunk), exc)
    published = []
    for cell in chunk:
        ref = _ref(spec, cell)
        if store.finished(ref):  # published by the stacked chunk before it failed
            published.append((cell, store.metrics(ref)))
            continue
        write = functools.partial(_write_run, spec, cell, progress=progress, device=device)
        run = store.publish(ref, write)
        if run is None:  # Ctrl-C inside the attack: partial results stay unpublished
            break
        published.append((cell, run.metrics))
    return published


def _run_stacked_chunk(
    spec: CompareSpec, chunk: Sequence[Cell], store: CellStore, progress: bool, device: str | None
) -> list[tuple[Cell, RunResult]]:
    """A chunk's cells as stacked attacks (`run_stacked`), each published with its snapshots."""
    from gradleak.scenario.stacked import run_stacked

    configs = [_run_config(spec, cell, Path("."), progress, device) for cell in chunk]

    def publish(i: int, write: Callable[[Path], RunResult]) -> RunResult | None:
        def written(partial: Path) -> RunResult:
            run = write(partial)
            save_snapshots(run, partial / SNAPSHOT_FILE)
            return run

        return store.publish(_ref(spec, chunk[i]), written)

    return list(zip(chunk, run_stacked(configs, publish), strict=True))


def _run_config(
    spec: CompareSpec, cell: Cell, out: Path, progress: bool, device: str | None
) -> RunConfig:
    """A cell's validated run configuration, written to `out`."""
    config = replace(spec.config(cell), out=out, progress=progress)
    return (config if device is None else replace(config, device=device)).validate()


def _write_run(
    spec: CompareSpec, cell: Cell, partial: Path, progress: bool, device: str | None = None
) -> RunResult | None:
    """Run one cell into `partial` with its snapshots; None if Ctrl-C reached the attack."""
    run = run_attack(_run_config(spec, cell, partial, progress, device))
    if run.reconstruction.interrupted:
        return None
    save_snapshots(run, partial / SNAPSHOT_FILE)
    return run


def _description(spec: CompareSpec, cell: Cell) -> dict[str, Any]:
    """What a finished run was asked for; a run is reused only if this is unchanged."""
    return {
        "dataset": cell.source.label,
        "index": cell.index,
        "attack": cell.run.attack,
        "protocol": cell.run.protocol,
        "config": described_config(spec.config(cell)),
    }


def _ref(spec: CompareSpec, cell: Cell) -> CellRef:
    return CellRef(cell.path, _description(spec, cell))


def _finished_runs(spec: CompareSpec, out_dir: Path) -> list[tuple[Cell, dict[str, Any]]]:
    """(cell, metrics) of every finished run, in the spec's order."""
    return cell_store(out_dir).collect((cell, _ref(spec, cell)) for cell in spec.cells())


def save_snapshots(run: RunResult, path: Path) -> None:
    """The recorded reconstructions (matched to the truth) and the truth, in [0, 1], as tensors."""
    recorder = run.snapshots
    snapshots = {} if recorder is None else recorder.snapshots
    server, client = run.case
    truth = server.decode(client.batch.images).detach().cpu()
    payload = {
        "iterations": torch.tensor(list(snapshots), dtype=torch.int64),
        "images": torch.stack(list(snapshots.values())) if snapshots else truth[:0].unsqueeze(0),
        "truth": truth,
    }
    with replaced_atomically(path) as partial:
        torch.save(payload, partial)


def load_snapshots(path: Path) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """(iteration → B×C×H×W reconstruction, truth) from `save_snapshots`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    images = {int(i): payload["images"][k] for k, i in enumerate(payload["iterations"].tolist())}
    return images, payload["truth"]


def snapshot_at(snapshots: Mapping[int, torch.Tensor], requested: int) -> tuple[int, bool] | None:
    """The recorded iteration that stands for `requested`, and whether the run ended before.

    The recorder keeps the first logged iteration at or after a request; a run that
    stopped earlier is shown by its final state.
    """
    if not snapshots:
        return None
    later = [i for i in snapshots if i >= requested]
    if later:
        return min(later), False
    return max(snapshots), True


# --- Tables and figures ---------------------------------------------------------------------


def spec_modalities(spec: CompareSpec) -> list[Modality]:
    """The modalities of the comparison's sources, images first."""
    names = {cell.source.run_settings().get(MODALITY, DEFAULT_MODALITY) for cell in spec.cells()}
    return modalities_of({MODALITY: name} for name in names)


def result_columns(modalities: Sequence[Modality]) -> list[str]:
    """results.csv's columns: the run (and its modality, when the comparison holds anything
    but images), its status, the modalities' scores, its cost and its directory."""
    return [
        "dataset",
        "index",
        "attack",
        "protocol",
        *_modality_column(modalities),
        "status",
        *score_keys(modalities),
        *RUN_KEYS,
        "run_dir",
    ]


def summary_columns(modalities: Sequence[Modality]) -> list[str]:
    """summary.csv's columns, as `summarise` makes them for these modalities."""
    return [
        "dataset",
        "attack",
        "protocol",
        *_modality_column(modalities),
        _count_column(modalities),
        *NOT_OK.values(),
        *_score_stats(modalities),
        "iterations_mean",
        "seconds_mean",
    ]


def _modality_column(modalities: Sequence[Modality]) -> list[str]:
    only_default = [m.name for m in modalities] in ([], [DEFAULT_MODALITY])
    return [] if only_default else [MODALITY]


def _noun(modalities: Sequence[Modality]) -> str:
    """What one attacked sample is called in the tables: an image, unless sentences are in."""
    return "sample" if _modality_column(modalities) else "image"


def _count_column(modalities: Sequence[Modality]) -> str:
    """The summary's count of runs: `images` for pictures only (as it always was)."""
    return f"{_noun(modalities)}s"


def _score_stats(modalities: Sequence[Modality]) -> list[str]:
    """The mean of every score, and the population std of each modality's headline score."""
    headlines = {m.headline for m in modalities}
    columns = []
    for key in score_keys(modalities):
        columns.append(f"{key}_mean")
        if key in headlines:
            columns.append(f"{key}_std")
    return columns


def collect_rows(spec: CompareSpec, out_dir: Path) -> list[dict[str, Any]]:
    """One row per finished run, in the spec's order: its modality's scores."""
    rows = []
    for cell, metrics in _finished_runs(spec, out_dir):
        modality = get_modality(modality_of(metrics))
        rows.append(
            {
                "dataset": cell.source.label,
                "index": cell.index,
                "attack": cell.run.attack,
                "protocol": cell.run.protocol,
                MODALITY: modality.name,
                "status": status_of(metrics),
                **{k: metrics.get(k) for k in (*modality.scores, *RUN_KEYS)},
                "run_dir": cell.path.as_posix(),
            }
        )
    return rows


def summarise(
    rows: Sequence[Mapping[str, Any]], modalities: Sequence[Modality] | None = None
) -> list[dict[str, Any]]:
    """Means (and the headline score's population std) per dataset × attack × protocol.

    Args:
        rows: results rows, as `collect_rows` makes them.
        modalities: whose scores are summarised (default: the rows' own).

    Returns:
        One row per dataset × attack × protocol, in row order: its modality, the runs
        (`images`, or `samples` when the comparison holds sentences), how many diverged or
        made no progress, then each statistic over the finite values of its key only, None
        where there is none. The scores (images: PSNR, SSIM, MSE, label accuracy) are
        averaged over the `ok` runs only: the others scored their starting point, not an
        attack; iterations and seconds over every run.
    """
    if modalities is None:
        modalities = modalities_of(rows)
    stats: dict[str, Stat] = {
        MODALITY: lambda group: modality_of(group[0]),
        _count_column(modalities): len,
    }
    for status, column in NOT_OK.items():
        stats[column] = counted(lambda row, status=status: status_of(row) == status)
    for column in _score_stats(modalities):
        key, _, stat = column.rpartition("_")
        reduce = statistics.fmean if stat == "mean" else statistics.pstdev
        stats[column] = among(_ok, of(reduce, key))
    for key in ("iterations", "seconds"):
        stats[f"{key}_mean"] = of(statistics.fmean, key)
    return summarise_groups(rows, ("dataset", "attack", "protocol"), stats)


def _ok(row: Mapping[str, Any]) -> bool:
    return status_of(row) == OK


def _not_ok(summary: Mapping[str, Any]) -> str:
    """'2 diverged, 1 no-progress' for a summary row; '' when every run was ok."""
    return ", ".join(
        f"{summary[column]} {status}" for status, column in NOT_OK.items() if summary[column]
    )


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_markdown(
    spec: CompareSpec,
    rows: Sequence[Mapping[str, Any]],
    sentences: Sequence[tuple[str, Sequence[Mapping[str, Any]]]] = (),
) -> str:
    """The mean table per dataset × attack, then one line per run (one pair of tables per
    modality when the comparison mixes them), then each recovered sentence.

    Args:
        spec: the comparison.
        rows: its results rows.
        sentences: per text run, a title and its `per_sequence` scores (original and
            recovered sentence of each sequence).
    """
    settings = ", ".join(f"{k}={v}" for k, v in to_plain(spec.settings).items())
    modalities = spec_modalities(spec)
    noun = _noun(modalities)
    indices = ", ".join(str(i) for i in spec.indices)
    lines = [
        "# Attack comparison",
        "",
        f"{noun.capitalize()}s {indices} of each dataset; settings: {settings or 'defaults'}. "
        "Scores after matching each true sample to a recovered one (each run's metrics.json "
        "states the convention; images: PSNR/SSIM/MSE on [0, 1] pixels); label accuracy is "
        "null where labels were given. Scores are averaged over the runs whose status is ok; "
        "a run that diverged or made no progress scored its random start, not an attack, "
        "and is counted under 'not ok'.",
    ]
    summary = summarise(rows, modalities)
    for modality in modalities:
        heading = f" ({modality.name})" if len(modalities) > 1 else ""
        members = [r for r in rows if modality_of(r) == modality.name]
        means = [s for s in summary if modality_of(s) == modality.name]
        lines += ["", f"## Mean over {noun}s{heading}", ""]
        lines += _mean_table(means, modality, _count_column(modalities))
        lines += ["", f"## Per run{heading}", ""]
        lines += _run_table(members, modality, noun)
    if sentences:
        lines += ["", "## Recovered sentences"]
        for title, per_sequence in sentences:
            lines += ["", f"### {title}", ""]
            for item in per_sequence:
                mark = "exact" if item.get("exact") else "differs"
                lines.append(f"- {item.get('index')} original:  {item.get('truth', '')}")
                lines.append(f"  recovered ({mark}): {item.get('recovered', '')}")
    return "\n".join(lines) + "\n"


def _mean_table(summary: Sequence[Mapping[str, Any]], modality: Modality, count: str) -> list[str]:
    head = ["dataset", "attack", "protocol", count, "not ok"]
    head += [score_format(key).column for key in modality.scores]
    head += ["iterations", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["dataset"], s["attack"], s["protocol"], s[count], _not_ok(s) or "-"]
        for key in modality.scores:
            if key == modality.headline:
                cells.append(brief_spread(s.get(f"{key}_mean"), s.get(f"{key}_std"), key))
            else:
                cells.append(brief(s.get(f"{key}_mean"), key))
        cells += [_fmt(s["iterations_mean"], ".0f"), _fmt(s["seconds_mean"], ".1f")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _run_table(rows: Sequence[Mapping[str, Any]], modality: Modality, noun: str) -> list[str]:
    head = ["dataset", noun, "attack", "protocol", "status"]
    head += [score_format(key).column for key in modality.scores]
    head += ["iterations", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["dataset"], r["index"], r["attack"], r["protocol"], status_of(r)]
        cells += [brief(r.get(key), key) for key in modality.scores]
        cells += [r["iterations"], _fmt(r["seconds"], ".1f")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def recovered_sentences(
    spec: CompareSpec, out_dir: Path
) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Per finished run that recorded sentences (`per_sequence`), a title and its sentences."""
    found = []
    for cell, metrics in _finished_runs(spec, out_dir):
        per_sequence = metrics.get("per_sequence")
        if isinstance(per_sequence, list) and per_sequence:
            title = f"{cell.source.label} sentence {cell.index}, {cell.run.label}"
            found.append((title + _status_note(metrics, " "), per_sequence))
    return found


def grid_rows(spec: CompareSpec, out_dir: Path, index: int) -> list[GridRow]:
    """One row per finished run on image `index` of a source of pictures: its snapshots at the
    requested iterations, then the truth; the label names dataset, attack, the final
    headline score (PSNR) and a status other than ok."""
    rows = []
    for cell, metrics in _finished_runs(spec, out_dir):
        if cell.index != index or not cell.source.pictures:
            continue
        snapshots, truth = load_snapshots(out_dir / cell.path / SNAPSHOT_FILE)
        tiles = []
        for requested in spec.snapshots:
            found = snapshot_at(snapshots, requested)
            if found is None:
                tiles.append(Tile(None, "not recorded"))
                continue
            iteration, ended = found
            caption = f"ended at {iteration}" if ended else ""
            if not ended and iteration != requested:
                caption = f"at {iteration}"
            tiles.append(Tile(snapshots[iteration], caption))
        tiles.append(Tile(truth, ""))
        label = f"{cell.source.label}\n{cell.run.label}\n{_headline(metrics)}"
        rows.append(GridRow(label + _status_note(metrics), tiles))
    return rows


def _headline(metrics: Mapping[str, Any]) -> str:
    """The run's headline score to one decimal, with its unit, e.g. '23.4 dB' (a grid's
    labels are narrow)."""
    key = get_modality(modality_of(metrics)).headline
    unit = score_format(key).unit
    return f"{_fmt(metrics.get(key), '.1f')}{f' {unit}' if unit else ''}"


def _status_note(metrics: Mapping[str, Any], separator: str = "\n") -> str:
    """The run's status in capitals after `separator` ('\nDIVERGED'); '' when it is ok."""
    status = status_of(metrics)
    return "" if status == OK else f"{separator}{status.upper()}"


def grid_figure(spec: CompareSpec, out_dir: Path, index: int) -> bytes | None:
    """Rows dataset × attack, columns the snapshot iterations then the truth; None if empty."""
    rows = grid_rows(spec, out_dir, index)
    if not rows:
        return None
    columns = [f"iteration {i}" for i in spec.snapshots] + ["ground truth"]
    return snapshot_grid_png(columns, rows, f"Reconstructions of image {index} over iterations")


def _history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _column(rows: Sequence[Mapping[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        try:
            x, y = float(row["iteration"]), float(row[key])
        except (KeyError, TypeError, ValueError):
            continue
        xs.append(x)
        ys.append(y)
    return xs, ys


def curves_figure(spec: CompareSpec, out_dir: Path, source: DatasetSource) -> bytes | None:
    """Image MSE and matching loss against iteration for every finished run of a dataset; for
    sentences the matching loss only, and no figure when no run recorded one (the
    closed-form attacks)."""
    mse_curves, loss_curves = [], []
    for cell, metrics in _finished_runs(spec, out_dir):
        if cell.source != source:
            continue
        history = _history(out_dir / cell.path / "history.csv")
        label = cell.run.label + _status_note(metrics, " ")
        mse_curves.append(Curve(label, *_column(history, "mse")))
        loss_curves.append(Curve(label, *_column(history, "loss")))
    if not loss_curves:
        return None
    panels = [("matching loss", loss_curves)]
    if source.pictures:
        panels.insert(0, ("image MSE (evaluation side)", mse_curves))
    elif not any(curve.xs for curve in loss_curves):
        return None
    samples = ", ".join(str(i) for i in spec.indices)
    return curves_png(
        panels,
        f"{source.label}: one line per attack and {source.item} ({source.item}s {samples})",
    )


def write_compare_outputs(
    spec: CompareSpec, out_dir: Path
) -> tuple[list[dict[str, Any]], list[Path]]:
    """results.csv, summary.csv, summary.md and the figures, from the finished runs."""
    rows = collect_rows(spec, out_dir)
    # The spec's modalities, not the finished rows': the columns stay put while runs finish.
    modalities = spec_modalities(spec)
    try:
        write_csv(out_dir / "results.csv", result_columns(modalities), rows)
        write_csv(out_dir / "summary.csv", summary_columns(modalities), summarise(rows, modalities))
        markdown = summary_markdown(spec, rows, recovered_sentences(spec, out_dir))
        write_atomically(out_dir / "summary.md", markdown)
        spec_text = json.dumps(spec.describe(), indent=2)
        write_atomically(out_dir / SPEC_FILE, spec_text + "\n")
        figures = []
        for index in spec.indices:
            png = grid_figure(spec, out_dir, index)
            if png is not None:
                figures.append(_write_png(out_dir / f"grid-image{index}.png", png))
        for source in spec.datasets:
            png = curves_figure(spec, out_dir, source)
            if png is not None:
                figures.append(_write_png(out_dir / f"curves-{source.label}.png", png))
    except OSError as exc:
        raise GradleakError(f"cannot write the comparison outputs in {out_dir}: {exc}") from exc
    return rows, figures


def _write_png(path: Path, data: bytes) -> Path:
    write_bytes_atomically(path, data)
    return path
