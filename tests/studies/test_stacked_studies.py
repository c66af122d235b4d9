"""Studies whose cells share an attack run them as stacked attacks, with the results,
outputs, resumption and interrupts of cell-by-cell runs."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from gradleak.cli import app as cli
from gradleak.core.errors import GradleakError
from gradleak.scenario import stacked as stacked_module
from gradleak.scenario.config import RunConfig
from gradleak.scenario.run import run_attack
from gradleak.scenario.stacked import STACKED, STACKED_SECONDS, run_stacked, stackable
from gradleak.studies import stacking
from gradleak.studies.compare import AttackRun, CompareSpec, DatasetSource, run_compare
from gradleak.studies.stacking import stack_chunks, stack_key
from gradleak.studies.sweep import runner
from gradleak.studies.sweep.backends import LocalBackend
from gradleak.studies.sweep.runner import CELLS, MARKER, run_sweep
from gradleak.studies.sweep.spec import parse_spec

pytestmark = pytest.mark.usefixtures("one_thread")

# Four CIFAR-10 images (the bundled ones) attacked by Inverting Gradients (Adam) on LeNet,
# two restarts, a few iterations, every iteration logged: snapshots and history each step.
IG_SPEC: dict[str, Any] = {
    "name": "stacked",
    "attacks": ["ig"],
    "base": {"labels_known": True, "snapshots": [0, 2, 5]},
    "images": "0-3",
    "seeds": [0, 1],
    "options": {"ig": {"iterations": 6, "restarts": 2, "log_every": 1}},
    "success_psnr": 9.0,
}
# What a cell's metrics hold that differs between a stacked and a cell-by-cell run.
TIMING = {"seconds", STACKED, STACKED_SECONDS, "compile_seconds"}


def _spec(**changes: Any) -> Any:
    return parse_spec({**IG_SPEC, **changes}, "test spec")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _close(a: Any, b: Any) -> bool:
    """Equal, numbers (and nested lists and mappings of them) up to float rounding."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
    return a == b


def _same_table(a: Sequence[dict[str, str]], b: Sequence[dict[str, str]], skip: set[str]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x.keys() - skip:
            if x[key] == y[key]:
                continue
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-4, abs=1e-6), key


def _same_cell(one: Path, two: Path) -> None:
    """Two run directories of one cell hold the same results and the same files."""
    a = json.loads((one / "metrics.json").read_text())
    b = json.loads((two / "metrics.json").read_text())
    assert _close({k: v for k, v in a.items() if k not in TIMING}, {
        k: v for k, v in b.items() if k not in TIMING
    })  # fmt: skip
    assert sorted(p.relative_to(one).as_posix() for p in one.rglob("*")) == sorted(
        p.relative_to(two).as_posix() for p in two.rglob("*")
    )
    _same_table(_rows(one / "history.csv"), _rows(two / "history.csv"), skip=set())
    assert (one / MARKER).read_text() == (two / MARKER).read_text()


def _config_of(spec: Any) -> Any:
    return lambda cell: spec.run_config(cell, Path("."))


# --- the group key and the chunks -----------------------------------------------------------


