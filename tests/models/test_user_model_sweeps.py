"""Factory models in sweep specs: `models` entries with their `model_args`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.studies.sweep.spec import parse_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "faces_model.py"
FACES = f"{EXAMPLE}:make_model"


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    rng = np.random.default_rng(1)
    for person in ("ada", "bob"):
        (root / person).mkdir(parents=True)
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / person / "0.png")
    return root


def _spec(faces: Path, models: list[object], **base: object) -> dict[str, object]:
    return {
        "attacks": ["idlg"],
        "models": models,
        "base": {"dataset": "folder", "data_root": str(faces), **base},
        "images": [0],
    }


def test_entries_give_labels_and_run_settings(faces: Path) -> None:
    entry = {"model": FACES, "model_args": {"width": 2, "image_size": 16}}
    spec = parse_spec(_spec(faces, [FACES, entry], model_args={"width": 3, "num_classes": 2}))
    plain, with_args = spec.models
    assert with_args == f"{FACES} width=2 image_size=16"
    cells = {cell.model: cell for cell in spec.cells()}
    # base's model_args reach every factory; an entry's win, key by key.
    assert spec.run_config(cells[plain], Path("o")).model_args == {"width": 3, "num_classes": 2}
    config = spec.run_config(cells[with_args], Path("o"))
    assert config.model == FACES
    assert config.model_args == {"width": 2, "num_classes": 2, "image_size": 16}
    assert spec.to_dict()["model_settings"] == {
        with_args: {"model": FACES, "model_args": {"width": 2, "image_size": 16}}
    }


@pytest.mark.parametrize(
    ("models", "says"),
    [
        ([{"model": FACES, "args": {}}], "models entry sets 'args'"),
        ([{"model": FACES, "model_args": [1]}], "model_args must be a mapping"),
        ([{"model": "lenet", "model_args": {"w": 1}}], "'lenet' is a built-in model"),
        ([{"model": "nonsense"}], "models entry 'nonsense' is not a model"),
        ([FACES, {"model": FACES}], "models repeat a value"),
        ([f"{EXAMPLE}:missing"], "has no attribute 'missing'"),
        ([{"model": FACES, "model_args": {"image_size": 6}}], "raised ValueError"),
    ],
)
def test_bad_entries_are_refused_before_any_cell_runs(
    faces: Path, models: list[object], says: str
) -> None:
    with pytest.raises(GradleakError, match=says):
        parse_spec(_spec(faces, models))


def test_base_model_args_with_a_built_in_model_name_the_cell(faces: Path) -> None:
    with pytest.raises(GradleakError, match="cell attack idlg, model lenet.*built-in model"):
        parse_spec(_spec(faces, ["lenet", FACES], model_args={"width": 2}))


def test_an_edited_model_file_is_a_new_cell(tmp_path: Path) -> None:
    from gradleak.scenario.config import RunConfig
    from gradleak.studies.cells import described_config

    source = tmp_path / "net.py"
    source.write_text("from torch import nn\n\ndef make():\n    return nn.Linear(4, 2)\n")
    config = RunConfig(model=f"{source}:make")
    before = described_config(config)
    assert before["model_source"] and config.result_settings()["model_source"]
    source.write_text("from torch import nn\n\ndef make():\n    return nn.Linear(4, 3)\n")
    assert described_config(config)["model_source"] != before["model_source"]
    assert "model_source" not in described_config(RunConfig(model="lenet"))
