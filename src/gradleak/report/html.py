"""Self-contained HTML reports of a run directory or a sweep directory.

Every picture is embedded as a base64 data: URI and the CSS is inline, so a report is one
file that can be mailed or archived on its own. The pages read only what the run or sweep
wrote to disk (metrics.json, history.csv, grid.png, snapshots.json, config.yaml; spec.yaml,
results.csv, summary.csv), so a report can be rebuilt at any time.

What a page shows of a run's scores follows its modality (`metrics.json`'s `modality`; none:
an image run): the scores are `Modality.scores`, cells are ranked and plotted by its
`headline` and counted as successes by its `success_rule`. The pictures and the sentences
follow what the run wrote: `grid.png` is shown where there is one, and the sentences of
`per_sequence` (text) as a token diff, the original above the recovered one.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from PIL import Image, UnidentifiedImageError

from gradleak import __version__
from gradleak.core.errors import GradleakError
from gradleak.core.files import write_atomically
from gradleak.modalities import Modality, get_modality
from gradleak.report.images import PRIOR_GRID
from gradleak.report.plots import (
    DPI,
    axis_plot_png,
    has_column,
    loss_curve_png,
    number,
    quality_curves_png,
)
from gradleak.report.tables import SCORE_FORMATS, score_format
from gradleak.studies.summary import (
    SWEEP_SETTING,
    modalities_of,
    modality_of,
    score_keys,
    succeeded,
    sweep_summary,
)

if TYPE_CHECKING:
    from jinja2 import Environment

REPORT_FILE = "report.html"
TEMPLATE_DIR = Path(__file__).parent / "templates"
SWEEP_AXES = ("attack", "model", "defense", "protocol", "image", "seed")
SUMMARY_KEYS = SWEEP_SETTING  # the keys that name one setting of a sweep
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_ROW_HEIGHT_PX = 128  # small pictures are shown enlarged (pixelated) to this row height
CSS_DPI = 96
EXTREME_CELLS = 3  # best and worst reconstructions shown in a sweep report
CARD_SEQUENCES = 3  # sentences shown on a text cell's card

NA = "n/a"


# ---------------------------------------------------------------------------- formatting


def _missing_text(text: str) -> bool:
    """An empty CSV cell or a written-out None/NaN ('none' stays: it names e.g. a defense)."""
    text = text.strip()
    return text in ("", "None", "null") or text.lower() == "nan"


def fmt(value: object, spec: str = "") -> str:
    """A value for display: None, empty cells and NaN are 'n/a'; numbers use `spec`."""
    if value is None or (isinstance(value, str) and _missing_text(value)):
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        as_float = number(value)
        if not spec or math.isnan(as_float):
            return value
        value = as_float
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            return NA
        if isinstance(value, float) and math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if spec:
            if spec == "d":
                return str(int(value)) if float(value).is_integer() else f"{value:g}"
            return format(value, spec)
        return str(value)
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v, spec) for v in value) if value else "none"
    return str(value)


def _with_unit(value: object, spec: str, unit: str) -> str:
    text = fmt(value, spec)
    return text if text == NA else f"{text} {unit}"


_METRIC_SPECS = {
    **{score: form.spec for score, form in SCORE_FORMATS.items()},
    "success_rate": ".2f",
    "seconds": ".2f",
    "iterations": "d",
    "cells": "d",
    "seed": "d",
}


def _column_spec(column: str) -> str:
    """Number format for a results/summary column: psnr_mean like psnr, and so on."""
    for suffix in ("_mean", "_std"):
        if column.endswith(suffix):
            column = column[: -len(suffix)]
    return _METRIC_SPECS.get(column, "")


# ---------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GradleakError(f"cannot read {path}: {exc}") from exc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise GradleakError(f"{path} is not valid JSON: {exc}") from exc


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GradleakError(f"{path} is not valid YAML: {first_line}") from exc


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings ('' for missing); a missing file is no rows."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [
                {key: "" if value is None else value for key, value in row.items() if key}
                for row in csv.DictReader(handle)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GradleakError(f"cannot read {path} as CSV: {exc}") from exc


def _png_bytes(path: Path) -> bytes | None:
    """The file's bytes if it is a readable PNG, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(PNG_SIGNATURE) else None