def test_cells_that_differ_only_in_image_and_seed_share_a_chunk() -> None:
    spec = parse_spec(
        {
            "attacks": ["ig", "dlg"],
            "models": ["lenet", "cnn6"],
            "images": "0-2",
            "seeds": [0, 1],
            "options": {"ig": {"iterations": 2}, "dlg": {"iterations": 2}},
        },
        "mixed",
    )
    cells = spec.cells()
    chunks = stack_chunks(cells, _config_of(spec), size=4)
    grouped = [chunk for chunk in chunks if len(chunk) > 1]
    # IG (Adam) stacks per model: 3 images × 2 seeds = 6 cells, in chunks of at most 4,
    # ordered by seed; DLG (L-BFGS) runs cell by cell.
    assert sorted(len(c) for c in chunks if c[0].attack == "ig") == [2, 2, 4, 4]
    assert all(len(c) == 1 for c in chunks if c[0].attack != "ig")
    for chunk in grouped:
        assert len({(c.attack, c.model) for c in chunk}) == 1
        assert [c.seed for c in chunk] == sorted(c.seed for c in chunk)
    assert sorted(c.name for chunk in chunks for c in chunk) == sorted(c.name for c in cells)
    # One chunk per cell without stacking; every worker gets a chunk of a group.
    assert all(len(c) == 1 for c in stack_chunks(cells, _config_of(spec), size=1))
    spread = stack_chunks(cells, _config_of(spec), size=16, workers=3)
    assert sorted(len(c) for c in spread if c[0].attack == "ig") == [2] * 6


def test_a_closed_form_attack_beside_ig_runs_cell_by_cell() -> None:
    spec = parse_spec(
        {
            "attacks": ["rgap", "ig"],
            "models": ["cnn6"],
            "images": "0-2",
            "options": {"ig": {"iterations": 2}},
        },
        "closed form and ig",
    )
    chunks = stack_chunks(spec.cells(), _config_of(spec), size=16)
    assert [(c[0].attack, len(c)) for c in chunks] == [("rgap", 1)] * 3 + [("ig", 3)]


def test_the_key_leaves_out_only_the_attacked_data() -> None:
    spec = _spec()
    a, b, *_ = spec.cells()
    config = spec.run_config(a, Path("x"))
    assert stack_key(config) == stack_key(spec.run_config(b, Path("y")))
    assert stack_key(config) == stack_key(replace(config, indices=(7,), seed=5, progress=True))
    assert stack_key(config) != stack_key(replace(config, model="convnet"))
    assert stack_key(config) != stack_key(replace(config, defenses=("prune:0.5",)))
    assert stack_key(config) != stack_key(replace(config, attack_options={"iterations": 7}))
    assert stack_key(replace(config, stop_psnr=20.0)) is None  # stops per image
    assert stack_key(replace(config, budget=30.0)) is None  # timed alone
    assert stack_key(replace(config, attack="dlg", attack_options={})) is None  # L-BFGS
    assert not stackable(replace(config, attack="rgap", attack_options={}))  # closed form
    # Priors with which reconstruct_many attacks the updates in turn share nothing.
    assert not stackable(replace(config, attack_options={"priors": ["tv", "bn-client"]}))
    assert stackable(replace(config, attack_options={"priors": ["tv", "bn-server"]}))


# --- one stack against separate runs -----------------------------------------------------------


def test_a_stack_writes_what_each_run_writes_alone(tmp_path: Path) -> None:
    base = RunConfig(
        attack="ig",
        attack_options={"iterations": 5, "restarts": 2, "log_every": 1},
        labels_known=True,
        snapshots=(0, 3),
        progress=False,
    )
    # Seeds 0 and 1 seed different models: two stacks, of two runs and of one.
    configs = [replace(base, indices=(i,), seed=s) for i, s in ((0, 0), (1, 0), (2, 1))]
    alone = [run_attack(replace(c, out=tmp_path / f"alone{i}")) for i, c in enumerate(configs)]
    stacked = run_stacked([replace(c, out=tmp_path / f"stacked{i}") for i, c in enumerate(configs)])
    assert [r.metrics[STACKED] for r in stacked] == [2, 2, 1]
    for one, two in zip(alone, stacked, strict=True):
        assert _close(
            {k: v for k, v in one.metrics.items() if k not in TIMING},
            {k: v for k, v in two.metrics.items() if k not in TIMING},
        )
        assert one.reconstruction.history and _close(
            one.reconstruction.history, two.reconstruction.history
        )
        torch.testing.assert_close(one.reconstruction.images, two.reconstruction.images)
        assert one.snapshots is not None and two.snapshots is not None
        assert one.snapshots.snapshots.keys() == two.snapshots.snapshots.keys()
        for it, image in one.snapshots.snapshots.items():
            torch.testing.assert_close(image, two.snapshots.snapshots[it])
        files = sorted(p.name for p in one.out_dir.rglob("*"))
        assert files == sorted(p.name for p in two.out_dir.rglob("*"))
    # The two runs stacked together split the stack's time.
    assert stacked[0].metrics["seconds"] == stacked[1].metrics["seconds"]
    whole = stacked[0].metrics[STACKED_SECONDS]
    assert whole == pytest.approx(2 * stacked[0].metrics["seconds"])


