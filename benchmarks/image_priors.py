"""Image priors on ResNet-20 / CIFAR-10: TV, batch-norm statistics, group consistency,
generative priors (GGL, GIAS) and learned inversion, side by side.

Studies (each row: one attacked batch of consecutive CIFAR-10 test images, one method):

  main       untrained and trained `resnet20` (trained with `gradleak train` on test images
             100-499), batch 1 (images 0..--images-1, default 2) and batch 4 (images 0-3,
             or consecutive batches of --images), FedSGD, clients in train mode. Methods:
             IG+TV, IG+BN (server running statistics), IG+BN (client batch statistics
             read from shared buffers), IG+BN+group consistency (4 seeds), GGL and GIAS with
             a VAE trained on CIFAR-10 100-599, the learned inverter (trained for that model
             state and batch size on 100-599) and the inverter's output as IG's start
             (IG's step size 0.1, and 0.01).
  ood        the same model states and batches, with the VAE and the inverter trained on
             LFW faces (60 photos, 32×32) instead: GGL, GIAS, learned, learned→IG (both
             step sizes).
  defenses   IG+TV, GGL and GIAS (CIFAR VAE) on the trained model, batch 1, under Gaussian
             noise (σ² 1e-4) and 90% pruning.

Labels: batch 1 reads the label analytically (iDLG); batch 4 grants the labels, so every
column compares image priors on equal terms. Every optimisation method runs --iterations
Adam steps (default 300) with --restarts trials (default 1; group consistency: 4 seeds).

Trainings (the ResNet-20 state, the VAEs, the inverters) go to bench/priors/ and are
reused when there; rows are appended to bench/priors/rows.jsonl as they finish (a re-run
skips the rows already there) and every run keeps its folder (grid.png, prior_nearest.png)
under bench/priors/runs/. Run from the repository root, e.g. two shards side by side:
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/image_priors.py --train
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/image_priors.py --shard 0/2 &
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/image_priors.py --shard 1/2
  .venv/bin/python benchmarks/image_priors.py --tables
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradleak.cli import app as cli
from gradleak.core.errors import GradleakError
from gradleak.scenario.config import RunConfig
from gradleak.scenario.run import run_attack

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "priors"
DATA = "../shared/data"
LFW = "../shared/data/lfw"
STATES = ("untrained", "trained")
INVERTER_UPDATES = 1500  # training pairs per inverter (the command's default is 3,000)
BATCHES = (1, 4)
SCORES = ("psnr", "ssim")

# The ResNet-20 state: the recipe of docs/RESULTS.md's trained-state study.
TRAIN_RESNET = [
    "train", "--model", "resnet20", "--dataset", "cifar10", "--data-root", DATA,
    "--train-range", "100-499", "--test-range", "500-599", "--epochs", "30",
    "--batch-size", "32", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "5e-4",
]  # fmt: skip
PRIOR_DATA = {
    "cifar": ["--dataset", "cifar10", "--data-root", DATA, "--range", "100-599"],
    "lfw": ["--dataset", "folder", "--data-root", LFW, "--image-size", "32"],
}
# The inverters serve the CIFAR-10 model whatever their auxiliary images.
VICTIM = {"cifar": [], "lfw": ["--victim-dataset", "cifar10"]}


def _paths(out: Path) -> dict[str, Path]:
    return {
        "resnet": out / "resnet20-cifar10-400.pt",
        **{f"vae-{d}": out / f"vae-{d}.pt" for d in PRIOR_DATA},
    }


def inverter_path(out: Path, data: str, state: str, batch: int) -> Path:
    return out / f"inverter-{data}-{state}-b{batch}.pt"


def _cli(argv: list[str]) -> None:
    print("gradleak " + " ".join(argv), flush=True)
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"gradleak {argv[0]} exited with {code}")


def train_all(out: Path, threads: int) -> None:
    """Every training the studies need, skipping the ones already there."""
    out.mkdir(parents=True, exist_ok=True)
    paths = _paths(out)
    threading = ["--threads", str(threads), "--no-progress"]
    if not paths["resnet"].exists():
        _cli([*TRAIN_RESNET, "--out", str(paths["resnet"]), *threading])
    for data, flags in PRIOR_DATA.items():
        if not paths[f"vae-{data}"].exists():
            _cli(["train-prior", "--kind", "vae", *flags, "--out", str(paths[f"vae-{data}"])])
    for data, flags in PRIOR_DATA.items():
        for state in STATES:
            for batch in BATCHES:
                path = inverter_path(out, data, state, batch)
                if path.exists():
                    continue
                model = ["--model", "resnet20"]
                if state == "trained":
                    model += ["--checkpoint", str(paths["resnet"])]
                _cli(
                    ["train-inverter", *model, *flags, *VICTIM[data], "--batch-size", str(batch)]
                    + ["--updates", str(INVERTER_UPDATES), "--out", str(path), *threading]
                )


def methods(out: Path, data: str, state: str, batch: int, iterations: int, restarts: int):
    """Method name → (attack, attack options, run settings) for one setting."""
    vae = str(_paths(out)[f"vae-{data}"])
    inverter = str(inverter_path(out, data, state, batch))
    ig = {"iterations": iterations, "restarts": restarts}
    return {
        "ig+tv": ("ig", ig, {}),
        "ig+bn-server": ("ig", {**ig, "priors": ["tv", "bn-server"]}, {}),
        "ig+bn-client": ("ig", {**ig, "priors": ["tv", "bn-client"]}, {"share_buffers": True}),
        "ig+bn+gc": (
            "ig",
            {**ig, "priors": ["tv", "bn-client"], "restarts": 4, "group_consistency": 4},
            {"share_buffers": True},
        ),
        "ggl": ("ig", {**ig, "priors": [f"gan:{vae}"]}, {}),
        "gias": ("ig", {**ig, "priors": [f"gias:{vae}"]}, {}),
        "learned": (f"learned:{inverter}", {}, {}),
        "learned→ig": ("ig", {**ig, "init": f"learned:{inverter}"}, {}),
        # IG's signed steps of 0.1 leave the seed within a few steps; a tenth of it stays near.
        "learned→ig@0.01": ("ig", {**ig, "init": f"learned:{inverter}", "lr": 0.01}, {}),
    }


MAIN = (
    "ig+tv", "ig+bn-server", "ig+bn-client", "ig+bn+gc", "ggl", "gias",
    "learned", "learned→ig", "learned→ig@0.01",
)  # fmt: skip
OOD = ("ggl", "gias", "learned", "learned→ig", "learned→ig@0.01")
DEFENDED = ("ig+tv", "ggl", "gias")
DEFENSES = {"noise 1e-4": ("noise:gaussian:1e-4",), "prune 90%": ("prune:0.9",)}


def cases(study: str, images: int, iterations: int, restarts: int) -> Iterator[dict[str, Any]]:
    """The rows of one study, each a JSON-able dict of its settings."""
    budget = {"iterations": iterations, "restarts": restarts}
    if study == "defenses":
        for defense in DEFENSES:
            for method in DEFENDED:
                for start in range(images):
                    yield {
                        "study": study, "data": "cifar", "state": "trained", "batch": 1,
                        "method": method, "start": start, "defense": defense, **budget,
                    }  # fmt: skip
        return
    chosen = MAIN if study == "main" else OOD
    data = "cifar" if study == "main" else "lfw"
    for state in STATES:
        for batch in BATCHES:
            for method in chosen:
                for start in range(0, max(images, batch) - batch + 1, batch):
                    yield {
                        "study": study, "data": data, "state": state, "batch": batch,
                        "method": method, "start": start, "defense": "none", **budget,
                    }  # fmt: skip


def _key(case: dict[str, Any]) -> str:
    return json.dumps(case, sort_keys=True, ensure_ascii=False)


def _folder(out: Path, case: dict[str, Any]) -> Path:
    name = "-".join(str(case[k]) for k in ("study", "data", "state", "batch", "method", "start"))
    name += "" if case["defense"] == "none" else "-" + case["defense"].replace(" ", "")
    return out / "runs" / name.replace("→", "-to-").replace("+", "-").replace("@", "-lr")


def run_case(case: dict[str, Any], out: Path) -> dict[str, Any]:
    """One attacked batch: its scores, seconds, and the PSNR to the prior's memory."""
    attack, options, settings = methods(
        out, case["data"], case["state"], case["batch"], case["iterations"], case["restarts"]
    )[case["method"]]
    if case["state"] == "trained":
        settings = {**settings, "checkpoint": _paths(out)["resnet"]}
    config = RunConfig(
        attack=attack,
        attack_options=options,
        model="resnet20",
        dataset="cifar10",
        data_root=Path(DATA),
        batch_size=case["batch"],
        indices=(case["start"],),
        labels_known=case["batch"] > 1,
        defenses=DEFENSES.get(case["defense"], ()),
        out=_folder(out, case),
        progress=False,
        **settings,
    ).validate()
    started = time.perf_counter()
    try:
        metrics = run_attack(config, overwrite=True).metrics
    except GradleakError as exc:
        return {**case, "psnr": None, "ssim": None, "seconds": 0.0, "status": f"refused: {exc}"}
    nearest = metrics.get("prior_nearest") or {}
    return {
        **case,
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "seconds": metrics["seconds"],
        "wall_seconds": time.perf_counter() - started,
        "psnr_to_nearest": nearest.get("psnr_to_nearest"),
        "status": metrics["status"],
    }


