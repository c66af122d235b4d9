"""Attacks on trained against untrained states of the same model, PSNR side by side.

For each study: train the model with `gradleak train` (images the attacks never see), run
the study's sweep spec on the untrained (seed-initialised) model and once per saved trained
state (the same spec with `checkpoint:` in `base`), then print one markdown table.
Everything goes under bench/trained-states/ (the checkpoints, each state's spec and sweep).
A training whose settings and checkpoints are already there is not run again, and the
sweeps skip finished cells, so a re-run only does what is missing.

Run from the repository root (one core per attack):
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trained_states.py
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trained_states.py --study lenet-mnist
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gradleak.cli import app as cli
from gradleak.training.trainer import epoch_checkpoint_path, history_path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "benchmarks" / "sweeps"


@dataclass(frozen=True)
class Training:
    """One `gradleak train` run: its checkpoint name and flags."""

    name: str
    flags: dict[str, Any]


@dataclass(frozen=True)
class Study:
    """A sweep spec attacked untrained and in the `states` of a training (None: final)."""

    spec: Path
    training: Training
    states: tuple[int | None, ...]
    in_all: bool = True  # part of the default run


LENET_MNIST = Training(
    "lenet-mnist",
    {
        "model": "lenet",
        "dataset": "mnist",
        "train_range": "100-8999",
        "test_range": "9000-9999",
        "epochs": 5,
        "batch_size": 32,
        "lr": 0.1,
        "save_epochs": "1",
    },
)
# The shared CIFAR-10 test split holds images 0-599: 100-499 train, 500-599 are held out.
RESNET20_CIFAR10 = Training(
    "resnet20-cifar10-400",
    {
        "model": "resnet20",
        "dataset": "cifar10",
        "train_range": "100-499",
        "test_range": "500-599",
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "save_epochs": "10",
    },
)
STUDIES = {
    "lenet-mnist": Study(SWEEPS / "trained-vs-untrained-lenet-mnist.yaml", LENET_MNIST, (1, None)),
    # Eval mode and known labels, as in the reference implementation and docs/RESULTS.md.
    "resnet20-cifar10": Study(
        SWEEPS / "trained-vs-untrained-resnet20-cifar10.yaml", RESNET20_CIFAR10, (None,)
    ),
    # The client in train mode (gradleak's default): batch-norm on one image's statistics.
    "resnet20-cifar10-train-mode": Study(
        SWEEPS / "trained-vs-untrained-resnet20-cifar10-train-mode.yaml",
        RESNET20_CIFAR10,
        (10, None),
        in_all=False,
    ),
}


def gradleak(argv: list[str]) -> int:
    """`gradleak ARGV` in this process."""
    return cli.main(argv)


def _train_argv(training: Training, data_root: Path, out: Path, progress: bool) -> list[str]:
    argv = ["train", "--data-root", str(data_root), "--out", str(out), "--threads", "1"]
    for key, value in training.flags.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv + ([] if progress else ["--no-progress"])


def _already_trained(
    training: Training, states: tuple[int | None, ...], data_root: Path, out: Path
) -> bool:
    """True when `out`'s history records the same settings and every state exists."""
    path = history_path(out)
    if not path.is_file():
        return False
    saved = json.loads(path.read_text())
    config = saved["config"]
    wanted = {k: v for k, v in training.flags.items() if k not in ("save_epochs",)}
    for key, value in wanted.items():
        recorded = config.get(key)
        if isinstance(recorded, list):
            recorded = "-".join(str(v) for v in recorded)
        if str(recorded) != str(value):
            return False
    paths = [_state_path(out, e) for e in states]
    return (
        not saved["interrupted"]
        and Path(config["data_root"]) == data_root
        and all(p.is_file() for p in paths)
    )


def _state_path(out: Path, epoch: int | None) -> Path:
    return out if epoch is None else epoch_checkpoint_path(out, epoch)


def _state_label(out: Path, epoch: int | None) -> tuple[str, dict[str, Any]]:
    """A description of the state (images, epoch, held-out accuracy) and its history record."""
    history = json.loads(history_path(out).read_text())
    record = history["epochs"][(epoch or len(history["epochs"])) - 1]
    first, last = history["config"]["train_range"]
    label = (
        f"trained on {history['train_images']} images ({first}–{last}), epoch "
        f"{record['epoch']} (held-out acc. {record['heldout_accuracy']:.3f})"
    )
    return label, record


