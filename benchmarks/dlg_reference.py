"""DLG as its paper runs it vs gradleak's DLG: PSNR, labels, time to 30 and 40 dB, per image.

The reference is a minimal DLG loop written from the paper's settings (Zhu et al. 2019):
torch.optim.LBFGS with lr 1, max_iter 20 and no line search, 300 outer steps, the dummy
image and dummy soft label (logits, matched through their softmax) drawn from U(−0.5, 0.5)
and optimised together to minimise the squared L2 distance between their gradient and the
client's. gradleak's side is the `dlg` preset as a user runs it (`reconstruct`, its
up-front checks included). Both attack the same LeNet (gradleak's `lenet`: DLG's network
with sigmoids and U(−0.5, 0.5) weights) and the same FedSGD update of one test image, in
the same normalised space; the images alternate (reference first on even images).

PSNR against the truth is taken after every outer step in both, outside the timed part
(gradleak's observer time is subtracted), so "seconds to 30/40 dB" are optimisation time
only. The reference's PSNR is its final iterate's (the paper's loop keeps no best iterate:
a run that diverged to NaN ends at NaN); gradleak's is its returned reconstruction's.

Example (2 CPU cores, about 30 minutes for 20 images):
  python benchmarks/dlg_reference.py --images 0-19 --out /tmp/dlg_reference
  python benchmarks/dlg_reference.py --images 0-2 --out /tmp/dlg_smoke   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from perf_report import machine, markdown_table
from selection import SHARED_DATA

from gradleak import attacks
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

THRESHOLDS = (30.0, 40.0)
STEPS = 300  # the paper's outer steps


def parse_images(text: str) -> list[int]:
    """'0-19' or '0,3,5' or '4'."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def _psnr(case: Any, images: torch.Tensor) -> float:
    server, client = case
    recon = server.decode(images.detach())
    if not torch.isfinite(recon).all():
        return math.nan
    return server.modality.progress(recon, server.decode(client.batch.images))[1]["psnr"]


def _first_reaching(trace: list[tuple[float, float]], level: float) -> float | None:
    return next((seconds for seconds, psnr in trace if psnr >= level), None)


def reference_dlg(case: Any, update: Any, seed: int) -> dict:
    """The paper's DLG loop on `update`; PSNR after every outer step, untimed."""
    server, client = case
    model = copy.deepcopy(server.model)  # its gradients accumulate here, not on the server's
    params = [p for _, p in model.named_parameters()]
    names = [n for n, _ in model.named_parameters()]
    target = [update.tensors[n].detach() for n in names]
    g = torch.Generator().manual_seed(seed)
    shape = client.batch.images.shape
    dummy = (torch.rand(shape, generator=g) - 0.5).requires_grad_(True)
    classes = server.knowledge.num_classes
    dummy_label = (torch.rand(shape[0], classes, generator=g) - 0.5).requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy, dummy_label], lr=1, max_iter=20)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = model(dummy)
        onehot = torch.softmax(dummy_label, dim=-1)
        loss = torch.mean(torch.sum(-onehot * torch.log_softmax(logits, dim=-1), dim=-1))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        distance = sum(((a - b) ** 2).sum() for a, b in zip(grads, target, strict=True))
        distance.backward()
        return distance

    trace: list[tuple[float, float]] = []
    spent = 0.0
    for _ in range(STEPS):
        start = time.perf_counter()
        optimizer.step(closure)
        spent += time.perf_counter() - start
        trace.append((spent, _psnr(case, dummy)))  # untimed
    label = int(dummy_label.detach().argmax(dim=-1)[0])
    return {
        "psnr": trace[-1][1],
        "label_ok": label == int(client.batch.labels[0]),
        "seconds": spent,
        "trace": trace,
    }


