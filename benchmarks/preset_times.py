"""End-to-end time of each attack preset to reach a fixed PSNR, and its peak memory.

Each preset attacks CIFAR-10 test images 0–9 one after another in its own fresh process,
stopping an image's attack once the evaluation side sees the target PSNR (the attacker
never sees the truth; `stop_psnr` only ends the run). The process's peak resident memory
is read at the end.

Example (2 CPU cores, about 10 minutes):
  python benchmarks/preset_times.py --write-docs
  python benchmarks/preset_times.py --presets ig --model resnet20 --psnr 18 --max-iterations 500
  python benchmarks/preset_times.py --device cuda   # the attacks on a GPU (cpu by default)
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
from pathlib import Path

import torch
from perf_report import machine, markdown_table, peak_rss_bytes, rss_bytes, write_section
from selection import SHARED_DATA

from gradleak import attacks
from gradleak.core.device import DEVICE_SPELLINGS, device_name, resolve_device
from gradleak.core.errors import GradleakError
from gradleak.scenario import RunConfig
from gradleak.scenario.run import attack_case


def run_preset(job: dict) -> dict:
    """All images of one preset in this (fresh) process."""
    torch.set_num_threads(job["threads"])
    rows = []
    base_rss = None
    for index in job["indices"]:
        options = {}
        preset_iterations = attacks.get(job["preset"]).config.iterations
        if job["max_iterations"] and job["max_iterations"] < preset_iterations:
            options["iterations"] = job["max_iterations"]
        config = RunConfig(
            attack=job["preset"],
            model=job["model"],
            dataset="cifar10",
            data_root=Path(job["data_root"]),
            indices=(index,),
            attack_options=options,
            progress=False,
            stop_psnr=job["psnr"],
            device=job["device"],
        )
        if base_rss is None:  # imports and one model in memory, before any attack
            from gradleak.scenario.case import build_case

            build_case(config)
            base_rss = rss_bytes()
        outcome = attack_case(config)
        rec = outcome.reconstruction
        rows.append(
            {
                "index": index,
                "reached": rec.stopped,
                "seconds": rec.seconds,
                "iterations": rec.iterations,
                "psnr": outcome.evaluation.psnr,
            }
        )
        print(job["preset"], rows[-1], flush=True)
    peak = peak_rss_bytes()
    return {"rows": rows, "peak_bytes": peak, "base_bytes": base_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["dlg", "idlg", "ig"])
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--indices", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--psnr", type=float, default=20.0, help="target PSNR in dB")
    parser.add_argument(
        "--max-iterations",
        type=int,
        default=0,
        help="cap each preset's iterations at this (0: the presets' own budgets)",
    )
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--device",
        default="cpu",
        help=f"where the attacks run: {DEVICE_SPELLINGS} (default: cpu)",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/PERFORMANCE.md")
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)  # refused here, before any worker starts
    except GradleakError as error:
        print(f"preset_times.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    context = multiprocessing.get_context("spawn")
    table = []
    for preset in args.presets:
        job = {
            "preset": preset,
            "model": args.model,
            "indices": args.indices,
            "psnr": args.psnr,
            "max_iterations": args.max_iterations,
            "data_root": str(args.data_root),
            "threads": args.threads,
            "device": str(device),
        }
        with context.Pool(1) as pool:
            out = pool.apply(run_preset, (job,))
        rows = out["rows"]
        reached = [r for r in rows if r["reached"]]
        seconds = [r["seconds"] for r in reached]
        table.append(
            [
                preset,
                args.model,
                f"{len(reached)}/{len(rows)}",
                f"{statistics.median(seconds):.1f}" if seconds else "–",
                f"{max(seconds):.1f}" if seconds else "–",
                f"{statistics.median(r['iterations'] for r in reached):.0f}" if reached else "–",
                f"{statistics.median(r['psnr'] for r in rows):.1f}",
                f"{sum(r['seconds'] for r in rows):.0f}",
                f"{out['peak_bytes'] / 2**20:.0f}",
                f"{(out['peak_bytes'] - out['base_bytes']) / 2**20:.0f}",
            ]
        )
        print(table[-1], flush=True)
    header = [
        "preset",
        "model",
        f"reached {args.psnr:g} dB",
        "median s",
        "max s",
        "median its",
        "median final dB",
        "total s",
        "peak RSS MiB",
        "above base MiB",
    ]
    cap = f", iterations capped at {args.max_iterations}" if args.max_iterations else ""
    indices = f"{args.indices[0]}–{args.indices[-1]}"
    command = "python benchmarks/preset_times.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in (("psnr", args.psnr), ("max_iterations", args.max_iterations))
        if v
    )
    where = str(device)
    if device.type != "cpu":
        command += f" --device {device}"
        where = f"{device} ({device_name(device)}); peak RSS is host memory"
    body = (
        f"{markdown_table(header, table)}\n\nCIFAR-10 test images {indices}, batch 1, presets' "
        f"default hyper-parameters{cap}; time is the attack's own (the model and data already "
        f"loaded). Measured on {machine()}; run on {where}. Command: `{command}`."
    )
    print(body)
    if args.write_docs:
        write_section("preset_times", body)


if __name__ == "__main__":
    main()
