"""The trade-off says how DP-SGD's batches were sampled, and retrains results that do not."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

import gradleak.studies.tradeoff as tradeoff_module
from gradleak.core.settings import to_plain
from gradleak.studies.sweep.spec import parse_spec
from gradleak.studies.tradeoff import TradeoffSpec, tradeoff_markdown
from gradleak.training.utility import UtilityConfig, UtilityResult

CONFIG = UtilityConfig(dataset="cifar10", train_count=6, test_count=2, batch_size=2)
RESULT = UtilityResult(0.5, 1.0, 3, 0.1, 2.0, 1e-5, "poisson", 1 / 3)


def test_the_epsilon_column_names_the_poisson_rate() -> None:
    spec = TradeoffSpec(parse_spec({"attacks": ["idlg"]}), CONFIG)
    row = {
        "attack": "idlg", "defense": "dpsgd:1:1", "images": 1, "psnr_median": 10.0,
        "recovered": 0.0, "label_accuracy": None, "test_accuracy": 0.5, "epsilon": 2.0,
    }  # fmt: skip
    header = tradeoff_markdown([row], spec).splitlines()[0]
    assert header.endswith("| ε (δ = 1e-05, Poisson q = 0.333) |")


def test_a_cached_result_from_before_the_sampling_was_recorded_is_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defense = ("dpsgd:1:1",)
    settings = to_plain(UtilityConfig(**{**CONFIG.__dict__, "defenses": defense}))
    old = {k: v for k, v in asdict(RESULT).items() if k not in ("sampling", "sample_rate")}
    cache = tmp_path / "utility" / "dpsgd-1-1.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({"settings": settings, "result": old}))
    trained: list[UtilityConfig] = []

    def train(config: UtilityConfig, **where: object) -> UtilityResult:  # where: the device
        trained.append(config)
        return RESULT

    monkeypatch.setattr(tradeoff_module, "train_with_defenses", train)
    assert tradeoff_module._utility(CONFIG, defense, tmp_path) == asdict(RESULT)
    assert len(trained) == 1
    assert tradeoff_module._utility(CONFIG, defense, tmp_path) == asdict(RESULT)  # now cached
    assert len(trained) == 1
