"""Speed of the gradient-matching engine: against a hand-written floor, over trial counts,
and compiled against eager. Tables go to docs/PERFORMANCE.md with --write-docs.

Examples (2 CPU cores, a few minutes each):
  python benchmarks/engine_speed.py floor --write-docs
  python benchmarks/engine_speed.py scaling --write-docs
  python benchmarks/engine_speed.py compile --write-docs
  python benchmarks/engine_speed.py many --write-docs   # independent images stacked
  python benchmarks/engine_speed.py floor --device cuda  # the same on a GPU

`--device` (cpu by default) picks where the timed loops run: each setting is built and
seeded on the CPU, then the model (a copy), the data, the target gradients, the bounds and
the starts are moved there once, before any timing; the device is synchronised before the
clock is read around a timed region. The floor is timed from outside, synchronised; the
engine reports its own loop time, which syncs at each of its ~100 loss checks but not at
the very end, so on a GPU up to 1 % of iterations' queued work may fall outside it.

The floor is the least a Python loop can do for one Inverting Gradients iteration: forward,
parameter gradient with create_graph, cosine distance plus TV, backward to the input,
signed Adam step with the step-size schedule, box projection. gradleak runs the same math
through its engine (`optimize_adam`, as the `ig` preset does). Both are timed in the same
process, alternating, so the ratio is measured side by side.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch
from perf_report import machine, markdown_table, peak_rss_bytes, rss_bytes, write_section
from torch.func import replace_all_batch_norm_modules_
from torch.nn import functional as F

from gradleak import attacks
from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.memory import ensure_trials_fit
from gradleak.attacks.engine.trials import trial_inputs
from gradleak.attacks.matching.objectives import cosine_distance
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.core.device import DEVICE_SPELLINGS, device_name, module_on, resolve_device
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.data.datasets import DATASETS
from gradleak.data.normalize import pixel_bounds
from gradleak.fl import FedSGDClient
from gradleak.modalities.image import total_variation
from gradleak.models import build_model
from gradleak.scenario import RunConfig, build_case

TV_WEIGHT = 1e-4  # Inverting Gradients' CIFAR value
LR = 0.1
SIZE = 32


@dataclass
class Setting:
    """A model, a private image and its shared gradient, at 32×32, batch 1."""

    name: str
    model: torch.nn.Module
    image: torch.Tensor
    label: torch.Tensor
    target: dict[str, torch.Tensor]
    bounds: tuple[torch.Tensor, torch.Tensor]

    def to(self, device: torch.device) -> Setting:
        """This setting on `device`: a copy of the model moved there (the model itself when
        it is there already), and the image, label, target gradients and bounds moved."""
        lower, upper = self.bounds
        return Setting(
            self.name,
            module_on(self.model, device),
            self.image.to(device),
            self.label.to(device),
            {n: t.to(device) for n, t in self.target.items()},
            (lower.to(device), upper.to(device)),
        )


def _sync(device: torch.device) -> None:
    """Wait for the work queued on `device` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def make_setting(name: str, device: torch.device, seed: int = 0) -> Setting:
    """The setting built and seeded on the CPU, then moved to `device`."""
    model = build_model(name, num_classes=10, image_size=(SIZE, SIZE), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, SIZE, SIZE, generator=generator)
    label = torch.tensor([3])
    model.train()
    loss = F.cross_entropy(model(image), label)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]
    target = {n: g.detach() for n, g in zip(names, grads, strict=True)}
    spec = DATASETS["cifar10"]
    setting = Setting(name, model, image, label, target, pixel_bounds(spec.mean, spec.std))
    return setting.to(device)


def floor_loop(setting: Setting, iterations: int, start: torch.Tensor) -> torch.Tensor:
    """The hand-written minimal loop (the same math as one `ig` trial)."""
    model = attacker_model(setting.model, "train")
    replace_all_batch_norm_modules_(model)
    params = list(model.parameters())
    target = list(setting.target.values())
    target_norm = sum(t.pow(2).sum() for t in target).sqrt()
    lower, upper = setting.bounds
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=LR)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    for _ in range(iterations):
        loss = F.cross_entropy(model(x), setting.label)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
        norm = sum(g.pow(2).sum() for g in grads).sqrt()
        tv = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
        tv = tv + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        # Differentiate to the input only (.backward() would also fill parameter grads).
        (grad_x,) = torch.autograd.grad(1 - dot / (norm * target_norm) + TV_WEIGHT * tv, [x])
        x.grad = grad_x.sign()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            x.clamp_(min=lower, max=upper)
    return x.detach()


