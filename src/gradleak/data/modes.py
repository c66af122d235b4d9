"""Every image mode Pillow opens, as the pixels a model reads: grey or RGB in [0, 1].

Images of 8 bits per channel become Pillow "L" (one channel) or "RGB" (three) through
Pillow's own conversions: ITU-R 601 luma for grey, the palette's colours for "P", CIE Lab
through an sRGB profile, CMYK without a colour profile (R = (255 - K)(1 - C/255)).
Transparent pixels (alpha channels, and a palette's or a colour key's transparency) are
composited on `ALPHA_BACKGROUND`, white, as a page shows them; the attacked image is then
what a viewer sees rather than whatever colour a file hides under alpha 0.

Deeper greyscale images become one float channel (Pillow "F") in [0, 1] so their precision
survives resizing: 16-bit images (I;16, I;16L, I;16B, I;16N) and 32-bit integer ones (I) are
divided by 65535, 32-bit float ones (F) are read as they are. A 32-bit image whose values lie
outside that range, or a float one with NaN or infinity, is refused: there is no scale that
would read it right. A colour key on a 16-bit image makes its pixels the background.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from gradleak.core.errors import GradleakError

ALPHA_BACKGROUND = 255  # grey level transparent pixels are composited on: white
SIXTEEN_BIT_MAX = 65535
# The modes of Pillow images the loader returns: 8-bit grey or RGB, or one float channel.
CHANNEL_MODES = {1: "L", 3: "RGB"}
FLOAT_MODE = "F"

# Reads an image of one mode as "L"/"RGB" (8 bits) or "F" (one channel in [0, 1]).
_Reader = Callable[[Image.Image, str, str], Image.Image]


def _on_background(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (ALPHA_BACKGROUND,) * 3 + (255,))
    return Image.alpha_composite(background, rgba)


def _eight_bit(img: Image.Image, mode: str, name: str) -> Image.Image:
    if img.has_transparency_data:
        return _on_background(img).convert(mode)
    return img.convert(mode)


def _lab(img: Image.Image, mode: str, name: str) -> Image.Image:
    # Pillow converts Lab to RGB only; grey is then the RGB's luma.
    return img.convert("RGB").convert(mode)


def _deep(scale: float, range_hint: str) -> _Reader:
    """A reader of one deep greyscale channel whose full range is 0..`scale`."""

    def read(img: Image.Image, mode: str, name: str) -> Image.Image:
        raw = np.asarray(img)
        finite = raw[np.isfinite(raw)]
        if finite.size < raw.size or finite.min() < 0 or finite.max() > scale:
            seen = f"{finite.min():g}..{finite.max():g}" if finite.size else "none finite"
            extra = "" if finite.size == raw.size else " and NaN or infinite values"
            raise GradleakError(
                f"{name} is a {img.mode} image with values {seen}{extra}, outside {range_hint}; "
                "save it as an 8- or 16-bit image"
            )
        unit = raw.astype(np.float64) / scale
        key = img.info.get("transparency")
        if isinstance(key, int):
            unit[raw == key] = ALPHA_BACKGROUND / 255
        return Image.fromarray(unit.astype(np.float32))

    return read


_READERS: dict[str, _Reader] = {
    **dict.fromkeys(
        ("1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV"),
        _eight_bit,
    ),
    "LAB": _lab,
    **dict.fromkeys(
        ("I;16", "I;16L", "I;16B", "I;16N", "I"),
        _deep(SIXTEEN_BIT_MAX, f"the 16-bit range 0..{SIXTEEN_BIT_MAX}"),
    ),
    "F": _deep(1.0, "[0, 1]"),
}
READABLE_MODES: tuple[str, ...] = tuple(_READERS)


def to_channels(img: Image.Image, channels: int, name: str = "image") -> Image.Image:
    """`img` as 8-bit "L" (channels 1) or "RGB" (channels 3), or as one "F" channel in [0, 1].

    Deep greyscale images come back as "F" whatever `channels` asks; the caller repeats
    the channel for RGB after resizing.

    Args:
        img: a loaded Pillow image of any of `READABLE_MODES`.
        channels: 1 (grey) or 3 (RGB).
        name: how errors name the image, e.g. "image file a.png".

    Returns:
        A new image of mode "L", "RGB" or "F".

    Raises:
        GradleakError: when `channels` is not 1 or 3.
        GradleakError: when the image has no pixels.
        GradleakError: when the image's mode is not one of `READABLE_MODES`.
        GradleakError: when a 32-bit image's values lie outside the range it is read with.
    """
    if channels not in CHANNEL_MODES:
        raise GradleakError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if img.width < 1 or img.height < 1:
        raise GradleakError(f"{name} has no pixels ({img.width}×{img.height}); replace it")
    reader = _READERS.get(img.mode)
    if reader is None:
        raise GradleakError(
            f"{name} has image mode {img.mode!r}, which gradleak does not read (it reads "
            f"{', '.join(READABLE_MODES)}); save it as a greyscale, RGB or RGBA image"
        )
    return reader(img, CHANNEL_MODES[channels], name)