def gradleak_dlg(case: Any, update: Any, seed: int, options: dict[str, Any] | None = None) -> dict:
    """gradleak's `dlg` preset on `update` (with `options`); its observer's time is not
    counted."""
    server, client = case
    trace: list[tuple[float, float]] = []
    overhead = 0.0
    start = 0.0

    def observe(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> dict:
        nonlocal overhead
        entered = time.perf_counter()
        psnr = _psnr(case, images[0])
        trace.append((entered - start - overhead, psnr))
        overhead += time.perf_counter() - entered
        return {}

    attack = attacks.get("dlg").with_options(options or {})
    start = time.perf_counter()
    result = attack.reconstruct(
        update, server.model, server.knowledge, seed=seed, observer=observe, progress=False
    )
    seconds = time.perf_counter() - start - overhead
    label = int(result.labels[0]) if result.labels is not None else -1
    return {
        "psnr": _psnr(case, result.images),
        "label_ok": label == int(client.batch.labels[0]),
        "seconds": seconds,
        "trace": trace,
        "status": result.status.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="0-19", help="CIFAR test images, e.g. 0-19")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.md, runs.json")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--stacked",
        action="store_true",
        help="also attack all the images as one stack (reconstruct_many) after the "
        "image-by-image runs, and report its seconds per image and PSNR",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, runs, cases = [], [], []
    for n, index in enumerate(parse_images(args.images)):
        config = RunConfig(
            model="lenet",
            dataset=args.dataset,
            data_root=SHARED_DATA,
            indices=(index,),
            progress=False,
        )
        case = build_case(config)
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        cases.append((case, update))
        order = [("reference", reference_dlg), ("gradleak", gradleak_dlg)]
        if n % 2:  # interleaved: neither side always runs on a warmer machine
            order.reverse()
        done = {name: run(case, update, index) for name, run in order}
        run = {"image": index}
        for name, result in done.items():
            reach = {f"to_{int(t)}db": _first_reaching(result["trace"], t) for t in THRESHOLDS}
            run[name] = {k: v for k, v in result.items() if k != "trace"} | reach
            run[name]["trace"] = result["trace"]
        runs.append(run)
        ref, ours = run["reference"], run["gradleak"]
        rows.append(
            [
                index,
                _db(ref["psnr"]),
                _db(ours["psnr"]),
                f"{ref['label_ok']:d}/{ours['label_ok']:d}",
                _s(ref["to_30db"]),
                _s(ours["to_30db"]),
                _s(ref["to_40db"]),
                _s(ours["to_40db"]),
                f"{ref['seconds']:.1f}",
                f"{ours['seconds']:.1f}",
            ]
        )
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    summary = _summary(runs)
    if args.stacked:
        summary.update(_stacked(cases, runs))
    header = [
        "image",
        "PSNR ref",
        "PSNR gradleak",
        "label ok ref/gl",
        "s→30 dB ref",
        "s→30 dB gl",
        "s→40 dB ref",
        "s→40 dB gl",
        "total s ref",
        "total s gl",
    ]
    table = markdown_table(header, rows)
    text = f"{machine()}\n\n{table}\n\n" + "\n".join(f"- {k}: {v}" for k, v in summary.items())
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "runs.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    print(text)


def _stacked(cases: list[tuple[Any, Any]], runs: list[dict]) -> dict[str, Any]:
    """gradleak's DLG on every image's update as one stack of trials (`reconstruct_many`:
    one L-BFGS trial per image, each with its own history and line search)."""
    server = cases[0][0].server  # one model and threat model for all the images
    attack = attacks.get("dlg")
    start = time.perf_counter()
    results = attack.reconstruct_many(
        [update for _, update in cases],
        server.model,
        server.knowledge,
        seed=[r["image"] for r in runs],  # each image seeded as in its own run
        progress=False,
    )
    seconds = time.perf_counter() - start
    psnrs = [_psnr(case, r.images) for (case, _), r in zip(cases, results, strict=True)]
    reference = sum(r["reference"]["seconds"] for r in runs)
    return {
        "stacked gradleak s per image": round(seconds / len(cases), 2),
        "reference s per image": round(reference / len(runs), 2),
        "stacked gradleak / reference, s per image": round(seconds / reference, 3),
        "stacked gradleak images >= 30 dB": sum(p >= 30 for p in psnrs if math.isfinite(p)),
        "stacked gradleak median PSNR": _db(statistics.median(_finite(psnrs) or [math.nan])),
    }


def _summary(runs: list[dict]) -> dict[str, Any]:
    ratios = [
        r["gradleak"]["to_40db"] / r["reference"]["to_40db"]
        for r in runs
        if r["gradleak"]["to_40db"] is not None and r["reference"]["to_40db"] is not None
    ]
    out: dict[str, Any] = {"images": len(runs)}
    for side in ("reference", "gradleak"):
        psnrs = [r[side]["psnr"] for r in runs]
        out[f"{side} images >= 30 dB"] = sum(p >= 30 for p in psnrs if math.isfinite(p))
        out[f"{side} median PSNR"] = _db(statistics.median(_finite(psnrs) or [math.nan]))
        out[f"{side} label accuracy"] = sum(r[side]["label_ok"] for r in runs) / len(runs)
        # An image that never reached 40 dB counts as never (infinitely slow), so a side
        # that fails on hard images is not credited with the easy ones' times only.
        reached = [r[side]["to_40db"] for r in runs]
        out[f"{side} median s to 40 dB"] = _s(_median_never_last(reached))
        out[f"{side} total s"] = round(sum(r[side]["seconds"] for r in runs), 1)
    out["median (gradleak s to 40 dB / reference s to 40 dB), images both reached"] = (
        round(statistics.median(ratios), 3) if ratios else None
    )
    return out


def _median_never_last(values: list[float | None]) -> float | None:
    """The median with None (never reached) above every time; None when that is the median."""
    ranked = sorted(values, key=lambda v: math.inf if v is None else v)
    if not ranked:
        return None
    middle = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]
    if any(v is None for v in middle):
        return None
    return statistics.mean(middle)


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _db(value: float) -> str:
    return "NaN" if not math.isfinite(value) else f"{value:.1f}"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