def _sweep(
    spec_path: Path, name: str, checkpoint: Path | None, data_root: Path, out: Path, progress: bool
) -> Path:
    """Run the spec (with `checkpoint` in its base) into out/sweeps/NAME; its directory."""
    spec = yaml.safe_load(spec_path.read_text())
    spec["name"] = name
    spec["base"] = {**spec.get("base", {}), "data_root": str(data_root)}
    if checkpoint is not None:
        spec["base"]["checkpoint"] = str(checkpoint)
    derived = out / "specs" / f"{name}.yaml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep_dir = out / "sweeps" / name
    argv = ["sweep", str(derived), "--out", str(sweep_dir), "--workers", "1", "--threads", "1"]
    code = gradleak(argv + ([] if progress else ["--no-progress"]))
    if code != 0:
        raise SystemExit(code)
    return sweep_dir


def _rows(sweep_dir: Path, success: float) -> dict[str, dict[str, Any]]:
    """Per attack: PSNR (mean, median), mean SSIM, success rate, label accuracy, images, time."""
    with (sweep_dir / "results.csv").open() as f:
        cells = list(csv.DictReader(f))
    by_attack: dict[str, list[dict[str, str]]] = {}
    for cell in cells:
        by_attack.setdefault(cell["attack"], []).append(cell)
    rows = {}
    for attack, members in by_attack.items():
        psnr = [float(c["psnr"]) for c in members]
        labels = [float(c["label_accuracy"]) for c in members if c["label_accuracy"]]
        rows[attack] = {
            "model": members[0]["model"],
            "mean": statistics.fmean(psnr),
            "median": statistics.median(psnr),
            "ssim": statistics.fmean(float(c["ssim"]) for c in members),
            "success": sum(p >= success for p in psnr) / len(psnr),
            "label_accuracy": statistics.fmean(labels) if labels else None,
            "images": len(members),
            "seconds": sum(float(c["seconds"]) for c in members),
        }
    return rows


def run_study(
    name: str, study: Study, data_root: Path, out: Path, progress: bool
) -> list[dict[str, Any]]:
    """Train, sweep every state, return the table rows of this study."""
    spec = yaml.safe_load(study.spec.read_text())
    success = float(spec.get("success_psnr", 20))
    dataset = spec["base"]["dataset"]
    setting = {
        "mode": spec["base"].get("model_mode", "train"),
        "labels": "known" if spec["base"].get("labels_known") else "recovered",
    }
    states: list[tuple[str, Path | None, str]] = [("untrained (seed 0)", None, f"{name}-untrained")]
    training = study.training
    ckpt = out / "checkpoints" / f"{training.name}.pt"
    if _already_trained(training, study.states, data_root, ckpt):
        print(f"{training.name}: trained states found in {ckpt.parent}, not retrained")
    else:
        start = time.perf_counter()
        code = gradleak(_train_argv(training, data_root, ckpt, progress))
        if code != 0:
            raise SystemExit(code)
        print(f"{training.name}: trained in {time.perf_counter() - start:.0f} s")
    for epoch in study.states:
        label, record = _state_label(ckpt, epoch)
        states.append((label, _state_path(ckpt, epoch), f"{name}-epoch{record['epoch']}"))
    table = []
    for label, checkpoint, tag in states:
        start = time.perf_counter()
        sweep_dir = _sweep(study.spec, tag, checkpoint, data_root, out, progress)
        print(f"{tag}: sweep done in {time.perf_counter() - start:.0f} s")
        for attack, row in _rows(sweep_dir, success).items():
            table.append({**row, "dataset": dataset, "attack": attack, "state": label, **setting})
    return table


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | dataset | attack | client mode | labels | state | mean PSNR (dB) "
        "| median PSNR (dB) | mean SSIM | success (≥ 20 dB) | label acc. | images "
        "| attack time (s) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    # Stable sort: the states keep their order within a setting.
    ordered = sorted(rows, key=lambda r: (r["model"], r["mode"], r["attack"]))
    for r in ordered:
        accuracy = "n/a" if r["label_accuracy"] is None else f"{r['label_accuracy']:.2f}"
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['attack']} | {r['mode']} | {r['labels']} "
            f"| {r['state']} | {r['mean']:.2f} | {r['median']:.2f} | {r['ssim']:.3f} "
            f"| {r['success']:.0%} | {accuracy} | {r['images']} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=[*STUDIES, "all"], default="all")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "trained-states")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args()
    names = [n for n, s in STUDIES.items() if s.in_all] if args.study == "all" else [args.study]
    data_root, out = args.data_root.resolve(), args.out.resolve()
    start = time.perf_counter()
    rows = []
    for name in names:
        rows += run_study(name, STUDIES[name], data_root, out, not args.no_progress)
    table = markdown(rows)
    (out / f"table-{args.study}.md").write_text(table)
    print(
        f"\nall done in {time.perf_counter() - start:.0f} s; table in {out}/table-{args.study}.md"
    )
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
