"""The one image decoder of the data readers: PIL with one-line errors that name the file, so a
DataModule can skip and count any undecodable image (``skip_corrupt``) instead of dying on a trace.
Imports PIL and the standard library only."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from core.data import DataFormatError

# The one list of image-file suffixes (torchvision's ImageFolder list): what a folder of images holds,
# for the data sets, predict.py's inputs, the download check and the run tools.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def decode_image(
    path: str | Path | BinaryIO,
    mode: str = "RGB",
    what: str = "image file listed in the data set",
    name: str | None = None,
) -> Image.Image:
    """The image at ``path`` converted to ``mode``. A missing file raises FileNotFoundError (``what``
    says what it was); a file that does not decode, or claims more pixels than PIL's
    decompression-bomb limit (a crafted PNG header: PIL only warns up to twice the limit, then
    raises its own error), raises DataFormatError naming the file. ``path`` may be a file object
    (encoded bytes from shards): ``name`` then names the sample in errors."""
    where = name if name is not None else path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.convert(mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataFormatError(
            where,
            f"image is over PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels "
            f"({err}); raise PIL.Image.MAX_IMAGE_PIXELS if it is genuine",
        ) from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DataFormatError(where, f"cannot decode image ({err})") from None


def positive_size(value: object, key: str = "data.image_size", count: int | None = None) -> int | tuple[int, ...]:
    """A configured image size in pixels: a positive whole number, or (``count`` set) that many of
    them. Anything else is a ValueError naming the config key, before PIL or timm fail on it deep
    inside a DataLoader worker."""
    listed = isinstance(value, Sequence) and not isinstance(value, str)  # a list, tuple or OmegaConf ListConfig
    values = [value] if count is None else list(value) if listed else None
    wanted = "a positive whole number of pixels" if count is None else f"{count} positive whole numbers of pixels"
    if values is None or (count is not None and len(values) != count):
        raise ValueError(f"{key}={value!r}: expected {wanted}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0:
            raise ValueError(f"{key}={value!r}: expected {wanted}")
    return int(values[0]) if count is None else tuple(int(v) for v in values)
