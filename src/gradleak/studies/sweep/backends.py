"""Where sweep cells run: this process, local worker processes, or a Ray cluster.

Local worker processes stop cleanly on Ctrl-C and SIGTERM, whether the signal reaches every
process (a terminal's Ctrl-C, Slurm) or only the parent (`kill PID`, which the parent
passes on): a worker that is running a cell stops it as Ctrl-C would (the cell's partial
directory is removed, nothing is published), reports that it stopped and exits; an idle
worker only notes the signal and takes no further cell. The parent then raises
KeyboardInterrupt, and the sweep writes its tables from the finished cells.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, Protocol

from gradleak.core.errors import GradleakError
from gradleak.core.signals import Terminated

Job = dict[str, Any]
CellFunction = Callable[[Job], dict[str, Any]]


class Backend(Protocol):
    workers: int

    def run(self, fn: CellFunction, jobs: Sequence[Job]) -> Iterator[dict[str, Any]]:
        """Run fn on every job; yield each result as it finishes (any order)."""
        ...


class _Closing:
    """`with backend:` releases what the backend started (a local Ray instance)."""

    def close(self) -> None:
        """Nothing to release by default."""

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Each local worker is a process with its own torch (a few hundred MB before any cell), and
# cells already use the cores through torch's threads: beyond a few workers per core more
# only exhausts memory.
WORKERS_PER_CORE = 4


def check_workers(workers: int, *, local: bool) -> None:
    """Refuse a --workers value in one line: below 1, or for local processes above
    `WORKERS_PER_CORE` per core of this machine (a Ray cluster sets its own bound).

    Raises:
        GradleakError: naming the allowed range.
    """
    if workers < 1:
        raise GradleakError(f"--workers must be at least 1, got {workers}")
    limit = WORKERS_PER_CORE * (os.cpu_count() or 1)
    if local and workers > limit:
        raise GradleakError(
            f"--workers {workers} is more local processes than this machine can run "
            f"({os.cpu_count() or 1} cores); use at most {limit}, or --backend ray for a cluster"
        )


class LocalBackend(_Closing):
    """`workers` processes on this machine (1: in this process)."""

    def __init__(self, workers: int = 1) -> None:
        check_workers(workers, local=True)
        self.workers = workers

    def run(self, fn: CellFunction, jobs: Sequence[Job]) -> Iterator[dict[str, Any]]:
        if self.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield fn(job)
            return
        yield from _WorkerPool(fn, min(self.workers, len(jobs))).run(jobs)


# What a worker reports for a job: its result, that a signal stopped it, or an error.
_DONE, _STOPPED, _ERROR = "done", "stopped", "error"
# How often the parent looks for workers that ended without reporting (killed from outside).
_POLL_SECONDS = 1.0
# How long stopped workers may take to leave their cells before they are killed.
_GRACE_SECONDS = 30.0


class _WorkerState:
    """A worker's view of signals: whether it runs a cell, whether it was told to stop."""

    in_cell = False
    stopping = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """In a worker: the first SIGINT or SIGTERM stops its cell as Ctrl-C would.

    Later signals are ignored, so that the cell's clean-up is not interrupted in turn;
    an idle worker only notes the signal.
    """
    first = not _WorkerState.stopping
    _WorkerState.stopping = True
    if first and _WorkerState.in_cell:
        raise Terminated(f"signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt


def _serve(fn: CellFunction, tasks: Any, results: Any) -> None:
    """A worker process: run (index, job) tasks until None or a signal; report each."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored by the parent: stays so
            signal.signal(signum, _on_signal)
    while (task := tasks.get()) is not None:
        index, job = task
        if _WorkerState.stopping:
            results.put((index, _STOPPED, None))
            return
        try:
            _WorkerState.in_cell = True
            if _WorkerState.stopping:  # a signal came between taking the task and here
                raise KeyboardInterrupt
            outcome: tuple[str, Any] = (_DONE, fn(job))
        except KeyboardInterrupt:
            outcome = (_STOPPED, None)
        except Exception as exc:  # reported to the parent, which raises it there
            error = GradleakError.__name__ if isinstance(exc, GradleakError) else None
            outcome = (_ERROR, (error, str(exc), traceback.format_exc()))
        finally:
            _WorkerState.in_cell = False
        results.put((index, *outcome))
        if outcome[0] == _STOPPED:
            return


class _WorkerPool:
    """`size` spawned processes running `fn` on jobs, stopped cleanly on any interruption.

    Spawned, not forked: a fresh interpreter per worker, no torch state inherited.
    """

    def __init__(self, fn: CellFunction, size: int) -> None:
        self.fn, self.size = fn, size

    def run(self, jobs: Sequence[Job]) -> Iterator[dict[str, Any]]:
        context = multiprocessing.get_context("spawn")
        tasks, results = context.Queue(), context.Queue()
        workers = [
            context.Process(target=_serve, args=(self.fn, tasks, results), daemon=True)
            for _ in range(self.size)
        ]
        for worker in workers:
            worker.start()
        for task in [*enumerate(jobs), *[None] * len(workers)]:
            tasks.put(task)
        try:
            for _ in jobs:
                yield self._next(results, workers)
        except BaseException:
            for worker in workers:  # Ctrl-C or SIGTERM here, or an error: stop the others
                if worker.is_alive():
                    worker.terminate()
            raise
        finally:
            _join(workers, results)
            tasks.cancel_join_thread()  # tasks never taken must not hold this process up

    def _next(self, results: Any, workers: list[Any]) -> dict[str, Any]:
        lost = None
        while True:
            try:
                _, kind, payload = results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if lost is not None:  # looked once more after the workers ended: nothing came
                    raise GradleakError(lost) from None
                lost = _lost_workers(workers)
                continue
            if kind == _DONE:
                return payload
            if kind == _STOPPED:
                raise KeyboardInterrupt
            error, message, trace = payload
            if error == GradleakError.__name__:
                raise GradleakError(message)
            raise RuntimeError(f"a sweep worker failed: {message}\n{trace}")


def _lost_workers(workers: list[Any]) -> str | None:
    """Why waiting on would wait forever: a worker ended without reporting (e.g. killed for
    memory), or every worker ended; None while that is not so."""
    for worker in workers:
        if worker.exitcode not in (None, 0):
            how = (
                f"was killed by signal {-worker.exitcode}"
                if worker.exitcode < 0
                else f"exited with code {worker.exitcode}"
            )
            return (
                f"sweep worker process {worker.pid} {how} while it ran a cell (out of "
                "memory?); the finished cells are kept: run the same command again to finish"
            )
    if not any(worker.is_alive() for worker in workers):
        return "every sweep worker process ended before its cells were done"
    return None


def _join(workers: list[Any], results: Any) -> None:
    """Wait for the workers to end, reading what they still report so none blocks on it."""
    deadline = time.monotonic() + _GRACE_SECONDS
    while any(worker.is_alive() for worker in workers) and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):  # nothing to read: look at the workers again
            results.get(timeout=0.1)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
        worker.join()


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens at (Ray itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise GradleakError(f"Ray address {address!r} must look like HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise GradleakError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


class RayBackend(_Closing):
    """Cells as Ray tasks on an existing cluster (`address`), or a local Ray instance."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise GradleakError("the Ray backend needs ray: pip install 'gradleak[ray]'") from None
        # Keep Ray from rewriting accelerator variables (and from warning that it will).
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        self._ray = ray
        self.address = address
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address is None:
            options["num_cpus"] = workers or os.cpu_count() or 1
        else:
            _probe(address)
        try:
            if not ray.is_initialized():
                ray.init(address=address, **options)
        except Exception as exc:  # ray raises several types for an unreachable cluster
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GradleakError(
                f"cannot reach the Ray cluster at {address}: {first[:200]}"
            ) from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run(self, fn: CellFunction, jobs: Sequence[Job]) -> Iterator[dict[str, Any]]:
        ray = self._ray
        remote = ray.remote(num_cpus=1)(fn)
        pending = [remote.remote(job) for job in jobs]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, GradleakError):  # one line, as locally
                        raise GradleakError(str(exc.cause)) from None
                    raise
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def shutdown(self) -> None:
        if self.address is None:  # only a Ray instance this backend started itself
            self._ray.shutdown()

    def close(self) -> None:
        self.shutdown()
