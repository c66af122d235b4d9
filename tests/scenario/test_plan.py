"""`plan_run`: a RunConfig resolved once into the parts of a run, before any data is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gradleak import attacks
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Grants
from gradleak.defenses import AdditiveNoise, PruneScope, Pruning
from gradleak.fl import LocalTraining, ProtocolSettings
from gradleak.scenario import RunConfig, build_case, plan_run
from gradleak.scenario import case as case_module
from gradleak.scenario.plan import DataRequest, ModelRequest


@pytest.fixture
def missing(tmp_path: Path) -> Path:
    """A data folder that does not exist: reading data from it fails."""
    return tmp_path / "no-such-data"


@pytest.fixture
def no_data_access(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record every attempt of the case builder to open a dataset (and refuse it)."""
    calls: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **options: Any) -> None:
        calls.append(args)
        raise GradleakError("data was read")

    monkeypatch.setattr(case_module, "open_images", refuse)
    return calls


def _config(data_root: Path, **overrides: Any) -> RunConfig:
    values: dict[str, Any] = {
        "attack": "ig",
        "data_root": data_root,
        "indices": (5,),
        "batch_size": 2,
        "users": 2,
        "protocol": "fedavg",
        "local_steps": 2,
        "local_lr": 0.05,
        "seed": 3,
        "defenses": ("prune:0.3", "noise:gaussian:1e-3"),
        "attack_options": {"iterations": 300, "restarts": 2},
        "guess_local_lr": 0.1,
        "labels_known": True,
        "attacker_model_mode": "eval",
        "progress": False,
    }
    values.update(overrides)
    return RunConfig(**values)


def test_plan_resolves_every_part(missing: Path, no_data_access: list) -> None:
    config = _config(missing)
    plan = plan_run(config)
    assert plan.config == config
    assert plan.seed == 3
    # 2 users × 2 samples from one start index.
    assert plan.data == DataRequest(
        dataset="cifar10",
        data_root=missing,
        split="test",
        indices=(5, 6, 7, 8),
        image=None,
        label=None,
        num_classes=None,
        image_size=None,
        users=2,
    )
    assert plan.data.per_user == 2
    assert plan.model == ModelRequest("lenet", None, 3)
    assert plan.protocol == ProtocolSettings(
        "fedavg", LocalTraining(lr=0.05, steps=2), users=2, rho=1.0, rounds=1
    )
    assert plan.grants == Grants(labels_known=True, local_guess={"lr": 0.1}, model_mode="eval")
    assert plan.defenses == (Pruning(0.3, PruneScope.LAYER), AdditiveNoise("gaussian", 1e-3))
    assert no_data_access == []
    assert not missing.exists()


def test_plan_applies_the_attack_options_to_a_copy_of_the_preset(missing: Path) -> None:
    plan = plan_run(_config(missing, attack_options={"iterations": 300, "restarts": 2}))
    assert plan.attack.name == "ig"
    assert plan.attack.config.iterations == 300
    assert plan.attack.config.restarts == 2
    # Everything else is the preset's, and the preset itself is untouched.
    preset = attacks.get("ig").config
    assert plan.attack.config.objective == preset.objective == "cosine"
    assert plan.attack.config.lr == preset.lr
    assert (preset.iterations, preset.restarts) == (24_000, 8)