# --- sweeps --------------------------------------------------------------------------------


def test_a_stacked_sweep_gives_the_cell_by_cell_results(tmp_path: Path) -> None:
    spec = _spec()
    alone = run_sweep(spec, tmp_path / "alone", progress=False, threads=1, stack=False)
    together = run_sweep(spec, tmp_path / "stacked", progress=False, threads=1)
    assert (alone.ran, together.ran) == (8, 8)
    skip = {"seconds"}
    _same_table(
        _rows(tmp_path / "alone/results.csv"), _rows(tmp_path / "stacked/results.csv"), skip
    )
    _same_table(
        _rows(tmp_path / "alone/summary.csv"), _rows(tmp_path / "stacked/summary.csv"), skip
    )
    for cell in spec.cells():
        _same_cell(tmp_path / "alone" / CELLS / cell.name, tmp_path / "stacked" / CELLS / cell.name)
        stacked = json.loads(
            (tmp_path / "stacked" / CELLS / cell.name / "metrics.json").read_text()
        )
        assert stacked[STACKED] == 4  # one seed's four images: one model, one stack
        alone_metrics = tmp_path / "alone" / CELLS / cell.name / "metrics.json"
        assert STACKED not in json.loads(alone_metrics.read_text())


class _InterruptAfter:
    """A backend that runs `count` jobs in this process, then raises Ctrl-C."""

    workers = 1

    def __init__(self, count: int) -> None:
        self.count = count
        self.jobs: list[dict[str, Any]] = []

    def run(self, fn: Any, jobs: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        self.jobs = list(jobs)
        for i, job in enumerate(jobs):
            if i == self.count:
                raise KeyboardInterrupt
            yield fn(job)


def test_a_resumed_sweep_skips_finished_cells_and_gives_the_same_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "CHUNK_CELLS", 3)
    spec = _spec()
    backend = _InterruptAfter(1)
    first = run_sweep(spec, tmp_path / "sweep", backend=backend, progress=False, threads=1)
    # Chunks of three, by seed: the second holds seed 0's last image and seed 1's first two.
    assert [len(job["cells"]) for job in backend.jobs] == [3, 3, 2]
    assert first.interrupted and first.ran == 3 and len(first.rows) == 3
    second = run_sweep(spec, tmp_path / "sweep", progress=False, threads=1)
    assert (second.ran, second.skipped, second.interrupted) == (5, 3, False)
    fresh = run_sweep(spec, tmp_path / "fresh", progress=False, threads=1, stack=False)
    skip = {"seconds"}
    _same_table(_rows(tmp_path / "sweep/results.csv"), _rows(tmp_path / "fresh/results.csv"), skip)
    _same_table(_rows(tmp_path / "sweep/summary.csv"), _rows(tmp_path / "fresh/summary.csv"), skip)
    assert fresh.ran == 8


