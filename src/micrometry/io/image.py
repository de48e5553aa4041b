"""One image reader for both jobs: PNG, JPEG, TIFF; 8 or 16 bit; gray or RGB.

SEM instruments and cameras save the same gray image in many ways (the
competition's real SEM PNGs are two-thirds RGB with three equal channels), so
the reader returns a 2-D array whenever the content is gray, and converts truly
coloured images to luminance with a warning.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from micrometry.errors import ImageReadError
from micrometry.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# Largest image decoded unless a caller asks for less: PIL's own decompression-bomb threshold (89 Mpx),
# for every format. Checked from the header before any pixel is decoded, so a tiny file that declares a
# huge image costs nothing.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS

# Largest image file read (bytes): an uncompressed 16-bit RGB image of MAX_PIXELS is about 0.5 GB.
MAX_FILE_BYTES = 1 << 30

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
    try:
        if path.stat().st_size > MAX_FILE_BYTES:  # read whole into memory below: bound it
            raise ImageReadError(
                f"file of {path.stat().st_size} bytes is larger than the {MAX_FILE_BYTES} "
                "micrometry reads as one image",
                path,
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read the file ({exc.strerror or exc})", path) from None
    return decode_image(data, path)


def decode_image(data: bytes, name: str | Path = "<upload>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes (an upload, a zip member) exactly as :func:`read_image` reads a file.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str or Path
        Used to pick the TIFF decoder by suffix and to name the input in errors.
    max_pixels : int
        Refuse, from the header and before decoding, an image with more pixels.
    """
    name = Path(name)
    if not data:
        raise ImageReadError("file is empty", name)
    check_pixel_count(data, name, max_pixels)
    if name.suffix.lower() in (".tif", ".tiff") or data[:4] in (b"II*\x00", b"MM\x00*"):
        array = _read_tiff(io.BytesIO(data), name)
    else:
        array = _read_pil(io.BytesIO(data), name)
    return to_gray(array, name)