def test_default_outputs(missing: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    plan = plan_run(_config(missing))
    assert plan.output.out_dir == plan.config.default_out()
    assert plan.output.out_dir.parent == Path("runs")
    assert plan.output.out_dir.name.startswith("ig-lenet-cifar10-5-b2-u2-fedavg-s3-")
    assert not (tmp_path / "runs").exists()  # planned, not created
    # About six snapshots, log-spaced over the 300 iterations.
    assert plan.output.snapshots == (0, 3, 10, 30, 100, 300)
    assert plan.output.progress is False
    assert plan.output.stop_psnr is None


def test_given_outputs_are_kept(missing: Path, tmp_path: Path) -> None:
    out = tmp_path / "my-run"
    plan = plan_run(_config(missing, out=out, snapshots=(0, 5, 50), stop_psnr=25.0))
    assert plan.output.out_dir == out
    assert plan.output.snapshots == (0, 5, 50)
    assert plan.output.stop_psnr == 25.0
    assert not out.exists()


def test_explicit_indices_are_kept_in_order(missing: Path) -> None:
    plan = plan_run(_config(missing, indices=(9, 2, 4, 7)))
    assert plan.data.indices == (9, 2, 4, 7)


def test_fedsgd_plan_has_no_local_training_and_no_guesses(missing: Path) -> None:
    plan = plan_run(RunConfig(data_root=missing, batch_size=3, progress=False))
    assert plan.data.indices == (0, 1, 2)
    assert plan.protocol == ProtocolSettings("fedsgd")
    assert plan.protocol.local is None
    assert plan.grants == Grants()
    assert plan.defenses == ()
    assert plan.attack.name == "dlg"
    assert plan.output.out_dir.name.startswith("dlg-lenet-cifar10-0-b3-s0-")


def test_the_data_is_read_only_when_the_case_is_built(missing: Path) -> None:
    config = _config(missing)
    plan_run(config)  # no data needed
    with pytest.raises(GradleakError, match="does not exist"):
        build_case(config)


def test_the_case_builder_reads_the_data_the_plan_does_not(
    missing: Path, no_data_access: list
) -> None:
    config = _config(missing)
    plan_run(config)
    assert no_data_access == []
    with pytest.raises(GradleakError, match="data was read"):
        build_case(config)
    assert len(no_data_access) == 1


@pytest.mark.parametrize(
    ("overrides", "message", "case_too"),
    [
        (
            {"attack_options": {"iterationz": 5}},
            "unknown key 'iterationz' in attack 'ig' options",
            False,
        ),
        (
            {"attack_options": {"optimizer": "sgd"}},
            "optimizer 'sgd' is not one of: adam, lbfgs",
            False,
        ),
        ({"defenses": ("prune:1.5",)}, r"prune fraction must be in \[0, 1\), got 1.5", False),
        (
            {"protocol": "fedsgd", "local_steps": None, "local_lr": None},
            "--guess-local-lr guesses local training, which fedsgd does not do",
            True,
        ),
        (
            {
                "attack": "dlg-admm",
                "protocol": "fedadmm",
                "guess_local_steps": 3,
                "attack_options": {"admm_reading": "gradient"},
            },
            "dlg-admm with admm_reading gradient uses only the local learning rate.*drop "
            "--guess-local-steps",
            True,
        ),
        ({"guess_local_batch_size": 3}, "use --guess-local-batch-size 2 or fewer", True),
        ({"attack": "xdlg"}, "unknown attack 'xdlg'", False),
        (
            {"attack": "dlg", "protocol": "fedadmm", "guess_local_steps": 3},
            "attack 'dlg' reads gradients and weight differences but the update is a FedADMM "
            "increment; use dlg-admm or idlg-admm",
            False,
        ),
    ],
    ids=[
        "option",
        "option-value",
        "defense",
        "fedsgd-guess",
        "admm-guess",
        "guess-batch",
        "name",
        "pairing-before-guesses",
    ],
)
def test_bad_settings_fail_in_plan_before_any_data_is_read(
    missing: Path, no_data_access: list, overrides: dict[str, Any], message: str, case_too: bool
) -> None:
    with pytest.raises(GradleakError, match=message) as exc:
        plan_run(_config(missing, **overrides))
    assert "\n" not in str(exc.value)
    assert no_data_access == []
    if case_too:
        # The case's own settings (protocol, guesses) fail build_case before any data too;
        # the attack's and the defenses' settings do not concern building a case.
        with pytest.raises(GradleakError, match=message):
            build_case(_config(missing, **overrides))
        assert no_data_access == []