def test_ctrl_c_inside_a_chunk_leaves_no_finished_looking_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = stacked_module.psnr_observer

    def interrupting(case: Any, stop_at: Any = None, recorder: Any = None) -> Any:
        observe = real(case, stop_at, recorder)

        def watch(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> Any:
            if iteration == 3:  # Ctrl-C in the middle of the stacked attack
                raise KeyboardInterrupt
            return observe(iteration, losses, images)

        return watch

    monkeypatch.setattr(stacked_module, "psnr_observer", interrupting)
    spec = _spec(seeds=[0])
    result = run_sweep(spec, tmp_path / "sweep", progress=False, threads=1)
    assert result.interrupted and result.ran == 0 and result.rows == []
    assert list((tmp_path / "sweep" / CELLS).iterdir()) == []  # nothing, not even partial
    assert _rows(tmp_path / "sweep" / "results.csv") == []

    monkeypatch.setattr(stacked_module, "psnr_observer", real)
    again = run_sweep(spec, tmp_path / "sweep", progress=False, threads=1)
    assert (again.ran, again.skipped, again.interrupted) == (4, 0, False)


def test_ctrl_c_while_a_chunk_is_written_keeps_whole_cells_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = stacked_module.write_outputs
    written: list[Path] = []

    def interrupted_second(out: Path, *args: Any, **kwargs: Any) -> None:
        if len(written) == 1:
            (out / "image.png").write_bytes(b"half")  # what a cut-short write leaves
            raise KeyboardInterrupt
        written.append(out)
        real(out, *args, **kwargs)

    monkeypatch.setattr(stacked_module, "write_outputs", interrupted_second)
    spec = _spec(seeds=[0])
    result = run_sweep(spec, tmp_path / "sweep", progress=False, threads=1)
    assert result.interrupted
    left = sorted((tmp_path / "sweep" / CELLS).iterdir())
    assert [p.name for p in left] == [spec.cells()[0].name]  # whole, published
    assert (left[0] / "metrics.json").is_file() and (left[0] / MARKER).is_file()
    assert len(_rows(tmp_path / "sweep" / "results.csv")) == 1


def test_a_stack_that_cannot_run_runs_its_cells_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise GradleakError("the stacked trials would not fit in free memory")

    monkeypatch.setattr("gradleak.scenario.stacked.run_stacked", refused)
    spec = _spec(seeds=[0], images="0-1")
    result = run_sweep(spec, tmp_path / "sweep", progress=False, threads=1)
    assert (result.ran, result.failed) == (2, 0)
    for cell in spec.cells():
        metrics = json.loads((tmp_path / "sweep" / CELLS / cell.name / "metrics.json").read_text())
        assert STACKED not in metrics  # run on its own


# --- comparisons ----------------------------------------------------------------------------


def test_a_stacked_comparison_gives_the_cell_by_cell_tables(tmp_path: Path) -> None:
    spec = CompareSpec(
        datasets=(DatasetSource("cifar10"),),
        runs=(AttackRun("ig", "fedsgd"), AttackRun("dlg", "fedsgd")),
        indices=(0, 1, 2),
        snapshots=(1, 3),
        settings={"labels_known": True},
        attack_options={"iterations": 4, "restarts": 2},
    )
    alone = run_compare(spec, tmp_path / "alone", progress=False, stack=False)
    together = run_compare(spec, tmp_path / "stacked", progress=False)
    assert (alone.ran, together.ran) == (6, 6)
    skip = {"seconds", "seconds_mean", "seconds_std"}
    for table in ("results.csv", "summary.csv"):
        _same_table(_rows(tmp_path / "alone" / table), _rows(tmp_path / "stacked" / table), skip)
    stacked_runs = sorted((tmp_path / "stacked").glob("runs/*/*/ig-fedsgd"))
    assert len(stacked_runs) == 3
    for run in stacked_runs:
        alone_run = tmp_path / "alone" / run.relative_to(tmp_path / "stacked")
        assert json.loads((run / "metrics.json").read_text())[STACKED] == 3
        a, b = torch.load(alone_run / "snapshots.pt"), torch.load(run / "snapshots.pt")
        assert torch.equal(a["iterations"], b["iterations"])
        torch.testing.assert_close(a["images"], b["images"])
        _same_table(_rows(alone_run / "history.csv"), _rows(run / "history.csv"), skip=set())
    # The figures are drawn from the same snapshots and histories.
    assert sorted(p.name for p in together.figures) == sorted(p.name for p in alone.figures)
    rerun = run_compare(spec, tmp_path / "stacked", progress=False)
    assert (rerun.ran, rerun.skipped) == (0, 6)


def test_the_chunk_size_bounds_every_stack() -> None:
    assert stacking.CHUNK_CELLS >= 2
    spec = _spec(images="0-7", seeds=[0])
    chunks = stack_chunks(spec.cells(), _config_of(spec), size=3)
    assert [len(c) for c in chunks] == [3, 3, 2]


def test_local_workers_receive_chunks_and_give_the_same_results(tmp_path: Path) -> None:
    spec = _spec(seeds=[0])
    run_sweep(spec, tmp_path / "alone", progress=False, threads=1, stack=False)
    run_sweep(spec, tmp_path / "two", backend=LocalBackend(2), progress=False, threads=1)
    _same_table(
        _rows(tmp_path / "alone/results.csv"), _rows(tmp_path / "two/results.csv"), {"seconds"}
    )
    for cell in spec.cells():  # four images over two workers: two chunks of two
        metrics = json.loads((tmp_path / "two" / CELLS / cell.name / "metrics.json").read_text())
        assert metrics[STACKED] == 2


@pytest.mark.parametrize(("flags", "stacked"), [([], 4), (["--no-stack"], None)])
def test_the_sweep_command_stacks_unless_told_not_to(
    tmp_path: Path, flags: list[str], stacked: int | None
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**IG_SPEC, "seeds": [0]}))
    out = tmp_path / "sweep"
    argv = ["sweep", str(path), "--out", str(out), "--no-progress", "--threads", "1", *flags]
    assert cli.main(argv) == 0
    for run in sorted((out / CELLS).iterdir()):
        assert json.loads((run / "metrics.json").read_text()).get(STACKED) == stacked


