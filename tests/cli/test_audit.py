"""`gradleak audit` end to end: the verdict, the CI gate's exit codes, the files, the bad
inputs, an attack that fails and an interrupted audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradleak.core.errors import GradleakError
from gradleak.studies.audit import runner

from .running import cli_exit, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

# The analytic attack reads an MLP's first Linear layer exactly at batch 1: a fast audit
# whose undefended verdict is known.
ANALYTIC = ["--model", "mlp1-64", "--data", "cifar10", "--attacks", "analytic", "--budget", "60s"]


def _audit(out: Path, *extra: str) -> int:
    return cli_exit(
        ["audit", *ANALYTIC, "--samples", "2", "--out", str(out), "--no-progress", *extra]
    )


def test_gate_fails_the_undefended_setup_and_passes_the_defended_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = ["--fail-above", "recognisable=0.1", "--fail-above", "psnr=30"]
    assert _audit(tmp_path / "plain", *gate) == 1
    printed = capsys.readouterr().out
    assert "VERDICT: LEAKS" in printed and "FAIL: recognisable" in printed
    record = json.loads((tmp_path / "plain" / "audit.json").read_text())
    assert record["verdict"]["failed"] == ["recognisable=0.1", "psnr=30"]
    analytic = next(a for a in record["attacks"] if a["attack"] == "analytic")
    # Exact recovery: every image at the PSNR ceiling, leakage 1.
    assert analytic["scores"]["psnr"] == pytest.approx(100.0)
    assert analytic["scores"]["leakage"] == pytest.approx(1.0, abs=1e-6)
    assert record["overall"]["recognisable"] == 1.0 and record["overall"]["items"] == 2
    assert {a["attack"]: a["status"] for a in record["attacks"]} == {
        "labels": "skipped",
        "analytic": "ran",
        "spear": "skipped",
        "dlg": "skipped",
        "ig": "skipped",
    }
    for name in ("audit.md", "audit.html", "worst.png"):
        assert (tmp_path / "plain" / name).stat().st_size > 0
    assert "LEAKS" in (tmp_path / "plain" / "audit.html").read_text()

    assert _audit(tmp_path / "dp", *gate, "--defense", "dpsgd:1.0:1.0") == 0
    defended = json.loads((tmp_path / "dp" / "audit.json").read_text())
    assert defended["verdict"]["passed"] and defended["overall"]["recognisable"] == 0.0
    assert "pass: recognisable" in capsys.readouterr().out


def test_spear_audits_a_batch_of_an_mlp_exactly(tmp_path: Path) -> None:
    out = tmp_path / "spear"
    argv = ["audit", "--model", "mlp1-64", "--data", "cifar10", "--attacks", "spear"]
    argv += ["--batch-size", "4", "--samples", "1", "--budget", "60s", "--no-progress"]
    assert cli_exit([*argv, "--out", str(out)]) == 0
    record = json.loads((out / "audit.json").read_text())
    spear = next(a for a in record["attacks"] if a["attack"] == "spear")
    assert spear["status"] == "ran"
    assert spear["options"]["max_samples"] == 5_000
    # The whole batch of 4, each image exact.
    assert spear["scores"]["psnr"] == pytest.approx(100.0, abs=0.5)
    assert record["overall"]["recognisable"] == 1.0 and record["overall"]["items"] == 4


def test_an_optimisation_attack_keeps_to_its_budget(tmp_path: Path) -> None:
    out = tmp_path / "ig"
    code = cli_exit(
        ["audit", "--model", "lenet", "--data", "cifar10", "--attacks", "ig", "--budget", "12s",
         "--samples", "2", "--device", "cpu", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((out / "audit.json").read_text())
    ig = next(a for a in record["attacks"] if a["attack"] == "ig")
    assert ig["status"] in ("ran", "stopped") and ig["iterations"] >= runner.MIN_ITERATIONS["adam"]
    assert ig["options"]["label_strategy"] == "analytic"
    assert record["overall"]["labels"] == 1.0  # iDLG's label is exact at batch 1
    # The whole audit, setting up and writing included, within the budget plus the slack of
    # one deadline check and the scoring.
    assert record["seconds"] < 12 * 1.5


def test_an_attack_that_fails_is_reported_and_the_audit_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = runner._reconstruct

    def breaking(attack, samples, seed, deadline):  # noqa: ANN001, ANN202
        if attack.name == "dlg":
            raise RuntimeError("the model broke")
        return real(attack, samples, seed, deadline)

    monkeypatch.setattr(runner, "_reconstruct", breaking)
    code = cli_exit(
        ["audit", "--model", "mlp1-64", "--data", "cifar10", "--attacks", "dlg,analytic",
         "--budget", "20s", "--samples", "1", "--out", str(tmp_path / "a"), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((tmp_path / "a" / "audit.json").read_text())
    status = {a["attack"]: (a["status"], a["reason"]) for a in record["attacks"]}
    assert status["dlg"] == ("failed", "RuntimeError: the model broke")
    assert status["analytic"][0] == "ran"
    assert "dlg failed: RuntimeError: the model broke" in capsys.readouterr().out


def test_an_interrupted_audit_writes_what_it_attacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner._reconstruct

    def interrupted(attack, samples, seed, deadline):  # noqa: ANN001, ANN202
        if attack.name == "dlg":
            raise KeyboardInterrupt
        return real(attack, samples, seed, deadline)

    monkeypatch.setattr(runner, "_reconstruct", interrupted)
    out = tmp_path / "a"
    code = cli_exit(
        ["audit", "--model", "mlp1-64", "--data", "cifar10", "--budget", "20s", "--samples", "1",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 130
    record = json.loads((out / "audit.json").read_text())
    assert record["interrupted"]
    status = {a["attack"]: a["status"] for a in record["attacks"]}
    assert status == {
        "labels": "ran",
        "analytic": "ran",
        "spear": "skipped",
        "dlg": "skipped",
        "ig": "skipped",
    }
    reasons = {a["attack"]: a.get("reason") for a in record["attacks"]}
    # One that would not have run says why, not that the interrupt came first.
    assert "analytic attack reads it" in str(reasons["spear"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "1s"], "too small"),
        (["--budget", "soon"], "not a duration"),
        (["--fail-above", "accuracy=0.5"], "unknown key 'accuracy'"),
        (["--fail-above", "psnr"], "KEY=VALUE"),
        (["--attacks", "rgap"], "not an attack the audit runs"),
        (["--samples", "0"], "--samples must be in"),
        (["--samples", "5000"], "--samples must be in"),
        (["--prior", "gan"], "gan"),
        (["--device", "cuda"], "cuda"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["audit", "--model", "mlp1-64", "--data", "cifar10", "--out", str(tmp_path / "a")]
    assert cli_exit([*argv, *extra]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "a" / "audit.json").exists()


def test_data_paths_and_sizes_are_checked_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "a")
    assert (
        cli_exit(["audit", "--model", "lenet", "--data", str(tmp_path / "none.xyz"), "--out", out])
        == 2
    )
    one_line_error(capsys)
    # 8 bundled images hold 2 updates of 4, not 3.
    argv = ["audit", "--model", "lenet", "--data", "cifar10", "--batch-size", "4", "--samples", "3"]
    assert cli_exit([*argv, "--out", out]) == 2
    assert "images" in one_line_error(capsys)
    argv = ["audit", "--model", "lenet", "--data", "cifar10", "--data-root", str(tmp_path)]
    assert cli_exit([*argv, "--data-root", str(tmp_path / "x"), "--out", out]) == 2
    one_line_error(capsys)


def test_the_budget_check_refuses_a_spent_budget() -> None:
    settings = _settings()
    runner._check_budget(runner._Clock(10.0), settings, 0.1)  # 10 s: time is left
    with pytest.raises(GradleakError, match="--budget 2s is too small: simulating .* took 0.1 s"):
        runner._check_budget(runner._Clock(2.0), settings, 0.1)  # the reserve takes it all


def _settings():  # noqa: ANN202
    from gradleak.scenario.config import RunConfig
    from gradleak.studies.audit.settings import AuditSettings

    return AuditSettings(run=RunConfig(attack="ig"), budget=2.0, samples=1)


def test_an_audit_that_measured_nothing_fails_its_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The analytic attack needs a first Linear layer; LeNet starts with a convolution.
    argv = ["audit", "--model", "lenet", "--data", "cifar10", "--attacks", "analytic"]
    code = cli_exit(
        [*argv, "--fail-above", "psnr=20", "--out", str(tmp_path / "a"), "--no-progress"]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "VERDICT: NOT MEASURED" in out and "FAIL: no attack produced psnr" in out


def test_gate_keys_must_fit_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["audit", "--model", "lenet", "--data", "cifar10", "--fail-above", "exact=0.5"]
    assert cli_exit([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "has no exact score" in one_line_error(capsys)


def test_a_text_audit_scores_sentences_against_other_sentences(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("rouge_score")
    out = tmp_path / "text"
    code = cli_exit(
        ["audit", "--model", "bert-tiny", "--data", "bundled", "--attacks", "tokens",
         "--samples", "2", "--budget", "60s", "--fail-above", "rouge1=1.01",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((out / "audit.json").read_text())
    assert [a["attack"] for a in record["attacks"]] == ["tokens", "span"]
    assert len(record["items"]) == 2 and all(i["rouge1"] is not None for i in record["items"])
    assert "ROUGE-1" in (out / "audit.md").read_text()


def _faces(folder: Path, people: int = 2, each: int = 2) -> Path:
    """A folder of class sub-folders holding small random-coloured PNG 'faces'."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for person in range(people):
        (folder / f"person_{person}").mkdir(parents=True)
        for i in range(each):
            pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"person_{person}" / f"{i}.png")
    return folder


