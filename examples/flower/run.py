"""A Flower simulation whose server attacks its clients' updates with gradleak.

    .venv/bin/python examples/flower/run.py                       # FedSGD, CIFAR-10, 2 clients
    .venv/bin/python examples/flower/run.py --config fedavg --dataset mnist
    .venv/bin/python examples/flower/run.py --dataset mnist --model mlp --rounds 100 --guard

Each client trains on its own images (gradleak's loaders, `--data-root`); the server,
Flower's FedAvg inside gradleak's `CuriousStrategy`, reconstructs every client's batch from
its update. With `--guard` each client first attacks its own update (`LeakageGuard`) and
sends a defended one where it leaks. Outputs in `--out`: flower-summary.csv and .html
(PSNR per client and round, each reconstruction beside its original), the run folders
round-NNN/node-ID/attack/, the clients' batches (truth/) and run.json (settings, accuracy,
wall time). Runs offline: Ray on this machine, telemetry off; every process it starts is
gone when it returns, also after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os

# Before Flower and Ray are imported: no telemetry, no usage statistics (offline runs).
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402
import torch  # noqa: E402
from fldemo import apps, data, outcome, settings  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from gradleak.core.errors import GradleakError  # noqa: E402
from gradleak.integrations.flower import TruthFolder  # noqa: E402


def _prepare_out(demo: settings.Demo) -> None:
    """Start from an empty folder: a capture folder's index only ever grows."""
    out = demo.out
    if out.exists() and any(out.iterdir()):
        if not demo.overwrite:
            raise GradleakError(f"{out} is not empty; add --overwrite or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM ends the run the way Ctrl-C does, so that the finally blocks stop Ray.
    raise KeyboardInterrupt(f"signal {signum}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _start_ray() -> None:
    """Start Ray here rather than in `run_simulation`, to keep this script's SIGTERM handler.

    Ray's driver installs a handler that aborts the process on SIGTERM; installed again
    afterwards, this script's handler ends the run as Ctrl-C does, through the finally
    blocks. The actors get this process's module path, as Flower would give them.
    """
    ray.init(
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}},
    )
    signal.signal(signal.SIGTERM, _interrupt)


def simulate(demo: settings.Demo) -> dict[str, Any]:
    """Run the Flower simulation; the server's final model and held-out metrics by round.

    Raises:
        GradleakError: the server app did not finish.
    """
    truth = TruthFolder(demo.out / "truth", demo.target().facts)
    evaluate = outcome.held_out_evaluation(demo, apps.client_data(demo))
    result: dict[str, Any] = {}
    # Both apps are built first: a bad setting (a guard's defense, say) fails before Ray.
    server_app = apps.server_app(demo, truth, evaluate, result)
    client_app = apps.client_app(demo, truth)
    try:
        _start_ray()
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=demo.clients,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
    finally:
        # run_simulation stops Ray when it ends normally; not always after an interrupt.
        if ray.is_initialized():
            ray.shutdown()
    if "arrays" not in result:
        raise GradleakError("the Flower run ended before its last round; see the log above")
    return result


def report(demo: settings.Demo, result: dict[str, Any], seconds: float) -> None:
    """Print what the server reconstructed and the accuracy; write run.json."""
    rows = outcome.read_summary(demo.out)
    evaluations = {r: dict(m) for r, m in result["evaluations"].items()}
    means = outcome.client_means(rows)
    print(
        f"\n{demo.config} on {demo.dataset}, {demo.model}, {demo.clients} clients, "
        f"{demo.rounds} rounds; server attack: {demo.attack}"
        + (
            f"; clients guarded ({', '.join(demo.guard.defenses)} above "
            f"{demo.guard.threshold_psnr:g} dB)"
            if demo.guard
            else ""
        )
    )
    print(outcome.psnr_table(rows, demo.guard is not None))
    print(
        "mean server PSNR by client: "
        + ", ".join(f"client {c}: {v:.2f} dB" for c, v in means.items())
    )
    if demo.guard is not None:
        print(outcome.guard_line(rows, demo.guard.threshold_psnr))
    print(outcome.accuracy_line(evaluations))
    print(f"wall time {seconds:.1f} s; summary: {demo.out / 'flower-summary.html'}")
    record = {
        "settings": _jsonable(asdict(demo)),
        "seconds": seconds,
        "torch_threads": torch.get_num_threads(),
        "held_out": evaluations,
        "mean_psnr_by_client": means,
    }
    (demo.out / "run.json").write_text(json.dumps(_jsonable(record), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the simulation, print the tables; the exit status."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo = settings.parse(argv)
        data.images(demo.dataset, demo.data_root)  # missing data: one line, before Ray
        demo.target(), demo.plan()  # the model and the attack are checked before any file
        _prepare_out(demo)
        torch.manual_seed(demo.seed)
        torch.set_num_threads(demo.threads)
        start = time.perf_counter()
        result = simulate(demo)
        report(demo, result, time.perf_counter() - start)
    except GradleakError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; Ray stopped", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Flower's ServerApp thread cannot be interrupted: it waits for replies that will
        # never come (up to the round timeout, an hour), and the strategy's attack thread
        # for its queue. Ray is already stopped (simulate's finally), so end the process.
        os._exit(130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
