"""Every cell of a sweep is checked before any runs: one line names the cell and its lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.core.errors import GradleakError
from gradleak.studies.sweep.spec import parse_spec, read_spec

# The bundled CIFAR-10 test images: indices 0..7.
BUNDLED = 8


def _refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(GradleakError) as error:
        read_spec(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}, line")
    return message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            "attacks: [dlg]\nimages: [0, 7,\n  8]\n",
            [
                "line 3:",
                "cell attack dlg, model lenet, defense none, protocol fedsgd, image 8",
                "image 8 lies past the end of bundled CIFAR-10 test images, which has 8 images",
                "start images at 7 or less",
            ],
            id="image past the data",
        ),
        pytest.param(
            "attacks: [dlg]\nbase: {batch_size: 4}\nimages: [0, 4, 5]\n",
            ["line 3:", "image 5,", "images 5..8 lie past the end", "start images at 4 or less"],
            id="batch runs past the data",
        ),
        pytest.param(
            "attacks: [dlg]\nbase: {batch_size: 16}\n",
            ["line 2:", "batch_size 16 needs 16 images", "has 8; use batch_size 8 or less"],
            id="batch larger than the data",
        ),
        pytest.param(
            "attacks: [dlg]\nbase: {batch_size: 3}\nprotocols:\n  - fedsgd\n"
            "  - {protocol: fedsgd, users: 3}\n",
            ["lines 2, 5:", "protocol fedsgd users=3", "3 users × batch_size 3 need 9 images"],
            id="users times batch larger than the data",
        ),
        pytest.param(
            "attacks:\n  - dlg\n  - analytic\nmodels: [mlp]\nprotocols: [fedsgd, fedavg]\n",
            [
                "lines 3, 5:",
                "attack analytic, model mlp, defense none, protocol fedavg",
                "reads gradients but the update is a weight difference",
            ],
            id="attack cannot read the protocol",
        ),
        pytest.param(
            "attacks: [analytic]\nmodels: [mlp, lenet]\n",
            ["lines 1, 2:", "model lenet", "does not read the flattened image; use an mlp"],
            id="analytic needs an mlp",
        ),
        pytest.param(
            "attacks: [rgap]\nmodels:\n  - cnn6\n  - mlp\n",
            ["lines 1, 4:", "model mlp", "R-GAP cannot attack", "cnn6"],
            id="rgap needs a plain conv stack",
        ),
        pytest.param(
            "attacks: [rgap]\nmodels: [cnn6]\nbase: {batch_size: 2}\n",
            ["lines 1, 2:", "recovers one sample but the batch has 2; use batch_size 1"],
            id="rgap needs batch 1",
        ),
        pytest.param(
            "attacks: [dlg]\nmodels: [lenet, resnet18]\n",
            ["line 2:", "model resnet18", "resnet18 needs images of at least 64×64"],
            id="model that cannot take the images",
        ),
        pytest.param(
            "attacks: [dlg]\nbase: {dataset: mnist}\n",
            ["line 2:", "dataset 'mnist' is read from disk"],
            id="data that is not there",
        ),
    ],
)
def test_a_cell_that_cannot_run_is_named_with_its_lines(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    message = _refusal(tmp_path, text)
    for fragment in fragments:
        assert fragment in message


def test_the_refusal_counts_every_cell_that_cannot_run(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "attacks: [dlg, analytic]\nmodels: [lenet, mlp]\nimages: '6-9'\n")
    # analytic × lenet: its 4 cells; every other setting: images 8 and 9.
    assert message.endswith("(10 of 16 cells cannot run)")
    assert "cell attack dlg, model lenet, defense none, protocol fedsgd, image 8" in message
    assert "line 3:" in message  # a range of images is one line


def test_cells_of_a_spec_without_lines_are_named_without_lines() -> None:
    with pytest.raises(GradleakError) as error:
        parse_spec({"attacks": ["dlg"], "images": [BUNDLED]}, "study x")
    assert str(error.value).startswith("study x: cell attack dlg, model lenet")


def test_a_sweep_whose_cells_all_run_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("attacks: [dlg, analytic]\nmodels: [mlp]\nimages: '0-7'\n")
    assert len(read_spec(path).cells()) == 2 * BUNDLED
    path.write_text("attacks: [rgap]\nmodels: [cnn6]\nbase: {users: 2}\nimages: '0-6'\n")
    assert len(read_spec(path).cells()) == 7  # two users from each start image: up to 7


def test_a_spec_with_too_many_cells_is_refused_before_they_are_listed(tmp_path: Path) -> None:
    message = _refusal_of(tmp_path, "attacks: [dlg]\nimages: 0-999999999999\n")
    assert "line 2" in message and "more than 1000000 images" in message
    message = _refusal_of(tmp_path, "attacks: [dlg, idlg]\nimages: 0-999999\n")
    assert "the sweep has 2000000 cells, more than 1000000" in message


def _refusal_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(GradleakError) as error:
        read_spec(path)
    return str(error.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("attacks: [dlg]\nsuccess_psnr: .nan\n", "'success_psnr' must be a positive number"),
        ("attacks: [dlg]\nsuccess_psnr: .inf\n", "'success_psnr' must be a positive number"),
        ("attacks: [dlg]\nseeds: [9223372036854775808]\n", "must be at most"),
        ("attacks: [dlg]\nname: ../elsewhere\n", "'name' must be a plain folder name"),
        ("attacks: [dlg]\nname: {a: 1}\n", "'name' must be a plain folder name"),
        ("attacks: [dlg]\nbase: []\n", "'base' must be a mapping"),
    ],
)
def test_values_that_would_misbehave_later_are_refused(
    tmp_path: Path, text: str, fragment: str
) -> None:
    message = _refusal_of(tmp_path, text)
    assert "line 2" in message and fragment in message


def test_lbfgs_cells_beyond_the_time_bound_are_refused_and_the_total_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradleak.attacks.gradient_matching as gradient_matching

    # 10 ms a trial in every stacked evaluation (stacking saves nothing here): a DLG trial
    # (300 steps × up to 25 evaluations) at most 75 s.
    monkeypatch.setattr(
        gradient_matching, "measure_evaluation_seconds", lambda _p, images, _i: 0.01 * len(images)
    )
    message = _refusal(tmp_path, "attacks: [ig, dlg]\noptions:\n  dlg: {restarts: 100}\n")
    assert message.startswith(f"{tmp_path / 'spec.yaml'}, lines 1, 3: cell attack dlg")
    assert "above the 1 h bound" in message and "48 or fewer" in message

    notices: list[str] = []
    spec = parse_spec({"attacks": ["dlg", "ig"], "images": "0-7"}, notice=notices.append)
    assert len(spec.cells()) == 16
    assert notices == [
        "the sweep's 8 L-BFGS cell(s) may take up to 10 min one after another (at most 75 s "
        "each; trials that converge stop sooner)"
    ]
    notices.clear()
    parse_spec({"attacks": ["dlg"], "images": "0-6"}, notice=notices.append)
    assert notices == []  # under ten minutes: nothing to tell
