"""A minimal breaching-style Inverting Gradients loop, and PSNR vs wall time against gradleak.

The reference loop follows the documented defaults of the `breaching` library's
`invertinggradients` attack (Geiping et al.): cosine similarity of all gradients as one
vector, plus total variation of the zero-padded image (mean over pixels of |dx| + |dy|,
pixels beyond the last row and column taken as 0) weighted 0.2; torch.optim.Adam at step
size 0.1 on the sign of the gradient; images clamped to the valid pixel box after every
step; the step size ÷10 at iterations N//2.667, N//1.6 and N//1.142 (MultiStepLR);
candidates drawn from a standard normal; one trial; the candidate kept is the best so far
by the loss (as that library does, the loss of the iterate before a step decides whether
the iterate after it is kept). It runs one image at a time, as that library does.

gradleak's side attacks the same updates with the `ig` preset and any overrides, the
images stacked in one computation (`reconstruct_many`).

Example (2 CPU cores; a few minutes):
  python benchmarks/ig_breaching_reference.py --images 100-103 --iterations 200 \
      --model resnet20 --out /tmp/ig_reference.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gradleak import attacks
from gradleak.attacks.matching.problem import attacker_model
from gradleak.core.update import SharedUpdate
from gradleak.metrics import psnr
from gradleak.scenario import RunConfig
from gradleak.scenario.case import Case, ServerView
from gradleak.scenario.run import attacked_view, plan_run

CIFAR_ROOT = Path("/work/shared/data/cifar-10-batches-py")
IMAGENET_ROOT = Path("/work/shared/data/imagenet-val")
BREACHING_TV = 0.2


def parse_range(text: str) -> list[int]:
    """'100-103' → [100, 101, 102, 103]; '5' → [5]; '1,4,7' → [1, 4, 7]."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


@dataclasses.dataclass
class Target:
    """One attacked image: its case, its shared update and what the attacker is given."""

    index: int
    case: Case
    update: SharedUpdate
    view: ServerView

    @property
    def truth01(self) -> torch.Tensor:
        return self.view.decode(self.case.client.batch.images)


def load_target(
    model: str, index: int, dataset: str = "cifar10", image_size: int | None = None
) -> Target:
    """Simulate one FedSGD client holding one image; the model in eval mode, untrained."""
    root = CIFAR_ROOT if dataset == "cifar10" else IMAGENET_ROOT
    config = RunConfig(
        attack="ig",
        model=model,
        dataset=dataset,
        data_root=root,
        indices=(index,),
        model_mode="eval",
        progress=False,
        image_size=image_size,
        device="cpu",
        **({"num_classes": 1000} if dataset == "folder" else {}),
    )
    case, update, view = attacked_view(plan_run(config))
    return Target(index, case, update, view)


def padded_tv(x: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of |dx| + |dy| of the zero-padded image (right and bottom)."""
    dx = torch.nn.functional.pad(x, (0, 1)).diff(dim=-1)
    dy = torch.nn.functional.pad(x, (0, 0, 0, 1)).diff(dim=-2)
    return (dx.abs() + dy.abs()).mean()


def breaching_ig(
    target: Target, iterations: int, *, seed: int = 0, tv: float = BREACHING_TV
) -> dict[str, Any]:
    """The reference loop on one image; returns its PSNR, seconds and the kept iterate."""
    knowledge = target.view.knowledge
    model = attacker_model(target.view.model, knowledge.model_mode)
    params = [p for _, p in model.named_parameters()]
    shared = [target.update.tensors[name] for name, _ in model.named_parameters()]
    shared_norm = torch.sqrt(sum((t * t).sum() for t in shared))
    labels = target.case.client.batch.labels  # granted
    mean = torch.tensor(knowledge.mean).view(1, -1, 1, 1)
    std = torch.tensor(knowledge.std).view(1, -1, 1, 1)
    low, high = -mean / std, (1 - mean) / std
    generator = torch.Generator().manual_seed(seed)
    shape = (len(labels), *knowledge.data_shape)
    candidate = torch.randn(shape, generator=generator).requires_grad_(True)
    best = candidate.detach().clone()
    best_value = torch.tensor(float("inf"))
    optimizer = torch.optim.Adam([candidate], lr=0.1)
    milestones = [iterations // 2.667, iterations // 1.6, iterations // 1.142]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(iterations):
        optimizer.zero_grad()
        task = loss_fn(model(candidate), labels)
        grads = torch.autograd.grad(task, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, shared, strict=True))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        objective = 1 - dot / (norm * shared_norm) + tv * padded_tv(candidate)
        objective.backward(inputs=[candidate])
        candidate.grad.sign_()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            candidate.data = torch.max(torch.min(candidate, high), low)
            if objective < best_value:
                best_value = objective.detach()
                best = candidate.detach().clone()
        if not torch.isfinite(objective):
            break
    seconds = time.perf_counter() - start
    value = float(psnr(target.view.decode(best), target.truth01).mean())
    return {"psnr": value, "seconds": seconds, "iterations": iterations}


def gradleak_ig(
    targets: Sequence[Target], overrides: dict[str, Any], *, seed: int = 0
) -> list[dict[str, Any]]:
    """The `ig` preset with `overrides` on all targets at once (stacked); per-image rows.

    `seconds` is the stack's time divided by the number of images (each image's share).
    """
    attack = attacks.get("ig").with_options(overrides)
    view = targets[0].view
    start = time.perf_counter()
    results = attack.reconstruct_many(
        [t.update for t in targets], view.model, view.knowledge, seed=seed, progress=False
    )
    seconds = (time.perf_counter() - start) / len(targets)
    rows = []
    for target, rec in zip(targets, results, strict=True):
        value = float(psnr(target.view.decode(rec.images), target.truth01).mean())
        right = bool(torch.equal(rec.labels.cpu(), target.case.client.batch.labels.cpu()))
        rows.append({"index": target.index, "psnr": value, "seconds": seconds, "label": right})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", default="100-103", help="CIFAR-10 test indices, e.g. 100-103")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    targets = [load_target(args.model, i) for i in parse_range(args.images)]
    settings = {
        "gradleak ig preset": {"iterations": args.iterations, "restarts": 1},
        "gradleak ig, breaching's TV": {
            "iterations": args.iterations,
            "restarts": 1,
            "tv_weight": BREACHING_TV,
            "tv_form": "padded",
            "keep_best": True,
        },
    }
    rows: list[dict[str, Any]] = []
    for target in targets:
        row = breaching_ig(target, args.iterations)
        rows.append({"method": "breaching-style", "index": target.index, **row})
        print(rows[-1], flush=True)
    for name, overrides in settings.items():
        for row in gradleak_ig(targets, overrides):
            rows.append({"method": name, **row})
            print(rows[-1], flush=True)
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        print(
            f"{method}: median PSNR {statistics.median(r['psnr'] for r in mine):.2f} dB, "
            f"median seconds/image {statistics.median(r['seconds'] for r in mine):.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
