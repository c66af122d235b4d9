"""The privacy–utility trade-off: how much each defense setting stops each attack, beside
the test accuracy a model keeps when trained with that setting.

A trade-off spec is a sweep spec plus a `utility` mapping (UtilityConfig keys). The attacks
run as a sweep (resumable, parallel); each defense setting is then trained once, and its
result is cached under `utility/` so a re-run only trains what is missing.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from gradleak.core.device import AUTO as AUTO_DEVICE
from gradleak.core.device import CPU, resolve_device
from gradleak.core.errors import GradleakError
from gradleak.core.files import write_atomically, write_bytes_atomically
from gradleak.core.settings import replace_checked, to_plain
from gradleak.report.tables import write_csv
from gradleak.studies.summary import (
    among,
    counted,
    of,
    present,
    ran,
    scored,
    success_share,
    summarise_groups,
)
from gradleak.studies.sweep.backends import Backend
from gradleak.studies.sweep.runner import run_sweep
from gradleak.studies.sweep.spec import NO_DEFENSE, SweepSpec, parse_spec, read_located
from gradleak.training.sgd import poisson_rate
from gradleak.training.utility import (
    UtilityConfig,
    UtilityResult,
    open_utility_data,
    train_with_defenses,
)

RECOVERED_PSNR = 25.0  # the DLG paper's figures count an image as leaked from about here
_RESULT_FIELDS = {f.name for f in fields(UtilityResult)}


@dataclass(frozen=True)
class TradeoffSpec:
    sweep: SweepSpec
    utility: UtilityConfig
    recovered_psnr: float = RECOVERED_PSNR


def read_tradeoff(path: Path) -> TradeoffSpec:
    """A sweep spec file with a `utility` mapping and an optional `recovered_psnr`."""
    path = Path(path)
    root = read_located(path, "trade-off spec")
    utility = root.value.pop("utility", None)
    root.children.pop("utility", None)
    recovered = root.value.pop("recovered_psnr", RECOVERED_PSNR)
    root.children.pop("recovered_psnr", None)
    if not isinstance(utility, dict):
        raise GradleakError(
            f"{path}: the trade-off spec needs 'utility': a mapping of training settings "
            "(model, dataset, data_root, epochs, ...)"
        )
    if "defenses" in utility:
        raise GradleakError(f"{path}: 'utility' takes its defenses from the 'defenses' axis")
    config = replace_checked(UtilityConfig(), utility, f"{path}: 'utility'").validate()
    try:
        open_utility_data(config)  # before any attack runs: the training data must be there
    except GradleakError as exc:
        raise GradleakError(f"{path}: 'utility': {exc}") from None
    if isinstance(recovered, bool) or not isinstance(recovered, int | float) or recovered <= 0:
        raise GradleakError(f"{path}: 'recovered_psnr' must be a positive number of dB")
    return TradeoffSpec(parse_spec(root, str(path)), config, float(recovered))


def run_tradeoff(
    spec: TradeoffSpec,
    out_dir: Path,
    *,
    backend: Backend | None = None,
    progress: bool = True,
    threads: int | None = None,
    device: str | None = None,
    stack: bool = True,
) -> tuple[list[dict[str, Any]], bool]:
    """Run the attacks and the utility trainings; write tradeoff.csv/.md/.png.

    Args:
        spec: the sweep of attacks against defense settings and the utility training.
        out_dir: the study's folder (the sweep's cells, `utility/` caches, the tables).
        backend: where the attack cells run.
        progress: show progress bars.
        threads: torch threads per attack cell.
        device: where the attack cells (resolved by each, None: the spec's) and the utility
            trainings (resolved here, None: auto) compute.
        stack: attack cells that differ only in their image and seed together (`run_sweep`).

    Returns:
        The trade-off rows (per attack and defense) and whether Ctrl-C ended the study (then
        no rows and no tables).

    Raises:
        GradleakError: as `run_sweep`, or a utility training that cannot run.
    """
    result = run_sweep(
        spec.sweep,
        out_dir,
        backend=backend,
        progress=progress,
        threads=threads,
        device=device,
        stack=stack,
    )
    if result.interrupted:
        return [], True
    here = resolve_device(device or AUTO_DEVICE)
    utility = {d: _utility(spec.utility, d, out_dir, here) for d in spec.sweep.defenses}
    rows = tradeoff_rows(result.rows, utility, spec.recovered_psnr)
    write_tradeoff(out_dir, rows, spec)
    return rows, False


def _label(defense: tuple[str, ...]) -> str:
    return "+".join(defense) if defense else NO_DEFENSE


def _utility(
    config: UtilityConfig, defense: tuple[str, ...], out_dir: Path, device: torch.device = CPU
) -> dict[str, Any]:
    """Train once per defense setting; the result is cached with the settings it came from
    (not the device: a result trained on one device is reused on another)."""
    config = replace(config, defenses=defense)
    settings = to_plain(config)
    cache = out_dir / "utility" / f"{_label(defense).replace(':', '-')}.json"
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            result = saved.get("result")
            # A result that lacks a field (how its batches were sampled) is from an older
            # training, whose numbers may differ: a miss.
            if (
                saved.get("settings") == settings
                and isinstance(result, dict)
                and result.keys() == _RESULT_FIELDS
            ):
                return result
        except (json.JSONDecodeError, AttributeError):
            pass  # a damaged cache file is a miss: train again
    result = asdict(train_with_defenses(config, device=device))
    write_atomically(cache, json.dumps({"settings": settings, "result": result}, indent=2))
    return result


def tradeoff_rows(
    cells: Sequence[dict[str, Any]],
    utility: dict[tuple[str, ...], dict[str, Any]],
    recovered_psnr: float,
) -> list[dict[str, Any]]:
    """Per (attack, defense): median PSNR, fraction recovered, labels, and the utility.

    Args:
        cells: the sweep's results rows.
        utility: per defense setting, its utility training result (accuracy, epsilon).
        recovered_psnr: the PSNR (dB) from which an image counts as recovered.

    Returns:
        Defense by defense in the order of `utility`, its attacks in the order of the cells;
        the scores over the cells whose status is ok (only None is skipped), the share
        recovered over the cells that ran (a diverged one is not recovered), and how many
        cells were not scored (failed, diverged or made no progress).
    """
    # Scores of runs whose optimisation failed (diverged, no progress) or that raised are
    # not attack results: they are counted apart, never averaged in.
    stats = {
        "images": len,
        "not_scored": counted(lambda row: not scored(row)),
        "psnr_median": among(scored, of(statistics.median, "psnr", present)),
        "psnr_mean": among(scored, of(statistics.fmean, "psnr", present)),
        "recovered": among(ran, success_share(recovered_psnr, present)),
        "label_accuracy": among(scored, of(statistics.fmean, "label_accuracy", present)),
    }
    groups = summarise_groups(cells, ("attack", "defense"), stats)
    rows = []
    for defense, trained in utility.items():
        label = _label(defense)
        for group in groups:
            if group["defense"] == label:
                rows.append(
                    {**group, "test_accuracy": trained["accuracy"], "epsilon": trained["epsilon"]}
                )
    return rows


COLUMNS = [
    "attack",
    "defense",
    "images",
    "not_scored",
    "psnr_median",
    "psnr_mean",
    "recovered",
    "label_accuracy",
    "test_accuracy",
    "epsilon",
]


def write_tradeoff(out_dir: Path, rows: list[dict[str, Any]], spec: TradeoffSpec) -> None:
    """tradeoff.csv, tradeoff.md and tradeoff.png in `out_dir` from the trade-off rows."""
    write_csv(out_dir / "tradeoff.csv", COLUMNS, rows)
    write_atomically(out_dir / "tradeoff.md", tradeoff_markdown(rows, spec))
    write_bytes_atomically(out_dir / "tradeoff.png", tradeoff_png(rows, spec))


def tradeoff_markdown(rows: Sequence[dict[str, Any]], spec: TradeoffSpec) -> str:
    """The trade-off table: attack quality and utility (and ε for DP-SGD) per setting.

    DP-SGD settings train on Poisson-sampled batches (the accountant's assumption); the ε
    column's header gives their q.
    """
    u = spec.utility
    q = poisson_rate(u.train_count, u.batch_size)
    lines = [
        f"| attack | defense | images | median PSNR dB | recovered (≥ {spec.recovered_psnr:g} dB) "
        f"| label acc. | test acc. ({u.model}, {u.dataset}) "
        f"| ε (δ = {u.delta:g}, Poisson q = {q:.3g}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        median = "n/a" if r["psnr_median"] is None else f"{r['psnr_median']:.1f}"
        labels = "n/a" if r["label_accuracy"] is None else f"{r['label_accuracy']:.2f}"
        epsilon = "–" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        recovered = "n/a" if r["recovered"] is None else f"{r['recovered']:.0%}"
        images = str(r["images"])
        if r.get("not_scored"):
            images += f" ({r['not_scored']} not scored)"
        lines.append(
            f"| {r['attack']} | {r['defense']} | {images} | {median} "
            f"| {recovered} | {labels} | {r['test_accuracy']:.3f} | {epsilon} |"
        )
    return "\n".join(lines) + "\n"


def tradeoff_png(rows: Sequence[dict[str, Any]], spec: TradeoffSpec) -> bytes:
    """Median PSNR per attack (top) and test accuracy (bottom) for every defense setting."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    figure = Figure(figsize=(max(6.0, 0.55 * len(defenses) + 2), 6.0), dpi=120)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    xs = range(len(defenses))
    # Lines join the strengths of one defense family (e.g. prune:0.1 … prune:0.7) only.
    families = [
        d.split(":")[0] if d.split(":")[0] != "noise" else d.rsplit(":", 1)[0] for d in defenses
    ]
    colours = {}
    for attack in attacks:
        by = {r["defense"]: r for r in rows if r["attack"] == attack}
        ys = [by[d]["psnr_median"] if d in by else None for d in defenses]
        ys = [float("nan") if y is None else y for y in ys]
        start = 0
        for end in range(1, len(defenses) + 1):
            if end == len(defenses) or families[end] != families[start]:
                segment = range(start, end)
                line = top.plot(
                    list(segment),
                    [ys[i] for i in segment],
                    "o-",
                    color=colours.get(attack),
                    label=attack if attack not in colours else None,
                )
                colours.setdefault(attack, line[0].get_color())
                start = end
    top.axhline(spec.recovered_psnr, color="grey", linestyle="--", linewidth=1)
    top.set_ylabel("median PSNR (dB)")
    top.set_title("Reconstruction quality and model accuracy per defense setting")
    top.legend(title="attack", frameon=False)
    top.grid(alpha=0.3)
    accuracy = {r["defense"]: r["test_accuracy"] for r in rows}
    bottom.bar(xs, [accuracy[d] for d in defenses], color="tab:green", alpha=0.7)
    bottom.set_ylabel(f"test accuracy\n({spec.utility.model}, {spec.utility.dataset})")
    bottom.set_ylim(0, 1)
    bottom.set_xticks(list(xs), defenses, rotation=45, ha="right")
    bottom.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
