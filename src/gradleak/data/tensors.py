"""Tensor files: images and labels saved as arrays (.npz) or tensors (.pt).

A file holds `images` (N×C×H×W, N×H×W×C or N×H×W; C is 1 or 3, and a 4-D array whose
second axis is 1 or 3 is read as N×C×H×W; uint8 in 0..255 or floats in [0, 1]), `labels`
(N integers, 0 or more) and optionally `class_names` (one string per class; in a .npz a
string array). Without class names the classes are "0".."K-1", K the largest label plus one.

A .npz is read with `numpy.load(allow_pickle=False)` and a .pt with
`torch.load(weights_only=True)` (a dict of tensors; `class_names` a list of str), so a file
from elsewhere never runs code. Each image is made the requested size and channel count
when it is read, exactly as an image file is (`gradleak.data.image.image_pixels`): 8-bit
images go through Pillow as a PNG of the same pixels would; float images are resized one
float channel at a time, a colour float image made grey with the ITU-R 601 luma weights
Pillow uses for 8-bit images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gradleak.core.errors import GradleakError
from gradleak.data.image import check_size_and_channels, image_pixels
from gradleak.data.source import check_index

TENSOR_SUFFIXES = (".npz", ".pt")
IMAGES, LABELS, CLASS_NAMES = "images", "labels", "class_names"
# ITU-R 601 luma, the weights of Pillow's "RGB" → "L" conversion.
LUMA = np.array([0.299, 0.587, 0.114])
_CHANNELS = (1, 3)


def _pixels_8bit(image: np.ndarray, size: tuple[int, int], channels: int, name: str) -> Tensor:
    # HxW for grey, HxWx3 for colour: the arrays Pillow makes "L" and "RGB" images of.
    plane = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    return image_pixels(Image.fromarray(np.ascontiguousarray(plane)), size, channels, name)


def _pixels_float(image: np.ndarray, size: tuple[int, int], channels: int, name: str) -> Tensor:
    planes = image.astype(np.float64)
    if planes.shape[0] == 3 and channels == 1:
        # The weights sum to 1 up to rounding: clipped so a white pixel stays in [0, 1].
        planes = np.clip(np.tensordot(LUMA, planes, axes=1), 0.0, 1.0)[None]
    resized = torch.cat(
        [image_pixels(Image.fromarray(p.astype(np.float32)), size, 1, name) for p in planes]
    )
    return resized.expand(channels, -1, -1).contiguous()


def tensor_pixels(
    image: np.ndarray, size: tuple[int, int], channels: int, name: str = "image"
) -> Tensor:
    """One C×H×W image (uint8 or floats in [0, 1]) as float32 in [0, 1] of `size` and
    `channels`: resized to cover `size` and centre-cropped, as image files are.

    Args:
        image: C×H×W with C 1 or 3; uint8 0..255 or floats in [0, 1].
        size: (height, width) of the result.
        channels: 1 (grey: colour images take their luma) or 3 (grey images repeated).
        name: how errors name the image.

    Returns:
        float32 of shape (channels, height, width) in [0, 1].

    Raises:
        GradleakError: a bad size or channel count, or an image too elongated to cover `size`.
    """
    check_size_and_channels(size, channels)
    convert = _pixels_8bit if image.dtype == np.uint8 else _pixels_float
    return convert(image, size, channels, name)


class TensorImageSource:
    """Images of a tensor file, made the requested size and channel count when read."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        size: tuple[int, int],
        channels: int,
        name: str = "tensor file",
    ) -> None:
        """
        Args:
            images: N×C×H×W, uint8 or floats in [0, 1] (checked by `read_tensor_file`).
            labels: N class indices in 0..len(class_names)-1.
            class_names: the name of each class.
            size: (height, width) every image is made.
            channels: 1 or 3.
            name: how errors name the file.
        """
        self.images = images
        self.labels = labels
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.size = check_size_and_channels(size, channels)
        self.channels = channels
        self.name = name

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        index = check_index(i, len(self))
        image = tensor_pixels(self.images[index], self.size, self.channels, self.name)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"TensorImageSource({len(self)} images, {self.channels}×{self.size[0]}×"
            f"{self.size[1]}, {len(self.class_names)} classes)"
        )


def _array(value: object, key: str, path: Path) -> np.ndarray:
    """A tensor, array or list as a numpy array."""
    if isinstance(value, torch.Tensor):
        # numpy has no bfloat16 (nor the other small floats): widen them first.
        if value.is_floating_point() and value.dtype not in (torch.float16, torch.float32):
            value = value.double() if value.dtype == torch.float64 else value.float()
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray | list | tuple):
        return np.asarray(value)
    raise GradleakError(
        f"tensor file {path}: {key!r} is a {type(value).__name__}; save it as a tensor or array"
    )


def _read_npz(path: Path) -> Mapping[str, object]:
    with np.load(path, allow_pickle=False) as archive:
        # Reading every entry now: an object array fails here (allow_pickle=False).
        return {key: archive[key] for key in archive.files}


def _read_pt(path: Path) -> Mapping[str, object]:
    # weights_only refuses pickled code, so a hostile file cannot run anything.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, Mapping):
        raise GradleakError(
            f"tensor file {path} holds a {type(payload).__name__}, not a dict; save "
            "{'images': ..., 'labels': ...} with torch.save"
        )
    return payload


