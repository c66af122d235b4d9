"""`gradleak attack --update FILE`: a captured update attacked, scored and written; bad input
refused in one line before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gradleak.core.batch import PrivateBatch
from gradleak.core.update import SharedUpdate, UpdateKind
from gradleak.core.update_files import save_update_safetensors
from gradleak.data import dataset_stats, normalize
from gradleak.fl.protocols import ProtocolSettings
from gradleak.models import build_model, save_checkpoint
from gradleak.scenario.captured_run import load_weights
from gradleak.scenario.config import RunConfig

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

LR = 0.1
# The analytic attack reads an MLP's first layer: one image back exactly.
RUN = ["--model", "mlp", "--attack", "analytic", "--no-progress"]


class _Touch:
    """Pickles to a call that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def _global_model() -> torch.nn.Module:
    """The round's global model: the seed-0 MLP moved away from its init, so a run that
    ignored the global state would attack another model."""
    model = build_model("mlp", num_classes=10, in_channels=3, image_size=(32, 32), seed=0)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    return model


@pytest.fixture
def captured(tmp_path: Path) -> dict[str, Path | torch.Tensor]:
    """A FedSGD client's gradient of the global MLP on one known CIFAR-shaped image: as a
    safetensors file, as a pair of states (one SGD step of LR), with the truth file."""
    model = _global_model()
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([3])
    stats = dataset_stats("cifar10")
    batch = PrivateBatch(normalize(images, stats.mean, stats.std), labels)
    gradient = ProtocolSettings("fedsgd").client(model).compute_update(batch)
    update = SharedUpdate(gradient.tensors, UpdateKind.GRADIENT, {"num_samples": 1})
    paths: dict[str, Path | torch.Tensor] = {"images": images}
    paths["update"] = save_update_safetensors(update, tmp_path / "update.safetensors")
    update.save(tmp_path / "update.pt")
    paths["payload"] = tmp_path / "update.pt"
    base = {name: t.detach().clone() for name, t in model.state_dict().items()}
    local = {
        n: t - LR * gradient.tensors[n] if n in gradient.tensors else t for n, t in base.items()
    }
    torch.save(base, tmp_path / "global.pt")
    torch.save(local, tmp_path / "local.pt")
    paths["base"], paths["local"] = tmp_path / "global.pt", tmp_path / "local.pt"
    torch.save({"images": images, "labels": labels}, tmp_path / "truth.pt")
    paths["truth"] = tmp_path / "truth.pt"
    return paths


def _recovered(out: Path) -> torch.Tensor:
    return torch.load(out / "reconstruction.pt", weights_only=True)["images"]