def check_pixel_count(data: bytes, name: str | Path, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, without decoding it.

    PIL and tifffile read only the header here; a file whose header cannot be
    read is left for the decoder to report.

    Raises
    ------
    ImageReadError
        The image is larger than ``max_pixels``.
    """
    name = Path(name)
    try:
        if name.suffix.lower() in (".tif", ".tiff") or data[:4] in (b"II*\x00", b"MM\x00*"):
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                shape = tif.series[0].shape
            colour = len(shape) == 3 and (shape[0] in (3, 4) or shape[-1] in (3, 4))
            pixels = int(np.prod(shape, dtype=np.float64)) // (min(shape[0], shape[-1]) if colour else 1)
        else:
            with Image.open(io.BytesIO(data)) as img:
                pixels = img.width * img.height
    except Image.DecompressionBombError as exc:  # PIL refuses to open it at all; its message has the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if not found:
            raise ImageReadError(f"image is too large to decode safely ({exc})", name) from None
        pixels = int(found.group(1))
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report, with its message
        return
    if pixels > max_pixels:
        raise ImageReadError(
            f"image has {pixels / 1e6:.1f} million pixels; the limit is {max_pixels / 1e6:.1f} million", name
        )


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
    except Image.DecompressionBombError as exc:  # PIL refuses to open it at all
        raise ImageReadError(
            f"image is too large to decode safely; the limit is {MAX_PIXELS / 1e6:.1f} "
            f"million pixels ({exc})",
            path,
        ) from None
    except (OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise ImageReadError(f"corrupt or truncated image ({exc})", path) from None


def _read_tiff(source: io.BytesIO, path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(source) as tif:
            array = tif.asarray()
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise ImageReadError(f"corrupt or unreadable TIFF ({exc})", path) from None
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar RGB
    if array.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(array.dtype, np.floating):
            return float_to_u16(array, path)
        array = np.clip(array, 0, 65535).astype(np.uint16)
    return array


class FloatImageWarning(UserWarning):
    """A floating-point image was scaled to 16 bit."""


def float_to_u16(array: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """A floating-point image as uint16: exact when it holds whole numbers in 0..65535 (a label
    image saved as float), else its finite range stretched to 0..65535, with a warning."""
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        raise ImageReadError("floating-point image without a finite value", path)
    values = array[finite]
    lo, hi = float(values.min()), float(values.max())
    if finite.all() and lo >= 0 and hi <= 65535 and np.array_equal(values, np.round(values)):
        return array.astype(np.uint16)
    scaled = (np.where(finite, array, lo) - lo) / (hi - lo) * 65535 if hi > lo else np.zeros_like(array)
    warnings.warn(
        f"{path}: floating-point image scaled from [{lo:.6g}, {hi:.6g}] to 16 bit"
        + ("; non-finite pixels set to the minimum" if not finite.all() else ""),
        FloatImageWarning,
        stacklevel=3,
    )
    return np.rint(scaled).astype(np.uint16)


# --------------------------------------------------------------------------- calibration

# ImageJ and OME spellings of the length units micrometry reports, and their factor to um.
_UNIT_NAMES = {
    "um": "um",
    "micron": "um",
    "microns": "um",
    "\u00b5m": "um",
    "\u03bcm": "um",
    "nm": "nm",
    "nanometer": "nm",
    "mm": "mm",
    "millimeter": "mm",
    "cm": "cm",
    "m": "m",
}
# TIFF ResolutionUnit 2 (inch) with these values is a print resolution, not a calibration.
_PRINT_DPI = {72.0, 96.0, 100.0, 150.0, 200.0, 300.0, 600.0, 1200.0}


def read_calibration(path: str | Path) -> tuple[float, str] | None:
    """Pixel size and length unit stored in a TIFF, or None when it carries no calibration.

    Read from, first to last: OME-XML ``PhysicalSizeX`` (+ ``PhysicalSizeXUnit``,
    default um); ImageJ's ``unit=`` with the XResolution tag (pixels per unit);
    XResolution with ResolutionUnit centimetre (or inch, unless it is a
    typical print resolution such as 72 or 300 dpi). Non-TIFF files give None.
    Only the x pixel size is returned (square pixels).
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            ome = tif.ome_metadata if tif.is_ome else None
            imagej = tif.imagej_metadata if tif.is_imagej else None
            tags = {
                name: page.tags[name].value for name in ("XResolution", "ResolutionUnit") if name in page.tags
            }
    except Exception:  # unreadable files are reported by the image reader, not here
        return None
    if ome:
        found = _ome_calibration(ome)
        if found:
            return found
    resolution = tags.get("XResolution")
    if not resolution:
        return None
    num, den = resolution if isinstance(resolution, tuple) else (resolution, 1)
    if not num or not den:
        return None
    per_unit = float(num) / float(den)  # pixels per unit
    resolution_unit = int(tags.get("ResolutionUnit", 2))
    if imagej and imagej.get("unit"):
        unit = _UNIT_NAMES.get(str(imagej["unit"]).strip().lower())
        return (1.0 / per_unit, unit) if unit else None
    if resolution_unit == 3:  # centimetre
        return _tidy(1e4 / per_unit, "um")
    if resolution_unit == 2 and per_unit not in _PRINT_DPI:
        return _tidy(25400.0 / per_unit, "um")
    return None


def _ome_calibration(xml: str) -> tuple[float, str] | None:
    import re

    size = re.search(r'PhysicalSizeX="([^"]+)"', xml)
    if not size:
        return None
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
    name = _UNIT_NAMES.get(unit.group(1).strip().lower() if unit else "um")
    try:
        value = float(size.group(1))
    except ValueError:
        return None
    return (value, name) if name and np.isfinite(value) and value > 0 else None


def _tidy(size: float, unit: str) -> tuple[float, str]:
    """Sub-micrometre sizes in nm, so that numbers stay readable."""
    return (size * 1000.0, "nm") if size < 0.1 else (size, unit)


def to_gray(array: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """A decoded image as 2-D gray: RGB(A) to luminance (with a :class:`ColourImageWarning` naming
    ``path``, unless the channels are equal); any other shape is an :class:`ImageReadError`."""
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageReadError(f"unsupported image shape {array.shape}", path)
    rgb = array[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    warnings.warn(f"{path}: colour image converted to gray luminance", ColourImageWarning, stacklevel=3)
    gray = np.empty(rgb.shape[:2], dtype=array.dtype)
    rows = max(1, 2**20 // max(rgb.shape[1], 1))  # ~1 Mpx blocks: float64 never for the whole image
    for start in range(0, rgb.shape[0], rows):
        block = rgb[start : start + rows].astype(np.float64) @ _LUMA
        gray[start : start + rows] = np.clip(np.rint(block), 0, np.iinfo(array.dtype).max)
    return gray


def write_image(path: str | Path, array: np.ndarray, rgb: bool = False, png_level: int = 6) -> Path:
    """Write a uint8/uint16 gray image atomically (PNG, TIFF, JPEG by suffix).

    Parameters
    ----------
    rgb : bool
        Store a gray uint8 image as three equal channels (as many SEM tools do).
    png_level : int
        zlib level of a PNG (0-9; lossless at every level): 1 writes a photo-like
        overlay about 4x faster than the default 6, for a file a few % larger.
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
            Image.fromarray(array).save(
                tmp, format=fmt, **({"compress_level": png_level} if fmt == "PNG" else {})
            )
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
