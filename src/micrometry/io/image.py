"""One image reader for both jobs: PNG, JPEG, TIFF; 8 or 16 bit; gray or RGB.

SEM instruments and cameras save the same gray image in many ways (the
competition's real SEM PNGs are two-thirds RGB with three equal channels), so
the reader returns a 2-D array whenever the content is gray, and converts truly
coloured images to luminance with a warning.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from micrometry.errors import ImageReadError
from micrometry.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# ITU-R BT.601 luma weights, as used by PIL and OpenCV for RGB -> gray.
_LUMA = np.array([0.299, 0.587, 0.114])


class ColourImageWarning(UserWarning):
    """A truly coloured image was converted to gray luminance."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as a 2-D gray array (uint8 or uint16) or, for colour, luminance.

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, BMP or TIFF file.

    Returns
    -------
    ndarray
        ``(H, W)`` array. 8-bit files give uint8, 16-bit files give uint16;
        coloured images give luminance in the file's dtype.

    Raises
    ------
    ImageReadError
        The file is missing, empty, truncated, corrupt or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("no such file", path)
    return decode_image(path.read_bytes(), path)


def decode_image(data: bytes, name: str | Path = "<upload>") -> np.ndarray:
    """Decode image bytes (an upload, a zip member) exactly as :func:`read_image` reads a file.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str or Path
        Used to pick the TIFF decoder by suffix and to name the input in errors.
    """
    name = Path(name)
    if not data:
        raise ImageReadError("file is empty", name)
    if name.suffix.lower() in (".tif", ".tiff") or data[:4] in (b"II*\x00", b"MM\x00*"):
        array = _read_tiff(io.BytesIO(data), name)
    else:
        array = _read_pil(io.BytesIO(data), name)
    return _to_gray(array, name)


def read_gray_u8(path: str | Path) -> np.ndarray:
    """Read an image as 8-bit gray; 16-bit data is scaled by 1/257."""
    return to_gray_u8(read_image(path))


def to_gray_u8(array: np.ndarray) -> np.ndarray:
    """A gray image from :func:`read_image` or :func:`decode_image` as uint8; 16-bit data is scaled by 1/257."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) // 257).astype(np.uint8)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _read_pil(source: io.BytesIO, path: Path) -> np.ndarray:
    try:
        with Image.open(source) as img:
            img.load()  # decode now: a truncated file fails here, not later
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(img, dtype=np.uint16)
            if img.mode == "I":
                return np.array(img).astype(np.uint16)
            if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                img = img.convert("RGB") if img.mode not in ("LA", "1") else img.convert("L")
            return np.array(img)
    except UnidentifiedImageError:
        raise ImageReadError("not an image file (or an unsupported format)", path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"corrupt or truncated image ({exc})", path) from None


def _read_tiff(source: io.BytesIO, path: Path) -> np.ndarray:
    import tifffile

    try:
        array = tifffile.imread(source)
    except Exception as exc:  # tifffile raises many types for broken files
        raise ImageReadError(f"corrupt or unreadable TIFF ({exc})", path) from None
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar RGB
    if array.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(array.dtype, np.floating):
            raise ImageReadError(f"floating-point TIFF ({array.dtype}) is not supported", path)
        array = np.clip(array, 0, 65535).astype(np.uint16)
    return array


def _to_gray(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageReadError(f"unsupported image shape {array.shape}", path)
    rgb = array[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    warnings.warn(f"{path}: colour image converted to gray luminance", ColourImageWarning, stacklevel=3)
    gray = rgb.astype(np.float64) @ _LUMA
    return np.clip(np.rint(gray), 0, np.iinfo(array.dtype).max).astype(array.dtype)


def write_image(path: str | Path, array: np.ndarray, rgb: bool = False) -> Path:
    """Write a uint8/uint16 gray image atomically (PNG, TIFF, JPEG by suffix).

    Parameters
    ----------
    rgb : bool
        Store a gray uint8 image as three equal channels (as many SEM tools do).
    """
    path = Path(path)
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"write_image needs uint8 or uint16, got {array.dtype}")
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, array)
        else:
            if rgb:
                array = np.repeat(array[..., None], 3, axis=-1)
            fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[path.suffix.lower()]
            Image.fromarray(array).save(tmp, format=fmt)
    return path


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` sorted by name (a single file is returned as is).

    A ``.txt`` file is a list of images: one path per line (relative to the
    list's folder; blank lines and ``#`` comments skipped), kept in its order.
    """
    folder = Path(folder)
    if folder.is_file() and folder.suffix.lower() == ".txt":
        return read_image_list(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise ImageReadError("no such file or folder", folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_list(path: str | Path) -> list[Path]:
    """The image paths a ``.txt`` list names, in its order (see :func:`list_images`).

    Raises
    ------
    ImageReadError
        A listed file that does not exist (the message names it).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageReadError(f"cannot read the image list ({exc})", path) from None
    files = []
    for number, line in enumerate(lines, start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        file = (path.parent / entry) if not Path(entry).is_absolute() else Path(entry)
        if not file.is_file():
            raise ImageReadError(f"listed on line {number} of {path.name} but does not exist", file)
        files.append(file)
    return files
