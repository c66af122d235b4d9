"""gradleak's IG preset against the breaching-style reference at the reference's wall time.

The reference loop (`ig_breaching_reference.py`: breaching's documented IG defaults, one
image at a time) runs `--reference-iterations` (2,000) on every image and its time per
image is measured. gradleak's `ig` preset (its own defaults) then gets that time per image:
the images are stacked in one computation, timed on a few steps and given the iterations
and restarts that fit (`gradleak.attacks.engine.time_fit`, as `gradleak attack --budget`
plans them), a deadline ending it should the estimate be too generous. Untrained model in
eval mode, one image per client, FedSGD; the label is the analytic one (exact for one
image) and checked.

The evaluation protocol is CIFAR-10 test images 0–99 (`--images 0-99`, one command);
on 2 CPU cores that takes hours, so fewer images may be given.

Example (2 CPU cores, about 3 minutes per image):
  python benchmarks/ig_vs_breaching.py --images 0-9 --model resnet20 --out /tmp/ig_vs.json
  python benchmarks/ig_vs_breaching.py --images 0-9 --reference /tmp/ig_vs.json  # ours again
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from ig_breaching_reference import breaching_ig, load_target, parse_range

from gradleak import attacks
from gradleak.attacks.engine.hooks import deadline_observer
from gradleak.attacks.engine.time_fit import linear_cost, measure_steps, plan_adam
from gradleak.metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", default="0-99", help="CIFAR-10 test indices (0-99: protocol)")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--reference-iterations", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="reuse the reference rows of an earlier --out file (same images and model)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targets = [load_target(args.model, i) for i in parse_range(args.images)]

    reference = []
    if args.reference is not None:
        reference = json.loads(args.reference.read_text())["reference"]
        if [r["index"] for r in reference] != [t.index for t in targets]:
            parser.error(f"{args.reference} holds other images than --images {args.images}")
    for target in targets if not reference else []:
        row = breaching_ig(target, args.reference_iterations)
        reference.append({"index": target.index, **row})
        print("breaching-style", reference[-1], flush=True)
    per_image = statistics.median(r["seconds"] for r in reference)

    attack = attacks.get("ig")
    view = targets[0].view
    updates = [t.update for t in targets]

    def timed(restarts: int):
        def run(iterations: int) -> float:
            quick = attack.with_options({"iterations": iterations, "restarts": restarts})
            began = time.perf_counter()
            quick.reconstruct_many(updates, view.model, view.knowledge, progress=False)
            return time.perf_counter() - began

        return run

    budget = per_image * len(targets)
    start = time.perf_counter()
    one = measure_steps(timed(1))
    cost = linear_cost(one.per_iteration, one.per_iteration, 1)
    plan = plan_adam(
        budget - (time.perf_counter() - start) - one.fixed,
        cost,
        most_iterations=attack.config.iterations,
    )
    fitted = attack.with_options({"iterations": plan.iterations, "restarts": plan.restarts})
    results = fitted.reconstruct_many(
        updates,
        view.model,
        view.knowledge,
        progress=False,
        observer=deadline_observer(time.monotonic() + budget - (time.perf_counter() - start)),
    )
    spent = time.perf_counter() - start
    ours = []
    for target, rec in zip(targets, results, strict=True):
        value = float(psnr(target.view.decode(rec.images), target.truth01).mean())
        right = bool(torch.equal(rec.labels.cpu(), target.case.client.batch.labels.cpu()))
        ours.append({"index": target.index, "psnr": value, "label": right})
        print("gradleak ig", ours[-1], flush=True)
    summary = {
        "model": args.model,
        "images": args.images,
        "reference_iterations": args.reference_iterations,
        "reference_seconds_per_image": per_image,
        "reference_median_psnr": statistics.median(r["psnr"] for r in reference),
        "gradleak_plan": {"iterations": plan.iterations, "restarts": plan.restarts},
        "gradleak_iterations_run": max(r.iterations for r in results),
        "gradleak_seconds_per_image": spent / len(targets),
        "gradleak_median_psnr": statistics.median(r["psnr"] for r in ours),
        "gradleak_labels_right": all(r["label"] for r in ours),
    }
    summary["gain_db"] = summary["gradleak_median_psnr"] - summary["reference_median_psnr"]
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "reference": reference, "ours": ours}))


if __name__ == "__main__":
    main()