def _metrics(out: Path) -> dict[str, object]:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("form", ["update", "payload"])
def test_a_captured_gradient_file_is_recovered_exactly(
    captured: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--update", str(captured[form]), *RUN, "--protocol", "fedsgd"]
    assert cli_exit([*argv, "--truth", str(captured["truth"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "analytic on mlp (update " in printed and f"outputs written to {out}" in printed
    assert torch.allclose(_recovered(out), captured["images"], atol=1e-4)
    metrics = _metrics(out)
    assert metrics["psnr"] >= 60 and metrics["scored"] is True
    assert metrics["exact_fraction"] == 1.0
    assert (metrics["kind"], metrics["attacked_as"], metrics["batch_size"]) == (
        "gradient",
        "gradient",
        1,
    )
    for name in ("grid.png", "history.csv", "config.yaml"):
        assert (out / name).is_file()


def test_a_pair_of_states_is_read_as_a_gradient_with_the_local_lr(
    captured: dict, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    pair = ["--update", str(captured["local"]), "--update-base", str(captured["base"])]
    argv = ["attack", *pair, *RUN, "--local-lr", str(LR), "--truth", str(captured["truth"])]
    assert cli_exit([*argv, "--out", str(out)]) == 0
    assert torch.allclose(_recovered(out), captured["images"], atol=1e-4)
    metrics = _metrics(out)
    assert (metrics["kind"], metrics["attacked_as"], metrics["local_lr"]) == (
        "weight_delta",
        "gradient",
        LR,
    )


def test_without_the_truth_the_reconstruction_is_written_unscored(
    captured: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_exit(["attack", "--update", str(captured["update"]), *RUN]) == 0
    assert "unscored (no --truth)" in capsys.readouterr().out
    (out,) = (tmp_path / "runs").iterdir()
    assert out.name.startswith("analytic-mlp-update-")
    assert torch.allclose(_recovered(out), captured["images"], atol=1e-4)
    assert _metrics(out)["scored"] is False and (out / "reconstruction.png").is_file()
    # The same file and settings name the same run directory.
    assert cli_exit(["attack", "--update", str(captured["update"]), *RUN]) == 2
    assert "--overwrite" in one_line_error(capsys)


def test_the_global_state_is_the_attacked_models_weights(captured: dict) -> None:
    model = build_model("mlp", num_classes=10, in_channels=3, image_size=(32, 32), seed=0)
    load_weights(model, RunConfig(model="mlp"), captured["base"])
    base = torch.load(captured["base"], weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, base[name]), name


# --- refused input, each one line with exit code 2, before anything is written ------------------


def _renamed(captured: dict, tmp: Path) -> list[str]:
    tensors = torch.load(captured["payload"], weights_only=True)["tensors"]
    tensors["other"] = tensors.pop(next(iter(tensors)))
    torch.save(tensors, tmp / "renamed.pt")
    return ["--update", str(tmp / "renamed.pt")]


def _reshaped(captured: dict, tmp: Path) -> list[str]:
    tensors = torch.load(captured["payload"], weights_only=True)["tensors"]
    name = next(iter(tensors))
    tensors[name] = tensors[name][:1]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "reshaped.safetensors"))
    return ["--update", str(tmp / "reshaped.safetensors")]


def _pickled(captured: dict, tmp: Path) -> list[str]:
    torch.save({"w": torch.zeros(1), "x": _Touch(tmp / "ran")}, tmp / "evil.pt")
    return ["--update", str(tmp / "evil.pt")]


def _truncated(captured: dict, tmp: Path) -> list[str]:
    (tmp / "cut.safetensors").write_bytes(captured["update"].read_bytes()[:-9])
    return ["--update", str(tmp / "cut.safetensors")]


def _other_base(captured: dict, tmp: Path) -> list[str]:
    base = torch.load(captured["base"], weights_only=True)
    base.pop(next(iter(base)))
    torch.save(base, tmp / "short.pt")
    return ["--update", str(captured["local"]), "--update-base", str(tmp / "short.pt")]


def _non_tensor(captured: dict, tmp: Path) -> list[str]:
    torch.save({"w": "text"}, tmp / "text.pt")
    return ["--update", str(tmp / "text.pt")]


def _integers(captured: dict, tmp: Path) -> list[str]:
    tensors = torch.load(captured["payload"], weights_only=True)["tensors"]
    tensors = {k: v.round().long() for k, v in tensors.items()}
    torch.save(tensors, tmp / "ints.pt")
    return ["--update", str(tmp / "ints.pt")]


def _other_checkpoint(captured: dict, tmp: Path) -> list[str]:
    model = build_model("mlp", num_classes=10, in_channels=3, image_size=(32, 32), seed=5)
    save_checkpoint(model, tmp / "other.pt", model="mlp")
    pair = ["--update", str(captured["local"]), "--update-base", str(captured["base"])]
    return [*pair, "--local-lr", str(LR), "--checkpoint", str(tmp / "other.pt")]


BAD = {
    "names": (_renamed, "update does not match the model's parameters"),
    "shapes": (_reshaped, "has shape (1, 3072) but the model expects"),
    "pickle": (_pickled, "not a tensors-only torch file"),
    "truncated": (_truncated, "not a readable safetensors file"),
    "missing": (lambda c, t: ["--update", str(t / "absent.safetensors")], "not found"),
    "folder": (lambda c, t: ["--update", str(t)], "is a folder"),
    "base names": (_other_base, "the base lacks"),
    "non-tensor": (_non_tensor, "'w' is a str, not a tensor"),
    "integers": (_integers, "has dtype torch.int64"),
    "checkpoint and base differ": (_other_checkpoint, "hold different weights"),
    "weight delta without lr": (
        lambda c, t: ["--update", str(c["local"]), "--update-base", str(c["base"])],
        "pass --local-lr",
    ),
    "batch sizes disagree": (
        lambda c, t: ["--update", str(c["update"]), "--batch-size", "2"],
        "num_samples 1 but --batch-size is 2",
    ),
    "kind against the file's": (
        lambda c, t: ["--update", str(c["update"]), "--update-kind", "weight_delta"],
        "says its kind is gradient but --update-kind is weight_delta",
    ),
    "truth of another batch": (
        lambda c, t: ["--update", str(c["update"]), "--truth", str(c["payload"])],
        "holds nothing under 'images'",
    ),
    "labels known without truth": (
        lambda c, t: ["--update", str(c["update"]), "--labels-known"],
        "--labels-known hands the true labels",
    ),
    "a flag of simulations": (
        lambda c, t: ["--update", str(c["update"]), "--defense", "prune:0.3"],
        "--defense does not apply to --update",
    ),
    "index": (lambda c, t: ["--update", str(c["update"]), "--index", "4"], "--index does not"),
    "users": (lambda c, t: ["--update", str(c["update"]), "--users", "2"], "--users does not"),
    "budget": (lambda c, t: ["--update", str(c["update"]), "--budget", "5"], "--budget does not"),
    "base without update": (
        lambda c, t: ["--update-base", str(c["base"])],
        "--update-base goes with --update FILE",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_before_any_work(
    captured: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    make, expected = BAD[case]
    bad = tmp_path / "bad"
    bad.mkdir()
    out = tmp_path / "run"
    assert cli_exit(["attack", *make(captured, bad), *RUN, "--out", str(out)]) == 2
    assert expected in one_line_error(capsys)
    assert not out.exists()
    assert not (bad / "ran").exists()  # the pickled payload never ran


# --- Ctrl-C -----------------------------------------------------------------------------------

MARKER = "gradleak-test: attack running"
# The real command, with an evaluation-side observer that announces on stderr once the
# optimisation loop has stepped (it is called every iteration, `log_every: 1`): from then on
# a signal lands inside the loop.
INTERRUPTED_CHILD = f"""
import sys

import gradleak.scenario.captured_run as captured_run
from gradleak.cli import main

attack_captured = captured_run.attack_captured


class Announcing:
    def __init__(self, attack):
        self._attack = attack

    def __getattr__(self, name):
        return getattr(self._attack, name)

    def reconstruct(self, *args, **kwargs):
        calls = 0

        def announce(iteration, losses, images):
            nonlocal calls
            calls += 1
            if calls == 2:
                print({MARKER!r}, file=sys.stderr, flush=True)

        kwargs.pop("observer", None)  # the command passes none of its own
        return self._attack.reconstruct(*args, observer=announce, **kwargs)


def announcing(view, update, attack, **kwargs):
    return attack_captured(view, update, Announcing(attack), **kwargs)


captured_run.attack_captured = announcing
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # a fresh process imports torch: about 5 s, more on a busy machine
def test_ctrl_c_keeps_the_partial_reconstruction(captured: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-c", INTERRUPTED_CHILD, "attack", "--update", str(captured["update"])]
    argv += ["--model", "mlp", "--attack", "ig", "--iterations", "100000", "--restarts", "1"]
    argv += ["--truth", str(captured["truth"]), "--out", str(out), "--threads", "1"]
    (tmp_path / "often.yaml").write_text("attack_options: {log_every: 1}\n")
    argv += ["--config", str(tmp_path / "often.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stderr is not None
    lines = []
    for line in child.stderr:  # the child writes nothing else to stderr before the marker
        lines.append(line)
        if MARKER in line:
            break
    child.send_signal(signal.SIGINT)
    stdout, rest = child.communicate(timeout=120)
    err = "".join(lines) + rest
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"interrupted: partial results written to {out}"
    assert "PSNR" in stdout
    metrics = _metrics(out)
    assert metrics["interrupted"] is True and 0 < metrics["iterations"] < 100000
    assert _recovered(out).shape == captured["images"].shape
