"""Where sweep cells run: this process, local worker processes, or a Ray cluster."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from gradleak.core.errors import GradleakError

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


class LocalBackend(_Closing):
    """`workers` processes on this machine (1: in this process)."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise GradleakError(f"--workers must be at least 1, got {workers}")
        self.workers = workers

    def run(self, fn: CellFunction, jobs: Sequence[Job]) -> Iterator[dict[str, Any]]:
        if self.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield fn(job)
            return
        # spawn: a fresh interpreter per worker, no torch state inherited through fork.
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(min(self.workers, len(jobs)))
        try:
            yield from pool.imap_unordered(fn, jobs)
            pool.close()
        except BaseException:
            pool.terminate()  # Ctrl-C or a failing cell: stop the others now
            raise
        finally:
            pool.join()


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
