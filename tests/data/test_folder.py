"""Class-per-sub-folder image sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import gradleak.data.folder as folder_module
from gradleak.core.errors import GradleakError
from gradleak.data import FolderImageSource, load_dataset, load_image_folder, stack


def _png(path: Path, value: int, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _png(tmp_path / "zebra" / "b.png", 30)
    _png(tmp_path / "zebra" / "a.png", 20)
    _png(tmp_path / "apple" / "one.png", 10)
    _png(tmp_path / "Mango" / "deep" / "x.PNG", 40)  # nested, upper-case suffix
    (tmp_path / "apple" / "readme.txt").write_text("not an image")
    (tmp_path / "apple" / ".hidden.png").write_bytes(b"resource fork, not an image")
    (tmp_path / "empty").mkdir()  # no images: not a class
    (tmp_path / "loose.png").write_bytes(b"files at the top level are not classes")
    return tmp_path


def test_classes_sorted_and_labels(tree: Path) -> None:
    source = load_image_folder(tree, (8, 8), 3)
    assert isinstance(source, FolderImageSource)
    assert source.class_names == ("Mango", "apple", "zebra")  # plain sorted names
    names = [(p.relative_to(tree).as_posix(), y) for p, y in source.samples]
    assert names == [
        ("Mango/deep/x.PNG", 0),
        ("apple/one.png", 1),
        ("zebra/a.png", 2),
        ("zebra/b.png", 2),
    ]
    assert len(source) == 4
    x, y = source[3]
    assert y == 2 and x.shape == (3, 8, 8)
    assert torch.allclose(x, torch.full((3, 8, 8), 30 / 255), atol=1 / 255)
    images, labels = stack(source, [2, 0])
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [2, 0]


def test_images_are_loaded_only_on_access(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = folder_module.load_image

    def counting(path: Path, size: tuple[int, int], channels: int) -> torch.Tensor:
        calls.append(path)
        return real(path, size, channels)

    monkeypatch.setattr(folder_module, "load_image", counting)
    source = load_image_folder(tree, (8, 8), 1)
    assert calls == []
    x, _ = source[1]
    assert calls == [tree / "apple" / "one.png"] and x.shape == (1, 8, 8)


def test_broken_file_fails_at_access_not_at_indexing(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "good.png", 1)
    (tmp_path / "a" / "z_bad.jpg").write_bytes(b"garbage")
    source = load_image_folder(tmp_path, (4, 4), 3)
    assert len(source) == 2
    source[0]
    with pytest.raises(GradleakError, match="z_bad.jpg could not be decoded"):
        source[1]
    with pytest.raises(GradleakError, match=r"0\.\.1"):
        source[2]


def test_empty_or_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="no class sub-folders with images"):
        load_image_folder(tmp_path, (8, 8), 3)
    _png(tmp_path / "top.png", 5)
    (tmp_path / "cls").mkdir()
    with pytest.raises(GradleakError, match="no class sub-folders with images") as err:
        load_image_folder(tmp_path, (8, 8), 3)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(GradleakError, match="does not exist"):
        load_image_folder(tmp_path / "absent", (8, 8), 3)
    _png(tmp_path / "cls" / "a.png", 5)
    with pytest.raises(GradleakError, match="channels"):
        load_image_folder(tmp_path, (8, 8), 2)


def test_load_dataset_folder(tree: Path) -> None:
    source = load_dataset("folder", tree, size=(6, 6), channels=3)
    assert len(source) == 4 and source[0][0].shape == (3, 6, 6)
    with pytest.raises(GradleakError, match="size"):
        load_dataset("folder", tree)
    with pytest.raises(GradleakError, match="no splits"):
        load_dataset("folder", tree, "train", size=(6, 6), channels=3)


def test_real_flowers(shared_data: Path) -> None:
    source = load_image_folder(shared_data / "flowers17", (64, 64), 3)
    assert len(source) == 68 and len(source.class_names) == 17
    assert source.class_names[0] == "00_daffodil" and source.class_names[-1] == "16_pansy"
    x, y = source[67]
    assert y == 16 and x.shape == (3, 64, 64)
    assert 0.0 <= float(x.min()) < float(x.max()) <= 1.0