def test_each_stacked_update_keeps_its_seed_labels_and_observer() -> None:
    from gradleak.scenario.plan import plan_run
    from gradleak.scenario.run import attacked_view

    base = RunConfig(
        attack="ig",
        attack_options={"iterations": 4, "restarts": 2, "log_every": 1},
        labels_known=True,
        progress=False,
    )
    views = [attacked_view(plan_run(replace(base, indices=(i,)))) for i in (0, 1, 2)]
    attack = plan_run(base).attack
    model = views[0][2].model
    seeds = [0, 3, 5]
    seen: list[list[tuple[int, int]]] = [[], [], []]

    def observer(i: int) -> Any:
        def watch(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
            seen[i].append((iteration, losses.numel()))
            return {"mean": float(images.mean())}  # a column of this update's own trials

        return watch

    stacked = attack.reconstruct_many(
        [update for _, update, _ in views],
        model,
        [view.knowledge for _, _, view in views],
        seed=seeds,
        progress=False,
        observers=[observer(0), None, observer(2)],
    )
    assert seen[1] == [] and [n for _, n in seen[0]] == [2] * 5  # its own 2 trials, 5 rows
    for i, (_, update, view) in enumerate(views):
        alone = attack.reconstruct(
            update, model, view.knowledge, seed=seeds[i], observer=observer(1), progress=False
        )
        torch.testing.assert_close(stacked[i].images, alone.images)
        assert stacked[i].labels.tolist() == alone.labels.tolist() == view.knowledge.labels.tolist()
        assert _close(stacked[i].trial_losses, alone.trial_losses)
        if i != 1:  # observed: the same history, the observer's column included
            assert _close(stacked[i].history, alone.history)
        else:  # not observed: the rows without the observer's column
            assert _close(stacked[i].history, [
                {k: v for k, v in row.items() if k != "mean"} for row in alone.history
            ])  # fmt: skip
