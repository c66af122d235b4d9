"""Image lists: CSV and JSON files of image paths and labels (`--dataset list`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import load_image
from gradleak.data.listing import load_image_list, read_image_list
from gradleak.data.loading import infer_dataset, input_shape, load_dataset, open_images


def _png(path: Path, pixels: np.ndarray) -> Path:
    """Write H×W×3 uint8 `pixels` as a (lossless) PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _pixels(seed: int, height: int = 6, width: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _chw(pixels: np.ndarray) -> torch.Tensor:
    """The float C×H×W a loader must return for `pixels` at their own size."""
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 255


def _message(error: pytest.ExceptionInfo[GradleakError]) -> str:
    text = str(error.value)
    assert "\n" not in text and text
    return text


@pytest.fixture
def images(tmp_path: Path) -> dict[str, np.ndarray]:
    """Three 6×5 images: two in sub-folders of the list's folder, one elsewhere."""
    written = {"cats/a.png": _pixels(0), "dogs/b.png": _pixels(1), "c.png": _pixels(2)}
    for name, pixels in written.items():
        _png(tmp_path / "data" / name, pixels)
    return written


def test_csv_with_header_blank_lines_names_and_an_absolute_path(
    tmp_path: Path, images: dict[str, np.ndarray]
) -> None:
    absolute = (tmp_path / "data" / "c.png").resolve()
    listing = tmp_path / "data" / "faces.csv"
    listing.write_text(
        f"path,label\ncats/a.png,zebra\n\n  dogs/b.png , apple \n{absolute},zebra\n\n"
    )
    source = load_image_list(listing, (6, 5), 3)
    assert source.class_names == ("apple", "zebra")  # the sorted distinct names
    assert [y for _, y in source.samples] == [1, 0, 1]  # the file's order
    for i, name in enumerate(["cats/a.png", "dogs/b.png", "c.png"]):
        x, _ = source[i]
        assert torch.equal(x, _chw(images[name]))  # PNG is lossless: exactly what was written


def test_csv_without_header_integer_labels(tmp_path: Path, images: dict[str, np.ndarray]) -> None:
    listing = tmp_path / "data" / "list.csv"
    listing.write_text("cats/a.png,2\ndogs/b.png,0\n")
    samples, names = read_image_list(listing)
    assert names == ("0", "1", "2")  # 0..K-1, K the largest label + 1
    assert [(p.name, y) for p, y in samples] == [("a.png", 2), ("b.png", 0)]


def test_json_objects_and_pairs(tmp_path: Path, images: dict[str, np.ndarray]) -> None:
    objects = tmp_path / "data" / "objects.json"
    objects.write_text(
        json.dumps([{"path": "dogs/b.png", "label": "dog"}, {"path": "c.png", "label": "cat"}])
    )
    pairs = tmp_path / "data" / "pairs.JSON"  # any letter case
    pairs.write_text(json.dumps([["dogs/b.png", 1], ["c.png", 0]]))
    by_name = load_image_list(objects, (6, 5), 3)
    by_index = load_image_list(pairs, (6, 5), 3)
    assert by_name.class_names == ("cat", "dog") and by_index.class_names == ("0", "1")
    for source in (by_name, by_index):
        assert [y for _, y in source.samples] == [1, 0]
        assert torch.equal(source[0][0], _chw(images["dogs/b.png"]))
        assert torch.equal(source[1][0], _chw(images["c.png"]))


def test_images_are_resized_like_image_files(tmp_path: Path, images: dict[str, np.ndarray]) -> None:
    listing = tmp_path / "data" / "l.csv"
    listing.write_text("cats/a.png,x\n")
    opened = open_images("list", listing, image_size=4)
    x, labels = opened.pixels([0])
    assert x.shape == (1, 3, 4, 4) and labels.tolist() == [0]
    assert torch.equal(x[0], load_image(tmp_path / "data" / "cats/a.png", (4, 4), 3))
    grey = load_dataset("list", listing, size=(4, 4), channels=1)[0][0]
    assert torch.equal(grey, load_image(tmp_path / "data" / "cats/a.png", (4, 4), 1))
    assert opened.class_names == ("x",)
    assert opened.description == f"list {listing}"
    assert opened.stats.name == "imagenet"  # the photo statistics by default
    assert input_shape("list", 4) == (3, (4, 4))
    assert input_shape("list") == (3, (32, 32))


def test_images_are_decoded_only_when_read(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    listing = tmp_path / "l.csv"
    listing.write_text("broken.png,0\nbroken.png,1\n")
    source = load_image_list(listing, (4, 4), 3)  # no decoding yet
    assert len(source) == 2
    with pytest.raises(GradleakError, match="could not be decoded") as error:
        source[0]
    _message(error)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("l.csv", "a.png,cat\na.png,1\n", "mixes class indices and class names"),
        ("l.csv", "a.png,-1\n", "negative label -1"),
        ("l.csv", "missing.png,0\n", "line 1: image file .*missing.png does not exist"),
        ("l.csv", "a.png,0\na.png,0,extra\n", "line 2: expected 'path,label'"),
        ("l.csv", "a.png\n", "line 1: expected 'path,label'"),
        ("l.csv", "path,label\n\n", "names no images"),
        ("l.json", "[{'path': 1}]", "not valid JSON"),
        ("l.json", '{"path": "a.png", "label": 0}', "holds a JSON dict"),
        ("l.json", '[{"path": "a.png"}]', "entry 0: expected"),
        ("l.json", '[["a.png", 0], ["a.png", 1.5]]', "entry 1: label 1.5 is neither"),
        ("l.json", '[["a.png", true]]', "entry 0: the path must be a string"),
        ("l.json", "[]", "names no images"),
        ("l.txt", "a.png,0\n", "must be a .csv or .json file"),
    ],
)
def test_bad_lists_are_one_line_errors(tmp_path: Path, name: str, text: str, match: str) -> None:
    _png(tmp_path / "a.png", _pixels(0))
    (tmp_path / name).write_text(text)
    with pytest.raises(GradleakError, match=match) as error:
        load_image_list(tmp_path / name, (4, 4), 3)
    _message(error)


def test_missing_list_folder_split_and_root_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    cases = [
        (lambda: load_image_list(tmp_path / "none.csv", (4, 4), 3), "does not exist"),
        (lambda: load_image_list(tmp_path, (4, 4), 3), "a folder of class sub-folders is"),
        (lambda: load_image_list(tmp_path / "d.csv", (4, 4), 3), "d.csv is a folder"),
        (
            lambda: load_dataset("list", tmp_path / "l.csv", "train", size=(4, 4), channels=3),
            "image lists have no splits",
        ),
        (lambda: open_images("list", None), "--data-root DIR is required"),
    ]
    for call, match in cases:
        with pytest.raises(GradleakError, match=match) as error:
            call()
        _message(error)


def test_infer_dataset_from_the_path(tmp_path: Path) -> None:
    files = {"a.csv": "list", "b.JSON": "list", "c.npz": "tensors", "d.pt": "tensors"}
    for name, dataset in files.items():
        (tmp_path / name).write_text("")
        assert infer_dataset(tmp_path / name) == dataset
    assert infer_dataset(tmp_path) == "folder"
    (tmp_path / "e.txt").write_text("")
    for path, match in (
        (tmp_path / "e.txt", "not one of the forms"),
        (tmp_path / "no.csv", "does not exist"),
    ):
        with pytest.raises(GradleakError, match=match) as error:
            infer_dataset(path)
        assert ".csv/.json image list or a .npz/.pt tensor file" in _message(error)