def engine_loop(
    setting: Setting, iterations: int, start: torch.Tensor, *, compile: bool = False
) -> tuple[float, float]:
    """gradleak's engine on K = start.shape[0] trials: (loop seconds, compile seconds).

    The engine reads its own clock; the device is synchronised first, so no earlier work
    is counted."""
    _sync(start.device)
    problem = MatchingProblem(
        attacker_model(setting.model, "train"),
        setting.target,
        cosine_distance,
        TV_WEIGHT,
        prior=total_variation,
    )
    result = optimize_adam(
        problem,
        start,
        setting.label,
        lr=LR,
        iterations=iterations,
        bounds=setting.bounds,
        log_every=max(1, iterations // 100),  # as the presets log: about 100 rows per run
        progress=False,
        compile=compile,
    )
    return result.seconds, result.compile_seconds


def run_floor(args: argparse.Namespace) -> None:
    rows = []
    device = args.device
    for name in args.models:
        setting = make_setting(name, device)
        start = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        start = start.to(device)
        starts = start.unsqueeze(0)
        n = args.iterations
        floor_loop(setting, 3, start)  # warm-up both paths
        engine_loop(setting, 3, starts)
        floor_s, engine_s = [], []
        for _ in range(args.rounds):  # alternate so drift hits both sides alike
            _sync(device)
            t = time.perf_counter()
            floor_loop(setting, n, start)
            _sync(device)
            floor_s.append((time.perf_counter() - t) / n)
            engine_s.append(engine_loop(setting, n, starts)[0] / n)
        f, e = statistics.median(floor_s), statistics.median(engine_s)
        rows.append([name, f"{f * 1e3:.2f}", f"{e * 1e3:.2f}", f"{e / f:.3f}"])
        print(rows[-1], flush=True)
    table = markdown_table(["model", "floor ms/it", "gradleak ms/it", "ratio"], rows)
    _publish(args, "floor", table, f"{args.iterations} iterations × {args.rounds} rounds")


def _memory_cell(job: tuple[str, int, int, str]) -> dict:
    """Peak memory of one (model, K) run in a fresh process, and the engine's estimate:
    the process's resident memory, or on CUDA the memory torch allocated on the GPU."""
    name, trials, threads, spec = job
    torch.set_num_threads(threads)
    device = resolve_device(spec)
    setting = make_setting(name, device)
    start = _starts(trials, device)
    problem = MatchingProblem(
        attacker_model(setting.model, "train"),
        setting.target,
        cosine_distance,
        TV_WEIGHT,
        prior=total_variation,
    )
    estimate = ensure_trials_fit(
        problem, start, trial_inputs(start, setting.label, problem, None, None), trials
    )
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        engine_loop(setting, 3, start)
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        before = rss_bytes()  # the model, the data and the estimate's one step are in
        engine_loop(setting, 3, start)
        peak = peak_rss_bytes()
    return {"peak_bytes": peak, "run_bytes": max(peak - before, 0), "estimate": estimate}


def _starts(trials: int, device: torch.device) -> torch.Tensor:
    """K starts drawn on the CPU (the same for a seed anywhere), moved to `device`."""
    start = torch.randn(trials, 1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return start.to(device)


def run_scaling(args: argparse.Namespace) -> None:
    rows = []
    context = multiprocessing.get_context("spawn")
    for name in args.models:
        setting = make_setting(name, args.device)
        runs = {k: max(args.min_iterations, args.iterations // k) for k in args.trials}
        starts = {k: _starts(k, args.device) for k in args.trials}
        for k in args.trials:
            engine_loop(setting, 2, starts[k])  # warm-up
        samples: dict[int, list[float]] = {k: [] for k in args.trials}
        for _ in range(args.rounds):  # interleaved, so drift hits every K alike
            for k in args.trials:
                samples[k].append(engine_loop(setting, runs[k], starts[k])[0] / runs[k])
        one = statistics.median(samples[args.trials[0]])
        for k in args.trials:
            with context.Pool(1) as pool:
                job = (name, k, args.threads, str(args.device))
                memory = pool.apply(_memory_cell, (job,))
            seconds = statistics.median(samples[k])
            rows.append(
                [
                    name,
                    k,
                    f"{seconds * 1e3:.1f}",
                    f"{seconds / k * 1e3:.2f}",
                    f"{seconds / one:.2f}",
                    f"{memory['peak_bytes'] / 2**20:.0f}",
                    f"{memory['run_bytes'] / 2**20:.0f}",
                    f"{memory['estimate'] / 2**20:.0f}",
                ]
            )
            print(rows[-1], flush=True)
    peak = "peak CUDA MiB" if args.device.type == "cuda" else "peak RSS MiB"
    header = ["model", "K", "ms/it", "ms/trial", "× one trial", peak]
    header += ["run MiB", "estimate MiB"]
    detail = f"about {args.iterations} trial-iterations per K, median of {args.rounds} rounds"
    _publish(args, "scaling", markdown_table(header, rows), detail)


def run_compile(args: argparse.Namespace) -> None:
    rows = []
    for name in args.models:
        for k in args.trials:
            setting = make_setting(name, args.device)
            start = _starts(k, args.device)
            n = args.iterations
            engine_loop(setting, 3, start)
            eager = min(engine_loop(setting, n, start)[0] for _ in range(args.rounds)) / n
            # The first compiled step compiles: it is timed apart from the steady state.
            total, compile_s = engine_loop(setting, n + 1, start, compile=True)
            steady = (total - compile_s) / n
            rows.append(
                [
                    name,
                    k,
                    f"{eager * 1e3:.1f}",
                    f"{steady * 1e3:.1f}",
                    f"{eager / steady:.2f}",
                    f"{compile_s:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    header = ["model", "K", "eager ms/it", "compiled ms/it", "speed-up", "compile s"]
    _publish(args, "compile", markdown_table(header, rows), f"{args.iterations} iterations")


def run_many(args: argparse.Namespace) -> None:
    """The `ig` preset on the 8 bundled CIFAR-10 images: one stack against one by one."""
    rows = []
    for name in args.models:
        # Built, seeded and differentiated on the CPU; then the updates, the model and the
        # granted labels are moved to the device once.
        cases = [
            build_case(RunConfig(model=name, indices=(i,), labels_known=True)) for i in range(8)
        ]
        updates = [FedSGDClient(c.server.model).compute_update(c.client.batch) for c in cases]
        updates = [_update_on(update, args.device) for update in updates]
        server = cases[0].to(args.device).server
        model, knowledge = server.model, server.knowledge
        for k in args.trials:
            attack = attacks.get("ig").with_options({"iterations": args.iterations, "restarts": k})
            attack.with_options({"iterations": 2}).reconstruct_many(
                updates, model, knowledge, progress=False
            )  # warm-up
            _sync(args.device)
            start = time.perf_counter()
            for update in updates:
                attack.reconstruct(update, model, knowledge, progress=False)
            _sync(args.device)
            alone = time.perf_counter() - start
            start = time.perf_counter()
            attack.reconstruct_many(updates, model, knowledge, progress=False)
            _sync(args.device)
            together = time.perf_counter() - start
            n, its = len(updates), args.iterations
            rows.append(
                [
                    name,
                    k,
                    n * k,
                    f"{alone / n:.2f}",
                    f"{together / n:.2f}",
                    f"{n * k * its / alone:.0f}",
                    f"{n * k * its / together:.0f}",
                    f"{alone / together:.2f}",
                ]
            )
            print(rows[-1], flush=True)
    header = ["model", "restarts", "trials", "s/image alone", "s/image stacked"]
    header += ["trial-its/s alone", "trial-its/s stacked", "speed-up"]
    detail = f"`ig` preset, labels known, {args.iterations} iterations, 8 bundled images"
    _publish(args, "many", markdown_table(header, rows), detail)


def _update_on(update: SharedUpdate, device: torch.device) -> SharedUpdate:
    """`update` with its tensors and buffers moved to `device`."""
    return replace(
        update,
        tensors={n: t.to(device) for n, t in update.tensors.items()},
        buffers={n: t.to(device) for n, t in update.buffers.items()},
    )


def _publish(args: argparse.Namespace, section: str, table: str, detail: str) -> None:
    command = f"python benchmarks/engine_speed.py {args.command}"
    where = str(args.device)
    if args.device.type != "cpu":
        command += f" --device {args.device}"
        where = f"{args.device} ({device_name(args.device)})"
    body = f"{table}\n\nMeasured on {machine()}; run on {where}; {detail}. Command: `{command}`."
    print(body)
    if args.write_docs:
        write_section(f"engine_speed:{section}", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("floor", "scaling", "compile", "many"))
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--trials", nargs="+", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--min-iterations", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--device",
        default="cpu",
        help=f"where the timed loops run: {DEVICE_SPELLINGS} (default: cpu); settings are "
        "built on the CPU and moved there once",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/PERFORMANCE.md")
    args = parser.parse_args()
    try:
        args.device = resolve_device(args.device)
    except GradleakError as error:
        print(f"engine_speed.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    defaults = {
        "floor": (["lenet", "convnet", "resnet20", "resnet20-4"], [1], 60),
        "scaling": (["lenet", "resnet20"], [1, 4, 16, 64], 640),
        "compile": (["resnet20", "lenet"], [1], 60),
        "many": (["lenet", "resnet20"], [1, 8], 100),
    }[args.command]
    args.models = args.models or defaults[0]
    args.trials = args.trials or defaults[1]
    args.iterations = args.iterations or defaults[2]
    torch.set_num_threads(args.threads)
    commands = {"floor": run_floor, "scaling": run_scaling, "compile": run_compile}
    commands["many"] = run_many
    try:
        commands[args.command](args)
    except GradleakError as error:  # e.g. K trials that do not fit the device's memory
        print(f"engine_speed.py: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
