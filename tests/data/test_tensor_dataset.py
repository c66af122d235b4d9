"""Tensor files: images and labels in a .npz or .pt (`--dataset tensors`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.core.errors import GradleakError
from gradleak.data import load_image
from gradleak.data.loading import input_shape, load_dataset, open_images
from gradleak.data.tensors import load_tensor_file, read_tensor_file, tensor_pixels

# Four 7×5 colour images, N×C×H×W, and their labels.
IMAGES = np.random.default_rng(0).integers(0, 256, (4, 3, 7, 5), dtype=np.uint8)
LABELS = np.array([2, 0, 1, 2])


def _npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)
    return path


def _message(error: pytest.ExceptionInfo[GradleakError]) -> str:
    text = str(error.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize(
    "layout",
    [
        lambda x: x,  # N×C×H×W
        lambda x: x.transpose(0, 2, 3, 1),  # N×H×W×C
    ],
    ids=["nchw", "nhwc"],
)
def test_npz_pixels_labels_and_class_names(tmp_path: Path, layout) -> None:
    path = _npz(
        tmp_path / "x.npz",
        images=layout(IMAGES),
        labels=LABELS,
        class_names=np.array(["cat", "dog", "emu"]),
    )
    source = load_tensor_file(path, (7, 5), 3)
    assert source.class_names == ("cat", "dog", "emu") and len(source) == 4
    for i in range(4):
        x, y = source[i]
        assert torch.equal(x, torch.from_numpy(IMAGES[i]).float() / 255)
        assert y == LABELS[i]


def test_grey_n_h_w_images_and_default_class_names(tmp_path: Path) -> None:
    grey = IMAGES[:, 0]
    path = _npz(tmp_path / "g.npz", images=grey, labels=np.array([0, 3, 1, 1]))
    source = load_dataset("tensors", path, size=(7, 5), channels=1)
    assert source.class_names == ("0", "1", "2", "3")  # 0..K-1, K the largest label + 1
    assert torch.equal(source[1][0], torch.from_numpy(grey[1:2]).float() / 255)
    colour = load_dataset("tensors", path, size=(7, 5), channels=3)[1][0]
    assert torch.equal(colour, torch.from_numpy(grey[1:2]).float().div(255).expand(3, -1, -1))


def test_pt_float_images_keep_their_values(tmp_path: Path) -> None:
    floats = torch.from_numpy(IMAGES).double() / 255 * 0.999  # not multiples of 1/255
    torch.save(
        {"images": floats, "labels": torch.tensor(LABELS), "class_names": ["a", "b", "c"]},
        tmp_path / "x.pt",
    )
    source = load_tensor_file(tmp_path / "x.pt", (7, 5), 3)
    assert source.class_names == ("a", "b", "c")
    for i in range(4):
        assert torch.equal(source[i][0], floats[i].float())
    # A colour float image made grey: the ITU-R 601 luma Pillow uses for 8-bit images.
    grey = load_tensor_file(tmp_path / "x.pt", (7, 5), 1)[2][0]
    luma = (0.299 * floats[2, 0] + 0.587 * floats[2, 1] + 0.114 * floats[2, 2]).float()
    assert grey.shape == (1, 7, 5)
    assert torch.allclose(grey[0], luma, atol=1e-6)


def test_resizing_matches_the_same_pixels_read_from_an_image_file(tmp_path: Path) -> None:
    path = _npz(tmp_path / "x.npz", images=IMAGES, labels=LABELS)
    png = tmp_path / "x.png"
    Image.fromarray(IMAGES[3].transpose(1, 2, 0)).save(png)
    for channels in (3, 1):
        for size in ((4, 4), (12, 12), (3, 9)):
            x = load_tensor_file(path, size, channels)[3][0]
            assert x.shape == (channels, *size)
            assert torch.equal(x, load_image(png, size, channels))
    opened = open_images("tensors", path, image_size=16)
    images, labels = opened.pixels([0, 3])
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == [2, 2]
    assert opened.description == f"tensor file {path}"
    assert opened.stats.name == "imagenet"
    assert input_shape("tensors", 16) == (3, (16, 16))


def test_float_images_are_resized_within_the_pixel_box() -> None:
    image = np.zeros((3, 8, 8), dtype=np.float32)
    image[:, :, 4:] = 1.0  # a hard edge: bicubic resizing overshoots it
    x = tensor_pixels(image, (5, 5), 3)
    assert x.shape == (3, 5, 5)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert float(x[:, :, 0].max()) == 0 and float(x[:, :, -1].min()) == 1


class _Payload:
    """Runs code when unpickled: a file from elsewhere must never get to do that."""

    marker = Path()

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_pickled_object_in_a_pt_runs_nothing_and_is_one_line(tmp_path: Path) -> None:
    payload = _Payload()
    payload.marker = tmp_path / "ran"
    torch.save(
        {"images": torch.zeros(1, 3, 2, 2), "labels": torch.zeros(1), "x": payload},
        tmp_path / "evil.pt",
    )
    with pytest.raises(GradleakError, match="not a plain .pt of arrays") as error:
        read_tensor_file(tmp_path / "evil.pt")
    _message(error)
    assert not (tmp_path / "ran").exists()


def _bad_npz(tmp_path: Path, **arrays: object) -> Path:
    return _npz(tmp_path / "bad.npz", **{"images": IMAGES, "labels": LABELS, **arrays})


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": IMAGES[0, 0]}, r"images have shape \(7, 5\)"),
        ({"images": np.zeros((4, 5, 7, 7), np.uint8)}, r"images have shape \(4, 5, 7, 7\)"),
        ({"images": np.zeros((0, 3, 7, 5), np.uint8), "labels": LABELS[:0]}, "at least one"),
        ({"images": IMAGES.astype(np.int32)}, "images are int32; give uint8"),
        ({"images": IMAGES / 255 * 1.5}, r"range over 0\.\.1\.5, outside \[0, 1\]"),
        ({"images": np.full((4, 3, 7, 5), np.nan)}, "images hold NaN"),
        ({"labels": LABELS[:3]}, "has 4 images but 3 labels"),
        ({"labels": np.array([0, -1, 0, 0])}, "negative label -1"),
        ({"labels": LABELS.astype(np.float32)}, "labels are float32"),
        ({"class_names": np.array(["a", "b"])}, "has label 2 but 2 class names"),
        ({"class_names": np.array([1, 2, 3])}, "class_names must be"),
        ({"class_names": np.array(["a", None, "c"], dtype=object)}, r"not a plain \.npz"),
    ],
)
def test_bad_tensor_files_are_one_line_errors(
    tmp_path: Path, arrays: dict[str, object], match: str
) -> None:
    path = _bad_npz(tmp_path, **arrays)
    with pytest.raises(GradleakError, match=match) as error:
        load_tensor_file(path, (4, 4), 3)
    _message(error)


def test_bad_files_and_keys_are_one_line_errors(tmp_path: Path) -> None:
    _npz(tmp_path / "nolabels.npz", images=IMAGES)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "x.npy").write_bytes(b"")
    cases = {
        "nolabels.npz": "lacks 'labels' \\(it holds: images\\)",
        "list.pt": "holds a list, not a dict",
        "junk.pt": r"not a plain \.pt of arrays",
        "junk.npz": r"not a plain \.npz of arrays",
        "x.npy": r"must be a \.npz or \.pt file",
        "missing.npz": "does not exist",
    }
    for name, match in cases.items():
        with pytest.raises(GradleakError, match=match) as error:
            read_tensor_file(tmp_path / name)
        _message(error)
    with pytest.raises(GradleakError, match="tensor files have no splits") as error:
        load_dataset("tensors", tmp_path / "x.npz", "train", size=(4, 4), channels=3)
    _message(error)


def test_runs_may_read_the_users_images_grey(tmp_path: Path) -> None:
    path = _npz(tmp_path / "g.npz", images=IMAGES[:, :1], labels=LABELS)
    grey = open_images("tensors", path, image_size=7, channels=1)
    assert (grey.channels, grey.size) == (1, (7, 7))
    assert grey.stats.name == "imagenet-grey" and len(grey.stats.mean) == 1
    assert grey.pixels([0])[0].shape == (1, 1, 7, 7)
    assert open_images("tensors", path, image_size=7).channels == 3  # RGB unless asked
    assert input_shape("folder", channels=1) == (1, (32, 32))
    for call, match in (
        (lambda: input_shape("tensors", channels=2), "channels must be 1 .grey. or 3"),
        (lambda: input_shape("mnist", channels=3), "mnist images have 1 channel"),
    ):
        with pytest.raises(GradleakError, match=match) as error:
            call()
        _message(error)