_READERS: dict[str, Callable[[Path], Mapping[str, object]]] = {".npz": _read_npz, ".pt": _read_pt}


def _read(path: Path) -> Mapping[str, object]:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise GradleakError(
            f"tensor file {path} must be a {' or '.join(TENSOR_SUFFIXES)} file holding "
            "images and labels"
        )
    if path.is_dir():
        raise GradleakError(f"tensor file {path} is a folder; pass a .npz or .pt file")
    if not path.is_file():
        raise GradleakError(f"tensor file {path} does not exist; check the path")
    try:
        return reader(path)
    except GradleakError:
        raise
    except PermissionError as e:
        raise GradleakError(f"tensor file {path} cannot be read (permission denied)") from e
    # numpy and torch raise many unrelated types for files that are not theirs or hold
    # objects: pickled code (UnpicklingError, ValueError), a broken zip (BadZipFile,
    # RuntimeError), a truncated file (EOFError), ...; the readers call nothing else.
    except Exception as e:
        raise GradleakError(
            f"tensor file {path} is not a plain {path.suffix.lower()} of arrays "
            f"({type(e).__name__}); save images, labels and class names with "
            "numpy.savez or torch.save of a dict of tensors (no other objects)"
        ) from e


def _images(value: np.ndarray, path: Path) -> np.ndarray:
    """`images` as N×C×H×W (a view), checked for its shape, type and value range."""
    shape = tuple(value.shape)
    images = value
    if value.ndim == 3:
        images = value[:, None]
    elif value.ndim == 4 and shape[1] not in _CHANNELS:
        images = value.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in _CHANNELS or 0 in shape:
        raise GradleakError(
            f"tensor file {path}: images have shape {shape}; give N×C×H×W, N×H×W×C or "
            "N×H×W images (C 1 or 3), at least one"
        )
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise GradleakError(
            f"tensor file {path}: images are {images.dtype}; give uint8 in 0..255 or floats "
            "in [0, 1]"
        )
    if np.isnan(images).any():
        raise GradleakError(f"tensor file {path}: images hold NaN; replace them")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise GradleakError(
            f"tensor file {path}: float images range over {low:g}..{high:g}, outside [0, 1]; "
            "divide 8-bit values by 255 or save them as uint8"
        )
    return images


def _labels(value: np.ndarray, count: int, path: Path) -> np.ndarray:
    if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
        raise GradleakError(
            f"tensor file {path}: labels are {value.dtype} of shape {tuple(value.shape)}; "
            "give one integer label per image"
        )
    if value.shape[0] != count:
        raise GradleakError(
            f"tensor file {path} has {count} images but {value.shape[0]} labels; give one "
            "label per image"
        )
    if value.min() < 0:
        raise GradleakError(
            f"tensor file {path} has the negative label {int(value.min())}; labels are "
            "class indices 0..K-1"
        )
    return value.astype(np.int64)


def _class_names(value: object, labels: np.ndarray, path: Path) -> tuple[str, ...]:
    classes = int(labels.max()) + 1
    if value is None:
        return tuple(str(i) for i in range(classes))
    listed = isinstance(value, list | tuple) and all(isinstance(n, str) for n in value)
    names = np.asarray(value) if listed or isinstance(value, np.ndarray) else None
    if names is None or names.ndim != 1 or names.dtype.kind != "U":
        raise GradleakError(
            f"tensor file {path}: class_names must be a list (.pt) or array (.npz) of strings"
        )
    if len(names) < classes:
        raise GradleakError(
            f"tensor file {path} has label {classes - 1} but {len(names)} class names; give "
            "one name per class"
        )
    return tuple(str(n) for n in names)


def read_tensor_file(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The images, labels and class names of a tensor file (see the module's docstring).

    Args:
        path: a .npz or .pt file.

    Returns:
        images N×C×H×W (uint8, or floats in [0, 1]), int64 labels, class names.

    Raises:
        GradleakError: a missing or unreadable file, another suffix, pickled objects, a
            missing key, images of another shape or type, floats outside [0, 1] or NaN,
            labels that are not one non-negative integer per image, or too few class
            names (one line each).
    """
    path = Path(path).expanduser()
    payload = _read(path)
    missing = [key for key in (IMAGES, LABELS) if key not in payload]
    if missing:
        held = ", ".join(map(str, payload)) or "nothing"
        raise GradleakError(
            f"tensor file {path} lacks {missing[0]!r} (it holds: {held}); save 'images' and "
            "'labels' (and optionally 'class_names')"
        )
    images = _images(_array(payload[IMAGES], IMAGES, path), path)
    labels = _labels(_array(payload[LABELS], LABELS, path), images.shape[0], path)
    return images, labels, _class_names(payload.get(CLASS_NAMES), labels, path)


def load_tensor_file(path: Path, size: tuple[int, int], channels: int) -> TensorImageSource:
    """The images of a tensor file, made `size` and `channels` when read.

    Args:
        path: a .npz or .pt file (see the module's docstring).
        size: (height, width) every image is resized and centre-cropped to.
        channels: 1 (grey) or 3 (RGB).

    Returns:
        The images with their labels and classes.

    Raises:
        GradleakError: a bad file (see `read_tensor_file`), size or channel count.
    """
    check_size_and_channels(size, channels)
    images, labels, names = read_tensor_file(path)
    return TensorImageSource(images, labels, names, size, channels, f"tensor file {path}")
