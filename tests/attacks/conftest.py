"""Fixtures shared by the attack tests."""

from __future__ import annotations

import pytest
import torch

from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case
from gradleak.scenario.case import Case


@pytest.fixture(scope="module")
def lenet_case(one_thread: None) -> tuple[Case, dict[str, torch.Tensor]]:
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    return case, dict(update.tensors)
