"""Adam's hot loop never waits for the device: the host reads a value only at its checks.

On a GPU, reading a tensor's value on the host (`.item()`, `.tolist()`, `float(t)`, `if t`,
`.cpu()`, `.numpy()`) waits for every queued kernel, and so does building a tensor there
from Python values (`torch.tensor(rows, device=...)` copies from the host and then waits).
Every such call the optimiser makes is counted here on the CPU: their number must not grow
with the iterations between two `log_every` checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from gradleak.attacks.engine.adam import optimize_adam
from gradleak.attacks.engine.consistency import GroupConsistency
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

from .problems import matching_problem

pytestmark = pytest.mark.usefixtures("one_thread")

# What waits for the device: reading a value on the host, or copying Python values to it.
HOST_READS = {"item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu"}
HOST_COPIES = {"tensor", "as_tensor"}


class HostCalls(TorchFunctionMode):
    """Counts the calls, by name, that make the host wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS | HOST_COPIES:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def problem(one_thread: None):
    case = build_case(RunConfig(model="lenet", batch_size=2, progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    return matching_problem(case, dict(update.tensors), "cosine")


def _host_calls(problem, iterations: int, *, soft: bool, log_every: int) -> Counter[str]:
    k = 4
    g = torch.Generator().manual_seed(0)
    images = torch.randn(k, 2, 3, 32, 32, generator=g)
    labels = torch.randn(k, 2, 10, generator=g) if soft else torch.tensor([1, 2])
    counter = HostCalls()
    with counter:
        optimize_adam(
            problem,
            images,
            labels,
            lr=0.05,
            # One trial stops halfway: the running rows change once in the loop. (Each
            # step size changes at 3/8, 5/8 and 7/8 of its trial's budget: 6 changes.)
            iterations=[iterations, iterations, iterations // 2, iterations],
            log_every=log_every,
            progress=False,
            check_memory=False,
            consistency=GroupConsistency(2, 0.01, every=10_000),
        )
    return counter.calls


@pytest.mark.parametrize("soft", [False, True], ids=["int-labels", "soft-labels"])
def test_the_host_waits_no_more_for_more_iterations(problem, soft: bool) -> None:
    # Checks at iteration 0 only (and the final scoring): 16 and 48 iterations after it.
    few = _host_calls(problem, 16, soft=soft, log_every=10_000)
    many = _host_calls(problem, 48, soft=soft, log_every=10_000)
    assert few == many
    assert sum(few.values()) > 0  # the counter sees the checks' reads


def test_each_check_reads_the_losses_once(problem) -> None:
    two = _host_calls(problem, 16, soft=False, log_every=8)  # checks at 0 and 8
    four = _host_calls(problem, 32, soft=False, log_every=8)  # at 0, 8, 16 and 24
    # Each check reads the K losses once, and for its history row the best trial's index,
    # loss and distance; nothing else, and no copy to the device.
    assert four - two == Counter({"tolist": 2, "__int__": 2, "__float__": 4})
