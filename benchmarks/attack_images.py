"""Run one attack preset on many dataset images and summarise PSNR, steps and labels.

Examples (2 CPU cores):
  python benchmarks/attack_images.py --attack dlg --dataset cifar100 --count 100
  python benchmarks/attack_images.py --attack dlg --dataset cifar100 --count 100 \
      --option line_search=none
  python benchmarks/attack_images.py --attack ig --model resnet20-4 --dataset cifar10 \
      --count 10 --option iterations=500 --option restarts=1 --labels-known --model-mode eval
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import torch
import yaml
from selection import add_selection_arguments

from gradleak.scenario import RunConfig
from gradleak.scenario.run import attack_case


def attack_one(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    config = RunConfig(
        attack=job["attack"],
        model=job["model"],
        dataset=job["dataset"],
        data_root=Path(job["data_root"]),
        indices=(job["index"],),
        seed=job["seed"],
        labels_known=job["labels_known"],
        model_mode=job["model_mode"],
        attack_options=job["options"],
        progress=False,
    )
    outcome = attack_case(config)
    rec, ev = outcome.reconstruction, outcome.evaluation
    threshold = job["threshold"]
    reached = [r["iteration"] for r in rec.history if (r.get("psnr") or 0) >= threshold]
    return {
        "index": job["index"],
        "psnr": ev.psnr,
        "ssim": ev.ssim,
        "label_correct": ev.label_accuracy == 1.0,
        "iterations": rec.iterations,
        "loss_evaluations": rec.loss_evaluations,
        "iterations_to_threshold": min(reached) if reached else None,
        "seconds": rec.seconds,
        "loss": rec.loss,
    }


def summarise(rows: list[dict], threshold: float) -> dict:
    psnrs = [r["psnr"] for r in rows]
    reached = [
        r["iterations_to_threshold"] for r in rows if r["iterations_to_threshold"] is not None
    ]
    return {
        "images": len(rows),
        "median_psnr": statistics.median(psnrs),
        "mean_psnr": statistics.fmean(psnrs),
        "worst_psnr": min(psnrs),
        "best_psnr": max(psnrs),
        f"fraction_psnr_ge_{threshold:g}": sum(p >= threshold for p in psnrs) / len(psnrs),
        "labels_correct": sum(r["label_correct"] for r in rows),
        "median_iterations": statistics.median(r["iterations"] for r in rows),
        "median_iterations_to_threshold": statistics.median(reached) if reached else None,
        "max_iterations_to_threshold": max(reached) if reached else None,
        "median_seconds_per_image": statistics.median(r["seconds"] for r in rows),
        "total_attack_seconds": sum(r["seconds"] for r in rows),
    }


def parse_option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, yaml.safe_load(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attack", default="dlg")
    add_selection_arguments(p)
    p.add_argument("--labels-known", action="store_true")
    p.add_argument("--model-mode", choices=("train", "eval"), default="train")
    p.add_argument("--option", action="append", default=[], type=parse_option)
    p.add_argument("--threshold", type=float, default=35.0, help="PSNR that counts as recovered")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    threads = max(1, torch.get_num_threads() // args.workers)
    jobs = [
        {
            "attack": args.attack,
            "model": args.model,
            "dataset": args.dataset,
            "data_root": str(args.data_root),
            "index": i,
            "seed": args.seed,
            "labels_known": args.labels_known,
            "model_mode": args.model_mode,
            "options": dict(args.option),
            "threshold": args.threshold,
            "threads": threads,
        }
        for i in range(args.start, args.start + args.count)
    ]
    out = args.out or Path("benchmarks/out") / f"{args.attack}-{args.model}-{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap(attack_one, jobs):
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = summarise(rows, args.threshold)
    summary["wall_seconds"] = time.perf_counter() - start
    summary["workers"] = args.workers
    summary["command_options"] = dict(args.option)
    out.write_text(json.dumps({"summary": summary, "images": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