def test_your_own_model_on_your_own_data(tmp_path: Path) -> None:
    faces = _faces(tmp_path / "faces")
    model = str(Path(__file__).parents[2] / "examples" / "faces_model.py") + ":make_model"
    out = tmp_path / "audit"
    code = cli_exit(
        ["audit", "--model", model, "--model-arg", "num_classes=2", "--model-arg", "width=4",
         "--data", str(faces), "--normalize", "auto", "--attacks", "ig", "--budget", "15s",
         "--samples", "2", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    record = json.loads((out / "audit.json").read_text())
    assert record["run"]["dataset"] == "folder" and record["run"]["model_args"] == {
        "num_classes": 2,
        "width": 4,
    }
    ig = next(a for a in record["attacks"] if a["attack"] == "ig")
    assert ig["status"] in ("ran", "stopped") and len(record["items"]) == 2
    # The model takes 32×32 images: the 40×40 files were resized to it.
    assert "make_model" in record["setup"]


def test_a_tensor_file_with_labels_beyond_the_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    data = tmp_path / "x.npz"
    labels = np.array([0, 1, 0, 5])
    np.savez(data, images=np.zeros((4, 3, 32, 32), np.uint8), labels=labels)
    model = str(Path(__file__).parents[2] / "examples" / "faces_model.py") + ":make_model"
    argv = ["audit", "--model", model, "--model-arg", "num_classes=2", "--data", str(data)]
    assert cli_exit([*argv, "--samples", "4", "--out", str(tmp_path / "a")]) == 2
    assert "classes" in one_line_error(capsys)
    assert not (tmp_path / "a").exists()


def test_one_sample_updates_give_every_label_away(tmp_path: Path) -> None:
    # iDLG's reading is exact for one sample: the one negative last-layer bias gradient.
    out = tmp_path / "a"
    argv = ["audit", "--model", "lenet", "--data", "cifar10", "--attacks", "labels"]
    assert cli_exit([*argv, "--samples", "4", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "audit.json").read_text())
    assert record["overall"]["labels"] == 1.0 and record["verdict"]["level"] == "LABELS LEAK"