def tables(rows: list[dict[str, Any]]) -> str:
    """One markdown table per study: mean PSNR, SSIM and seconds per image by setting."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        setting = (row["study"], row["data"], row["state"], row["batch"], row["defense"])
        groups[(*setting, row["method"])].append(row)
    head = "| study | prior data | model | B | defense | method | images | PSNR | SSIM | "
    head += "PSNR to prior's nearest | s / image |"
    lines = [head, "|" + "---|" * 11]
    order = {m: i for i, m in enumerate(MAIN)}
    for key in sorted(groups, key=lambda k: (*k[:5], order.get(k[5], 99))):
        items = groups[key]
        scored = [r for r in items if r["psnr"] is not None]
        if not scored:
            lines.append("| " + " | ".join(map(str, key)) + f" | 0 | {items[0]['status']} |")
            continue
        psnr = statistics.fmean(r["psnr"] for r in scored)
        ssim = statistics.fmean(r["ssim"] for r in scored)
        near = [r["psnr_to_nearest"] for r in scored if r.get("psnr_to_nearest") is not None]
        near_text = f"{statistics.fmean(near):.2f}" if near else "–"
        per_image = statistics.fmean(r["seconds"] / r["batch"] for r in scored)
        count = sum(r["batch"] for r in scored)
        cells = [*map(str, key), str(count), f"{psnr:.2f}", f"{ssim:.3f}", near_text]
        lines.append("| " + " | ".join([*cells, f"{per_image:.1f}"]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=("main", "ood", "defenses"), action="append")
    parser.add_argument("--method", action="append", help="only these methods")
    parser.add_argument("--batch", type=int, action="append", help="only these batch sizes")
    parser.add_argument("--images", type=int, default=2, help="batch 1: test images 0..N-1")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th row from I")
    parser.add_argument("--train", action="store_true", help="only run the trainings")
    parser.add_argument("--no-train", action="store_true", help="skip the trainings")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables", action="store_true", help="only print the tables")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.train:
        train_all(args.out, args.threads)
        return 0
    path = args.out / "rows.jsonl"
    read = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    rows = [json.loads(line) for line in read]
    if not args.tables:
        if not args.no_train:
            train_all(args.out, args.threads)
        index, count = (int(v) for v in args.shard.split("/"))
        done = {_key({k: r[k] for k in _CASE_KEYS}) for r in rows}
        todo = [
            case
            for study in args.study or ["main", "ood", "defenses"]
            for case in cases(study, args.images, args.iterations, args.restarts)
            if (not args.method or case["method"] in args.method)
            and (not args.batch or case["batch"] in args.batch)
            and _key(case) not in done
        ]
        for case in todo[index::count]:
            row = run_case(case, args.out)
            rows.append(row)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(
                f"{case['study']} {case['data']} {case['state']} B={case['batch']} "
                f"{case['method']} {case['defense']} @{case['start']}: PSNR {row['psnr']} "
                f"{row['seconds']:.1f} s {row['status']}",
                flush=True,
            )
    print(tables(rows))
    return 0


_CASE_KEYS = (
    "study", "data", "state", "batch", "method", "start", "defense", "iterations", "restarts"
)  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
