"""Sweeps: checked specs, one run per cell, resumable, the same results on every backend."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gradleak.core.errors import GradleakError
from gradleak.studies.sweep.backends import LocalBackend
from gradleak.studies.sweep.runner import CELLS, MARKER, run_cell, run_sweep, summarise
from gradleak.studies.sweep.spec import parse_spec, read_spec

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = """\
name: tiny
attacks: [dlg, idlg]
defenses: [none, "prune:0.5"]
images: "0-1"
options:
  dlg: {iterations: 2}
  idlg: {iterations: 2}
success_psnr: 9.5
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _psnr_by_cell(sweep_dir: Path) -> dict[str, float]:
    return {r["cell"]: float(r["psnr"]) for r in _rows(sweep_dir / "results.csv")}


# --- specs --------------------------------------------------------------------------------


def test_spec_expands_to_the_product_of_its_axes(spec_file: Path) -> None:
    spec = read_spec(spec_file)
    cells = spec.cells()
    assert len(cells) == 2 * 2 * 1 * 1 * 2 * 1
    assert len({c.name for c in cells}) == len(cells)
    assert {c.defense for c in cells} == {(), ("prune:0.5",)}
    config = spec.run_config(cells[-1], Path("x"))
    assert config.attack == "idlg" and config.defenses == ("prune:0.5",)
    assert config.indices == (1,) and config.attack_options == {"iterations": 2}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("attacks: [dlg]\nmodle: [lenet]\n", ["line 2", "unknown key 'modle'", "models"]),
        (
            "attacks: [dlg,\n  gan]\n",
            [
                "line 2",
                "'gan' is not one of: dlg, idlg, dlg-admm, idlg-admm, analytic, spear, imprint, "
                "ig, rgap",
            ],
        ),
        ("models: [lenet]\n", ["needs 'attacks'"]),
        ("attacks: [dlg]\nmodels: [vgg]\n", ["line 2", "'vgg' is not a model", "lenet"]),
        ("attacks: [dlg]\ndefenses:\n  - none\n  - prune:1.5\n", ["line 4", "[0, 1)"]),
        ("attacks: [dlg]\nimages: 9-3\n", ["line 2", "'0-9'"]),
        ("attacks: [dlg]\nseeds: [1, 1]\n", ["line 2", "repeat"]),
        ("attacks: [dlg, dlg]\n", ["line 1", "attacks repeat a value"]),
        ("attacks: [dlg]\ndefenses: [none, []]\n", ["line 2", "defenses repeat a value"]),
        ("attacks: [dlg]\nbase: {model: lenet}\n", ["line 2", "axes decide"]),
        ("attacks: [dlg]\nbase: {colour: red}\n", ["line 2", "unknown key 'colour'"]),
        ("attacks: [dlg]\noptions: {ig: {lr: 1}}\n", ["line 2", "not in attacks"]),
        ("attacks: [dlg]\noptions: {dlg: {speed: 1}}\n", ["line 2", "unknown key 'speed'"]),
        ("attacks: [dlg]\nprotocols: [fedprox]\n", ["line 2", "fedsgd"]),
        ("attacks: []\n", ["line 1", "empty"]),
        ("attacks: [dlg\n", ["cannot be read"]),
    ],
)
def test_bad_specs_name_the_key_and_line(
    tmp_path: Path, text: str, fragments: Sequence[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GradleakError) as error:
        read_spec(path)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# --- running ------------------------------------------------------------------------------


class _InterruptAfter:
    """A backend that delivers Ctrl-C after `count` cells (as a user would)."""

    workers = 1

    def __init__(self, count: int) -> None:
        self.count = count

    def run(self, fn: Any, jobs: Sequence[dict]) -> Iterator[dict]:
        for i, job in enumerate(jobs):
            if i == self.count:
                raise KeyboardInterrupt
            yield fn(job)


def test_sweep_runs_every_cell_and_summarises(spec_file: Path, tmp_path: Path) -> None:
    spec = read_spec(spec_file)
    out = tmp_path / "sweep"
    result = run_sweep(spec, out, progress=False, threads=1)

    assert (result.cells, result.ran, result.skipped) == (8, 8, 0)
    rows = _rows(out / "results.csv")
    assert sorted(r["cell"] for r in rows) == sorted(c.name for c in spec.cells())
    for row in rows:
        metrics = json.loads((out / row["run_dir"] / "metrics.json").read_text())
        assert float(row["psnr"]) == pytest.approx(metrics["psnr"])
        assert metrics["defenses"] == ([] if row["defense"] == "none" else ["prune:0.5"])
    summary = _rows(out / "summary.csv")
    assert len(summary) == 4
    for group in summary:
        members = [
            float(r["psnr"])
            for r in rows
            if (r["attack"], r["defense"]) == (group["attack"], group["defense"])
        ]
        assert int(group["cells"]) == len(members) == 2
        assert float(group["psnr_mean"]) == pytest.approx(sum(members) / 2)
        assert float(group["success_rate"]) == sum(p >= 9.5 for p in members) / 2
    assert "| dlg | lenet | prune:0.5 | fedsgd | 2 |" in (out / "summary.md").read_text()

    again = run_sweep(spec, out, progress=False, threads=1)
    assert (again.ran, again.skipped) == (0, 8)


def test_interrupted_and_half_written_cells_are_rerun_never_counted(
    spec_file: Path, tmp_path: Path
) -> None:
    spec = read_spec(spec_file)
    out = tmp_path / "sweep"
    first = run_sweep(spec, out, backend=_InterruptAfter(3), progress=False, threads=1)
    assert first.interrupted and first.ran == 3
    assert len(_rows(out / "results.csv")) == 3

    # A crash mid-cell: a partial directory, and a cell directory without its marker.
    cells = sorted((out / CELLS).iterdir())
    (out / CELLS / f"{spec.cells()[5].name}.partial-dead").mkdir()
    (cells[0] / MARKER).unlink()

    second = run_sweep(spec, out, progress=False, threads=1)
    assert second.removed_partial == 2
    assert (second.ran, second.skipped) == (8 - 2, 2)
    rows = _rows(out / "results.csv")
    assert sorted(r["cell"] for r in rows) == sorted(c.name for c in spec.cells())
    assert not [p for p in (out / CELLS).iterdir() if ".partial-" in p.name]

    fresh = tmp_path / "fresh"
    run_sweep(spec, fresh, progress=False, threads=1)
    assert _psnr_by_cell(out) == _psnr_by_cell(fresh)


def test_a_changed_setting_reruns_the_cell(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep(read_spec(spec_file), out, progress=False, threads=1)
    spec_file.write_text(SPEC.replace("  dlg: {iterations: 2}", "  dlg: {iterations: 3}"))
    result = run_sweep(read_spec(spec_file), out, progress=False, threads=1)
    assert (result.ran, result.skipped) == (4, 4)  # the dlg cells only


def test_two_local_workers_give_the_sequential_results(spec_file: Path, tmp_path: Path) -> None:
    spec = read_spec(spec_file)
    run_sweep(spec, tmp_path / "one", progress=False, threads=1)
    run_sweep(spec, tmp_path / "two", backend=LocalBackend(2), progress=False, threads=1)
    assert _psnr_by_cell(tmp_path / "one") == _psnr_by_cell(tmp_path / "two")


# Ray's driver talks to its local cluster over the loopback interface only.
@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_ray_backend_gives_the_sequential_results(spec_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the Ray backend is the optional extra gradleak[ray]")
    from gradleak.studies.sweep.backends import RayBackend

    spec = read_spec(spec_file)
    run_sweep(spec, tmp_path / "one", progress=False, threads=1)
    backend = RayBackend(workers=2)
    try:
        assert backend.workers == 2
        run_sweep(spec, tmp_path / "ray", backend=backend, progress=False, threads=1)
    finally:
        backend.shutdown()
    assert _psnr_by_cell(tmp_path / "one") == _psnr_by_cell(tmp_path / "ray")


@pytest.mark.enable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_unreachable_ray_address_fails_in_one_line() -> None:
    pytest.importorskip("ray", reason="the Ray backend is the optional extra gradleak[ray]")
    from gradleak.studies.sweep.backends import RayBackend

    with pytest.raises(GradleakError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:9"):
        RayBackend("127.0.0.1:9")


def test_an_interrupted_attack_is_not_published(spec_file: Path, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    import gradleak.scenario.run as run_module
    from gradleak.studies.sweep.runner import cell_job

    def interrupting(case, stop_at=None, **kwargs):  # type: ignore[no-untyped-def]
        def observe(iteration, losses, images):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt

        return observe

    monkeypatch.setattr(run_module, "psnr_observer", interrupting)
    spec = parse_spec({"attacks": ["dlg"], "options": {"dlg": {"iterations": 3}}})
    cell = spec.cells()[0]
    (tmp_path / CELLS).mkdir()
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell_job(spec, cell, tmp_path, threads=1))
    assert list((tmp_path / CELLS).iterdir()) == []


def test_summary_ignores_missing_scores() -> None:
    rows = [
        {
            "attack": "a",
            "model": "m",
            "defense": "none",
            "protocol": "p",
            "psnr": 30.0,
            "ssim": None,
            "label_accuracy": None,
        },
        {
            "attack": "a",
            "model": "m",
            "defense": "none",
            "protocol": "p",
            "psnr": float("nan"),
            "ssim": 0.5,
            "label_accuracy": 1.0,
        },
    ]
    (group,) = summarise(rows, success_psnr=25)
    assert group["cells"] == 2
    assert group["psnr_mean"] == 30.0 and group["psnr_std"] == 0.0
    assert group["ssim_mean"] == 0.5 and group["label_accuracy_mean"] == 1.0
    assert group["success_rate"] == 0.5
    assert not math.isnan(group["psnr_mean"])