def _picture(data: bytes, rows: int = 1, pixelated: bool = True) -> dict[str, object]:
    """An embeddable picture: data URI plus display size (small images enlarged)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        width = height = 0
    if pixelated:  # small pictures enlarged by whole factors, to keep the pixels square
        scale = max(1, math.ceil(MIN_ROW_HEIGHT_PX * rows / height)) if height else 1
    else:  # plots: rendered at DPI, shown at CSS pixel density
        scale = CSS_DPI / DPI
    return {
        "uri": "data:image/png;base64," + base64.b64encode(data).decode("ascii"),
        "width": round(width * scale) or None,
        "height": round(height * scale) or None,
        "pixelated": pixelated,
    }


def _picture_file(path: Path, rows: int = 1) -> dict[str, object] | None:
    data = _png_bytes(path)
    return None if data is None else _picture(data, rows=rows)


# ---------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _environment() -> Environment:
    try:  # imported here: only writing a report needs jinja2
        from jinja2 import Environment, FileSystemLoader, StrictUndefined
    except ImportError as exc:
        raise GradleakError(
            "writing HTML reports needs jinja2; install it with: pip install jinja2"
        ) from exc
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    return env


def _render(template: str, out: Path, **context: object) -> Path:
    html = _environment().get_template(template).render(version=__version__, **context)
    try:
        write_atomically(out, html)
    except OSError as exc:
        raise GradleakError(f"cannot write the report {out}: {exc}") from exc
    return out


# ---------------------------------------------------------------------------- run report


def _score_text(value: object, score: str) -> str:
    """One score for display: its format and unit (PSNR '23.41 dB')."""
    form = score_format(score)
    return _with_unit(value, form.spec, form.unit) if form.unit else fmt(value, form.spec)


# The key of a run's per-sample scores, and what one sample is called.
_PER_ITEM = {"per_image": "image", "per_sequence": "sequence"}


def _per_item(metrics: Mapping[str, Any]) -> tuple[str, object]:
    """What one sample of the run is called, and its per-sample scores (None: none kept)."""
    for key, noun in _PER_ITEM.items():
        if key in metrics:
            return noun, metrics[key]
    return "image", None


def _labels_text(labels: object) -> str:
    """Class labels as a list; a masked-language model's token labels (one row of labels per
    sequence, -100 off the masked tokens) by their shape."""
    if isinstance(labels, list) and labels and all(isinstance(row, list) for row in labels):
        width = max(len(row) for row in labels)
        return f"{len(labels)}×{width} token labels (masked-language modelling)"
    return fmt(labels)


def _run_metric_rows(metrics: Mapping[str, Any], modality: Modality) -> list[tuple[str, str]]:
    threat = metrics.get("threat_model") or {}
    labels_known = isinstance(threat, Mapping) and bool(threat.get("labels_known"))
    rows = []
    for score in modality.scores:
        text = _score_text(metrics.get(score), score)
        if score == "label_accuracy" and text == NA and labels_known:
            text = "n/a (labels given by the threat model, not scored)"
        rows.append((score_format(score).label, text))
    noun, _ = _per_item(metrics)
    rows += [
        ("label strategy", fmt(metrics.get("label_strategy"))),
        ("recovered labels", _labels_text(metrics.get("recovered_labels"))),
        ("true labels", _labels_text(metrics.get("true_labels"))),
        (f"matching (reconstruction per truth {noun})", fmt(metrics.get("matching"))),
        ("status", fmt(metrics.get("status"))),
        ("status reason", fmt(metrics.get("status_reason") or None)),
        ("iterations", fmt(metrics.get("iterations"), "d")),
        ("loss evaluations", fmt(metrics.get("loss_evaluations"), "d")),
        ("seconds", _with_unit(metrics.get("seconds"), ".2f", "s")),
    ]
    if metrics.get("compiled"):
        rows.append(("compile seconds", _with_unit(metrics.get("compile_seconds"), ".1f", "s")))
        rows.append(("compiled graphs from the cache", fmt(metrics.get("compile_cache_hits"), "d")))
    if metrics.get("compile_decision"):
        rows.append(("compile decision", fmt(metrics.get("compile_decision"))))
    rows += [
        ("compiled (torch.compile)", fmt(bool(metrics.get("compiled")))),
        ("restarts requested", fmt(metrics.get("restarts"), "d")),
        ("trials run", fmt(metrics.get("trials_run"), "d")),
        ("best trial", fmt(metrics.get("best_trial"), "d")),
        ("final matching loss", fmt(metrics.get("matching_loss"), ".4g")),
    ]
    trial_losses = metrics.get("trial_losses")
    if isinstance(trial_losses, list) and len(trial_losses) > 1:
        rows.append(("matching loss per trial", fmt(trial_losses, ".4g")))
    stopped = metrics.get("stopped_at_psnr")
    rows.append(
        (
            "stopped early",
            NA
            if "stopped_at_psnr" not in metrics
            else (f"yes, PSNR reached {fmt(stopped, 'g')} dB" if stopped is not None else "no"),
        )
    )
    interrupted = metrics.get("interrupted")
    rows.append(
        (
            "interrupted",
            "yes (Ctrl-C or SIGTERM: the result so far)" if interrupted else fmt(interrupted),
        )
    )
    rows += [
        ("batch size per user", fmt(metrics.get("batch_size"), "d")),
        ("seed", fmt(metrics.get("seed"), "d")),
    ]
    if "protocol" in metrics:
        rows.append(("protocol", fmt(metrics.get("protocol"))))
    settings = metrics.get("protocol_settings")
    if isinstance(settings, Mapping):
        rows.append(("users aggregated", fmt(settings.get("users"), "d")))
        if settings.get("local_training") is not None:
            rows.append(
                ("client's local training", local_training_text(settings["local_training"]))
            )
        if settings.get("rho") is not None:
            rows.append(("FedADMM penalty ρ", fmt(settings.get("rho"), "g")))
        if settings.get("rounds", 1) != 1:
            rows.append(("attacked round", fmt(settings.get("rounds"), "d")))
        rows.append(("client's model mode", fmt(settings.get("client_model_mode"))))
        rows.append(("batch-norm statistics shared", fmt(settings.get("buffers_shared"))))
    if "defenses" in metrics:
        rows.append(("client defenses", fmt(metrics.get("defenses"))))
    return rows


_THREAT_LABELS = {
    "num_classes": "number of classes",
    "batch_size": "samples reconstructed (all users)",
    "mean": "normalisation mean",
    "std": "normalisation std",
    "model_mode": "batch-norm mode the attacker assumes",
    "labels_known": "labels known to the attacker",
    "dataset": "dataset",
    "num_users": "users averaged (known to the server)",
    "local_training": "local training the attacker replays",
    "local_training_guessed": "local training is the attacker's guess",
    "model_mode_guessed": "batch-norm mode is the attacker's guess",
    "sequence_lengths": "each sequence's length in tokens",
    "server_modifies_model": "malicious server (may alter the model it sends)",
}
# What the sizes of one attacked input are, by modality.
_SHAPE_LABELS = {
    "image": "data shape (C×H×W)",
    "text": "data shape (padded length × hidden size)",
}


def local_training_text(local: object) -> str:
    """'3 steps of batch 2, lr 0.1' from a LocalTraining description."""
    if not isinstance(local, Mapping):
        return fmt(local)
    if local.get("epochs") is not None:
        amount = f"{local['epochs']} epoch(s)"
    else:
        amount = f"{local.get('steps') or 1} step(s)"
    batch = local.get("batch_size")
    size = "all samples" if batch is None else f"batch {batch}"
    return f"{amount} of {size}, lr {fmt(local.get('lr'), 'g')}"


def _threat_rows(threat: object, modality: Modality) -> list[tuple[str, str]]:
    if not isinstance(threat, Mapping):
        return []
    labels = {**_THREAT_LABELS, "data_shape": _SHAPE_LABELS.get(modality.name, "data shape")}
    rows = []
    for key, value in threat.items():
        if key == "data_shape" and isinstance(value, list):
            text = "×".join(str(v) for v in value)
        elif key == "local_training":
            text = "none (a gradient is shared)" if value is None else local_training_text(value)
        else:
            text = fmt(value, "g" if key in ("mean", "std") else "")
        rows.append((labels.get(key, key.replace("_", " ")), text))
    return rows


# Per-sample entries that name the sample or hold its text, not a score of it.
_ITEM_KEYS = ("index", "matched_reconstruction", "truth", "recovered")


def _per_item_table(metrics: Mapping[str, Any]) -> dict[str, object] | None:
    """The per-sample scores (per_image, per_sequence) as a table: the sample, its matched
    reconstruction, then each score it holds, formatted as the score is everywhere."""
    noun, items = _per_item(metrics)
    if not isinstance(items, list):
        return None
    items = [item for item in items if isinstance(item, Mapping)]
    if not items:
        return None
    scores = [k for k in dict.fromkeys(k for item in items for k in item) if k not in _ITEM_KEYS]
    return {
        "noun": noun,
        "columns": [f"truth {noun}", "matched reconstruction"]
        + [score_format(k).column for k in scores],
        "rows": [
            [fmt(item.get("index"), "d"), fmt(item.get("matched_reconstruction"), "d")]
            + [fmt(item.get(k), score_format(k).spec) for k in scores]
            for item in items
        ],
    }


def _tokens(text: object) -> list[str]:
    return str(text or "").split()


def sentence_diffs(per_sequence: object, limit: int | None = None) -> list[dict[str, object]]:
    """Each true sentence above the recovered one, its tokens marked (`report.text`'s diff).

    Args:
        per_sequence: a text run's per-sequence scores (with `truth` and `recovered` text).
        limit: show at most this many sentences (None: all).

    Returns:
        Per sentence: its index, whether it was recovered exactly, and the diff as markup.
    """
    from markupsafe import Markup

    from gradleak.report.text import text_diff_html

    if not isinstance(per_sequence, list):
        return []
    items = [item for item in per_sequence if isinstance(item, Mapping)]
    return [
        {
            "index": fmt(item.get("index"), "d"),
            "exact": bool(item.get("exact")),
            # text_diff_html escapes every token, so its fragment is safe markup.
            "diff": Markup(
                text_diff_html(_tokens(item.get("truth")), _tokens(item.get("recovered")))
            ),
        }
        for item in items[:limit]
    ]


def _text_diff_css() -> object:
    from markupsafe import Markup

    from gradleak.report.text import TEXT_DIFF_CSS

    return Markup(TEXT_DIFF_CSS)


def _snapshot_text(path: Path) -> str | None:
    """A text snapshot (recovered sentences, one per line), or None for anything else."""
    if path.suffix != ".txt":
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _snapshots(run_dir: Path, final_iteration: object) -> tuple[list[dict[str, object]], str]:
    index_path = run_dir / "snapshots.json"
    if not index_path.is_file():
        return [], "No snapshots were recorded for this run."
    index = _read_json(index_path)
    if not isinstance(index, list):
        raise GradleakError(f"{index_path} must hold a list of {{iteration, file}} entries")
    snapshots, missing = [], 0
    for entry in sorted(
        (e for e in index if isinstance(e, Mapping)), key=lambda e: number(e.get("iteration"))
    ):
        path = run_dir / str(entry.get("file", ""))
        picture = _picture_file(path)
        shown: dict[str, object] | None = picture
        if shown is None:
            text = _snapshot_text(path)
            shown = None if text is None else {"text": text}
        if shown is None:
            missing += 1
            continue
        iteration = fmt(entry.get("iteration"), "d")
        final = number(entry.get("iteration")) == number(final_iteration)
        snapshots.append({"iteration": iteration, "final": final, "text": None, **shown})
    note = ""
    if missing:
        note = (
            f"{missing} snapshot file(s) listed in snapshots.json are missing or neither PNGs "
            "nor text."
        )
    if not snapshots and not note:
        note = "snapshots.json lists no snapshots."
    return snapshots, note


def _scenario(metrics: Mapping[str, Any]) -> str:
    """'protocol fedsgd · defenses: noise' for runs that record them (newer runs), else ''."""
    parts = []
    if metrics.get("protocol"):
        parts.append(f"protocol {fmt(metrics['protocol'])}")
    if "defenses" in metrics:
        parts.append(f"defenses: {fmt(metrics.get('defenses'))}")
    return " · ".join(parts)


def write_run_report(run_dir: Path) -> Path:
    """Write run_dir/report.html from the files a run wrote; return its path.

    Args:
        run_dir: a run directory (with metrics.json) of any modality.

    Returns:
        The path of report.html.

    Raises:
        GradleakError: no metrics.json, unreadable files, a modality gradleak does not know,
            or a directory that cannot take the report.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise GradleakError(f"{run_dir} is not a run directory: it has no metrics.json")
    metrics = _read_json(metrics_path)
    if not isinstance(metrics, Mapping):
        raise GradleakError(f"{metrics_path} must hold a JSON object of metrics")
    modality = get_modality(modality_of(metrics))

    history = _read_csv(run_dir / "history.csv")
    loss_plot = quality_plot = None
    if has_column(history, "loss"):
        loss_plot = _picture(loss_curve_png(history), pixelated=False)
    if has_column(history, "psnr") or has_column(history, "mse"):
        quality_plot = _picture(quality_curves_png(history), pixelated=False)

    config_path = run_dir / "config.yaml"
    config_text = _read_text(config_path) if config_path.is_file() else ""
    snapshots, snapshot_note = _snapshots(run_dir, metrics.get("iterations"))
    attack, model = fmt(metrics.get("attack")), fmt(metrics.get("model"))
    headline = [
        (score_format(score).label, _score_text(metrics.get(score), score))
        for score in modality.scores
    ]
    headline += [
        ("iterations", fmt(metrics.get("iterations"), "d")),
        ("time", _with_unit(metrics.get("seconds"), ".1f", "s")),
    ]
    flags = []
    status = metrics.get("status")
    if status in ("diverged", "no-progress"):
        reason = metrics.get("status_reason") or ""
        flags.append(
            f"{status}{f' ({reason})' if reason else ''}: the scores are of the optimisation's "
            "start, not an attack result"
        )
    if metrics.get("interrupted"):
        flags.append("interrupted (Ctrl-C or SIGTERM): these are the results so far")
    if metrics.get("stopped_at_psnr") is not None:
        flags.append(f"stopped early once PSNR reached {fmt(metrics['stopped_at_psnr'], 'g')} dB")
    sentences = sentence_diffs(metrics.get("per_sequence"))
    return _render(
        "run.html.j2",
        run_dir / REPORT_FILE,
        title=f"{attack} on {model}",
        source=fmt(metrics.get("source")),
        dataset=fmt(metrics.get("dataset")),
        scenario=_scenario(metrics),
        run_name=run_dir.resolve().name,
        headline=headline,
        flags=flags,
        grid=_picture_file(run_dir / "grid.png", rows=2),
        prior_grid=_picture_file(run_dir / PRIOR_GRID, rows=3),
        prior_note=_prior_note(metrics.get("prior_nearest")),
        sentences=sentences,
        extra_css=_text_diff_css() if sentences else "",
        snapshots=snapshots,
        snapshot_note=snapshot_note,
        loss_plot=loss_plot,
        quality_plot=quality_plot,
        history_rows=len(history),
        metric_rows=_run_metric_rows(metrics, modality),
        per_item=_per_item_table(metrics),
        threat_rows=_threat_rows(metrics.get("threat_model"), modality),
        config_text=config_text,
        convention=str(metrics.get("convention") or modality.convention),
    )


# ---------------------------------------------------------------------------- sweep report


def _spec_axes(spec: Mapping[str, Any], results: Sequence[Mapping[str, str]]) -> dict[str, list]:
    """Axis name -> values, from the spec; from the results' distinct values without one."""
    axes = spec.get("axes")
    if isinstance(axes, Mapping):
        return {
            str(name): list(values) if isinstance(values, list | tuple) else [values]
            for name, values in axes.items()
        }
    derived: dict[str, list] = {}
    for name in SWEEP_AXES:
        seen: list[str] = []
        for row in results:
            if name in row and row[name] not in seen:
                seen.append(row[name])
        if seen:
            derived[name] = seen
    return derived


def _numeric(rows: Sequence[Mapping[str, str]], keys: Sequence[str]) -> list[dict[str, object]]:
    """CSV rows with the values of `keys` read as numbers (NaN where there is none)."""
    return [{**row, **{k: number(row.get(k)) for k in keys}} for row in rows]


def _summary_from_results(
    results: Sequence[Mapping[str, str]], success_psnr: float, modalities: Sequence[Modality]
) -> list[dict[str, object]]:
    """The summary.csv columns computed here, for a sweep that has not written one yet.

    The same per-setting summary the sweep writes, on the CSV's text read as numbers; what
    a setting lacks is NaN, shown as n/a, and so is the success rate of a setting whose
    rule needs a threshold the spec does not give.
    """
    from gradleak.studies.sweep.runner import summary_columns

    rows = _numeric(results, score_keys(modalities))
    threshold = success_psnr if math.isfinite(success_psnr) else math.inf
    summary = sweep_summary(rows, threshold, modalities)
    columns = summary_columns(modalities)
    out = []
    for group in summary:
        row = {c: math.nan if group.get(c) is None else group.get(c) for c in columns}
        rule = get_modality(modality_of(group)).success_rule(success_psnr)
        if not math.isfinite(rule.threshold):
            row["success_rate"] = math.nan
        out.append(row)
    return out


def _table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> dict[str, object]:
    numeric = {c for c in columns if _column_spec(c) or c.endswith(("_mean", "_std"))}
    return {
        "columns": [
            {"name": c, "label": c.replace("_", " "), "numeric": c in numeric} for c in columns
        ],
        "rows": [[fmt(row.get(c), _column_spec(c)) for c in columns] for row in rows],
    }


def _card_scores(modality: Modality) -> list[str]:
    """The scores a cell's card shows: the headline, then the next summarised score."""
    others = [s for s in modality.summary_scores if s != modality.headline]
    return [modality.headline, *others[:1]]


def _cell_card(sweep_dir: Path, row: Mapping[str, str], axes: Sequence[str]) -> dict[str, object]:
    """A cell's card: its scores, and its grid.png or (text) its first sentences."""
    modality = get_modality(modality_of(row))
    run_dir_text = (row.get("run_dir") or "").strip()
    run_dir = sweep_dir / run_dir_text if run_dir_text else None
    grid = _picture_file(run_dir / "grid.png", rows=2) if run_dir is not None else None
    sentences: list[dict[str, object]] = []
    more = 0
    if grid is None and run_dir is not None and (run_dir / "metrics.json").is_file():
        metrics = _read_json(run_dir / "metrics.json")
        per_sequence = metrics.get("per_sequence") if isinstance(metrics, Mapping) else None
        sentences = sentence_diffs(per_sequence, CARD_SEQUENCES)
        more = len(per_sequence) - len(sentences) if isinstance(per_sequence, list) else 0
    link = None
    if run_dir is not None and (run_dir / REPORT_FILE).is_file():
        link = f"{run_dir_text.rstrip('/')}/{REPORT_FILE}"
    return {
        "cell": fmt(row.get("cell")),
        "scores": " · ".join(
            f"{score_format(s).label} {_score_text(row.get(s), s)}" for s in _card_scores(modality)
        ),
        "details": [(axis, fmt(row.get(axis))) for axis in axes if axis in row],
        "grid": grid,
        "sentences": sentences,
        "more": more,
        "note": ""
        if grid or sentences
        else f"no grid.png or recorded sentences in {run_dir_text or 'the cell'}",
        "link": link,
    }


def _extremes(results: Sequence[Mapping[str, str]], score: str) -> tuple[list, list]:
    """Best and worst cells by `score`, disjoint: up to 3 each, fewer for small sweeps.

    Only cells whose status is ok count: a diverged run's scores are those of its start.
    """
    ranked = sorted(
        (
            r
            for r in results
            if math.isfinite(number(r.get(score))) and (r.get("status") or "ok") == "ok"
        ),
        key=lambda r: number(r.get(score)),
        reverse=True,
    )
    n_worst = min(EXTREME_CELLS, len(ranked) // 2)
    n_best = min(EXTREME_CELLS, len(ranked) - n_worst)
    best = ranked[:n_best]
    worst = list(reversed(ranked[len(ranked) - n_worst :])) if n_worst else []
    return best, worst


def _rule_text(modality: Modality, success_psnr: float) -> str:
    rule = modality.success_rule(success_psnr)
    if math.isfinite(rule.threshold):
        return rule.text
    return f"{score_format(rule.score).label}: no threshold in spec.yaml"


def write_sweep_report(sweep_dir: Path) -> Path:
    """Write sweep_dir/report.html from spec.yaml, results.csv and summary.csv.

    A sweep of several modalities shows, for each, its own plots by swept axis (of its
    headline score), its own best and worst cells and its success rule.

    Args:
        sweep_dir: a sweep directory (with spec.yaml or results.csv).

    Returns:
        The path of report.html.

    Raises:
        GradleakError: neither file, unreadable files, a modality gradleak does not know,
            or a directory that cannot take the report.
    """
    sweep_dir = Path(sweep_dir)
    spec_path, results_path = sweep_dir / "spec.yaml", sweep_dir / "results.csv"
    if not spec_path.is_file() and not results_path.is_file():
        raise GradleakError(
            f"{sweep_dir} is not a sweep directory: it has no spec.yaml or results.csv"
        )
    spec: Any = _read_yaml(spec_path) if spec_path.is_file() else {}
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise GradleakError(f"{spec_path} must hold a mapping (with 'axes' and 'success_psnr')")
    spec_text = _read_text(spec_path) if spec_path.is_file() else ""
    results = _read_csv(results_path)
    success_psnr = number(spec.get("success_psnr"))
    modalities = modalities_of(results) or [get_modality(modality_of({}))]
    mixed = len(modalities) > 1

    axes = _spec_axes(spec, results)
    planned = math.prod(len(values) for values in axes.values()) if axes else None
    axis_rows = [
        {"name": name, "shown": ", ".join(fmt(v) for v in values), "swept": len(values) > 1}
        for name, values in axes.items()
    ]
    swept = [name for name, values in axes.items() if len(values) > 1]

    summary_rows: Sequence[Mapping[str, object]] = _read_csv(sweep_dir / "summary.csv")
    summary_note = ""
    if not summary_rows and results:
        summary_rows = _summary_from_results(results, success_psnr, modalities)
        summary_note = "summary.csv is missing; this summary was computed from results.csv."
    summary_columns = list(summary_rows[0]) if summary_rows else []

    plots, best, worst = [], [], []
    card_axes = [a for a in SWEEP_AXES if a in axes]
    for modality in modalities:
        members = [r for r in results if modality_of(r) == modality.name]
        score = modality.headline
        for name in swept:
            if not any(name in row for row in members):
                continue
            seen = {row.get(name, "") for row in members}
            order = [str(v) for v in axes[name] if str(v) in seen]
            png = axis_plot_png(members, name, score, values=order)
            caption = f"{name} ({modality.name})" if mixed else name
            plots.append(
                {"axis": name, "score": score, "caption": caption, **_picture(png, pixelated=False)}
            )
        high, low = _extremes(members, score)
        title = f"{modality.name} cells, by {score_format(score).label}" if mixed else ""
        best.append({"title": title, "cards": [_cell_card(sweep_dir, r, card_axes) for r in high]})
        worst.append({"title": title, "cards": [_cell_card(sweep_dir, r, card_axes) for r in low]})
    rules = "; ".join(_rule_text(m, success_psnr) for m in modalities)
    judged = [
        r
        for r in results
        if math.isfinite(get_modality(modality_of(r)).success_rule(success_psnr).threshold)
    ]
    numeric = _numeric(judged, score_keys(modalities))
    successes = sum(succeeded(r, success_psnr) for r in numeric) if judged else None
    result_columns = [c for c in (list(results[0]) if results else []) if c != "run_dir"]
    cards = [card for group in best + worst for card in group["cards"]]
    extra_css = _text_diff_css() if any(card["sentences"] for card in cards) else ""
    return _render(
        "sweep.html.j2",
        sweep_dir / REPORT_FILE,
        title=f"Sweep {spec.get('name') or sweep_dir.resolve().name}",
        cells=len(results),
        planned=planned,
        success_rules=rules,
        successes=successes,
        judged=len(judged),
        axis_rows=axis_rows,
        summary=_table(summary_rows, summary_columns),
        summary_note=summary_note,
        plots=plots,
        plot_scores=" and ".join(score_format(m.headline).label for m in modalities),
        unswept_note=""
        if swept
        else "No axis has more than one value, so there is nothing to plot.",
        best=best,
        worst=worst,
        results=_table(results, result_columns),
        spec_text=spec_text,
        conventions=[(m.name if mixed else "", m.convention) for m in modalities],
        extra_css=extra_css,
    )


# ---------------------------------------------------------------------------- dispatch


def write_report(path: Path) -> Path:
    """Write the report of a sweep directory or a run directory; return the report's path."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise GradleakError(
            f"{path} {what}; give a run directory (with metrics.json) or a sweep directory "
            "(with spec.yaml and results.csv)"
        )
    if (path / "results.csv").is_file() or (path / "spec.yaml").is_file():
        return write_sweep_report(path)
    if (path / "metrics.json").is_file():
        return write_run_report(path)
    raise GradleakError(
        f"{path} is neither a run directory (no metrics.json) nor a sweep directory "
        "(no spec.yaml or results.csv)"
    )


def _prior_note(nearest: object) -> str:
    """One sentence comparing the reconstruction with the truth and with the prior's memory."""
    if not isinstance(nearest, Mapping):
        return ""
    return (
        f"PSNR to the truth {fmt(nearest.get('psnr_to_truth'), '.2f')} dB, to the nearest "
        f"training image {fmt(nearest.get('psnr_to_nearest'), '.2f')} dB (prior trained on "
        f"{fmt(nearest.get('trained_on'))})."
    )


# ---------------------------------------------------------------------------- audit page

_AUDIT_CSS = (
    ".verdict { font-size: 1.25rem; font-weight: 700; padding: 10px 14px; border-radius: 8px; "
    "margin: 10px 0; }\n"
    ".verdict-leaks { background: #fde8e8; color: #9b1c1c; }\n"
    ".verdict-labels { background: var(--warn-bg); color: var(--warn); }\n"
    ".verdict-none { background: #e6f4ea; color: #1e6b34; }\n"
    "tr.overall td { font-weight: 600; border-top: 2px solid var(--line); }\n"
    "ol.captions { font-size: 0.85rem; color: var(--muted); }\n"
)
# The verdict's colour on the page, by its level.
_LEVEL_CLASS = {
    "LEAKS": "leaks",
    "LABELS LEAK": "labels",
    "NO LEAK FOUND": "none",
    "NOT MEASURED": "labels",
}


def render_audit_page(page: Mapping[str, Any], out: Path) -> Path:
    """Write the audit's HTML page (`report/audit.py` assembles `page`).

    Args:
        page: title, level, summary, lines, description, the table's header and rows, the
            worst reconstructions (`worst_png` bytes for images, `worst` captions and
            sentences), thresholds, facts and attacks.
        out: the file to write.

    Returns:
        `out`.

    Raises:
        GradleakError: jinja2 is missing or the file cannot be written.
    """
    worst_png = page.get("worst_png")
    context = {k: v for k, v in page.items() if k != "worst_png"}
    return _render(
        "audit.html.j2",
        out,
        worst_picture=None if worst_png is None else _picture(worst_png, rows=2),
        level_class=_LEVEL_CLASS.get(str(page["level"]), "labels"),
        extra_css=_AUDIT_CSS,
        **context,
    )


def render_flower_page(page: Mapping[str, Any], out: Path) -> Path:
    """Write a captured Flower run's summary page (`report/flower.py` assembles `page`).

    Args:
        page: title, description, facts, the PNG of PSNR by round (`plot_png`, or None),
            and per round its rows (each with the summary row, the (file, rows) of its
            picture or None, and the extra columns' values).
        out: the file to write.

    Returns:
        `out`.

    Raises:
        GradleakError: jinja2 is missing or the file cannot be written.
    """
    rounds = [
        {
            "round": r["round"],
            "rows": [
                {**e, "picture": None if e["picture"] is None else _picture_file(*e["picture"])}
                for e in r["rows"]
            ],
        }
        for r in page["rounds"]
    ]
    plot = page.get("plot_png")
    context = {k: v for k, v in page.items() if k != "plot_png"}
    return _render(
        "flower.html.j2",
        out,
        extra_css="",
        plot=None if plot is None else _picture(plot, pixelated=False),
        **{**context, "rounds": rounds},
    )
