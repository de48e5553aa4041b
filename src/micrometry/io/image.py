"""One image reader for both jobs: PNG, JPEG, TIFF; 8 or 16 bit; gray or RGB.

SEM instruments and cameras save the same gray image in many ways (the
competition's real SEM PNGs are two-thirds RGB with three equal channels), so
the reader returns a 2-D array whenever the content is gray, and converts truly
coloured images to luminance with a warning.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
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


def read_image(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as a 2-D gray array (uint8 or uint16) or, for colour, luminance.

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG, BMP or TIFF file.
    shape : (int, int), optional
        The only ``(height, width)`` accepted, checked from the header before
        any pixel is decoded.

    Returns
    -------
    ndarray
        ``(H, W)`` array. 8-bit files give uint8, 16-bit files give uint16;
        coloured images give luminance in the file's dtype; other integer and
        floating-point images give uint16 (exact when their values are whole
        numbers in 0..65535, else stretched with a warning).

    Raises
    ------
    ImageReadError
        The file is missing, empty, truncated, corrupt, not an image, a stack of
        several images, too large, or not of ``shape``.
    """
    return to_gray(_read_raw(path, shape), Path(path))


def read_label_array(path: str | Path) -> np.ndarray:
    """Read a label image with its integer ids as stored (uint32 ids above 65535 are kept).

    Raises
    ------
    ImageReadError
        As :func:`read_image`; also for colour images and non-integer pixels.
    """
    path = Path(path)
    array = _read_raw(path, None, integers=True)
    if array.ndim != 2:
        raise ImageReadError("colour image: a label image must be single-channel integer ids", path)
    if not np.issubdtype(array.dtype, np.integer):
        raise ImageReadError(f"label image must hold integers, got {array.dtype}", path)
    return array


def _read_raw(path: str | Path, shape: tuple[int, int] | None, integers: bool = False) -> np.ndarray:
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
    except OSError as exc:
        raise ImageReadError(f"cannot read the file ({exc.strerror or exc})", path) from None
    _check_header(read_header(path), path, MAX_PIXELS, shape)  # from the file: a refused image is never read
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read the file ({exc.strerror or exc})", path) from None
    return _decode(data, path, MAX_PIXELS, shape, integers)


def decode_image(
    data: bytes,
    name: str | Path = "<upload>",
    max_pixels: int = MAX_PIXELS,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode image bytes (an upload, a zip member) exactly as :func:`read_image` reads a file.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str or Path
        Used to pick the TIFF decoder by suffix and to name the input in errors.
    max_pixels : int
        Refuse, from the header and before decoding, an image with more pixels
        (or, for more than 3 bytes per pixel, the same memory: see :func:`check_pixel_count`).
    shape : (int, int), optional
        The only ``(height, width)`` accepted, checked from the header.
    """
    return to_gray(_decode(data, Path(name), max_pixels, shape), Path(name))


def _is_tiff(data: bytes, name: Path) -> bool:
    return name.suffix.lower() in (".tif", ".tiff") or data[:4] in (b"II*\x00", b"MM\x00*")


def _decode(
    data: bytes, name: Path, max_pixels: int, shape: tuple[int, int] | None, integers: bool = False
) -> np.ndarray:
    if not data:
        raise ImageReadError("file is empty", name)
    _check_header(read_header(data, name), name, max_pixels, shape)
    if _is_tiff(data, name):
        array = _read_tiff(io.BytesIO(data), name, integers)
    else:
        array = _read_pil(io.BytesIO(data), name, integers)
    if shape is not None and array.shape[:2] != tuple(shape):  # a header that could not be read
        raise ImageReadError(
            f"image is {array.shape[0]}x{array.shape[1]}, expected {shape[0]}x{shape[1]}", name
        )
    return array


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares: ``shape`` (height, width), samples and bytes per pixel."""

    shape: tuple[int, int] | None
    samples: int = 1
    bytes_per_sample: int = 1
    pixel_count: int | None = None  # when only the count is known (PIL refused to open a huge image)

    @property
    def pixels(self) -> int:
        return self.pixel_count if self.shape is None else self.shape[0] * self.shape[1]

    @property
    def bytes(self) -> int:
        return self.pixels * self.samples * self.bytes_per_sample


def read_header(data: bytes | str | Path, name: str | Path = "<upload>") -> ImageHeader | None:
    """The header of an image (bytes or a file), read without decoding a pixel; None when unreadable.

    An unreadable header is left for the decoder to report, with its message.
    """
    if isinstance(data, (str, Path)):
        try:
            with open(data, "rb") as f:  # the readers seek: only the header is read
                return _header(f, f.read(4), Path(data))
        except OSError:
            return None
    return _header(io.BytesIO(data), data[:4], Path(name))


def _header(source, magic: bytes, name: Path) -> ImageHeader | None:
    try:
        source.seek(0)
        if _is_tiff(magic, name):
            import tifffile

            with tifffile.TiffFile(source) as tif:
                series = tif.series[0]
                dims = dict(zip(series.axes, series.shape, strict=False))
                samples = int(np.prod(series.shape, dtype=np.float64)) // max(
                    dims.get("Y", 1) * dims.get("X", 1), 1
                )
                return ImageHeader(
                    (int(dims.get("Y", 1)), int(dims.get("X", 1))), max(samples, 1), series.dtype.itemsize
                )
        with Image.open(source) as img:
            bands = len(img.getbands())
            wide = 2 if img.mode.startswith("I;16") else 4 if img.mode in ("I", "F") else 1
            return ImageHeader((img.height, img.width), bands, wide)
    except Image.DecompressionBombError as exc:  # PIL refuses to open it at all; its message has the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if not found:
            raise ImageReadError(f"image is too large to decode safely ({exc})", name) from None
        return ImageHeader(None, pixel_count=int(found.group(1)))
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report, with its message
        return None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header (any format :func:`read_image` reads).

    Raises
    ------
    ImageReadError
        The header cannot be read (the decoder's message says why).
    """
    header = read_header(path)
    if header is None or header.shape is None:
        read_image(path)  # raises the decoder's own message
        raise ImageReadError("cannot read the image header", path)
    return header.shape


# Bytes per pixel the pixel limit assumes (8-bit RGB); images of wider pixels get the same memory.
BYTES_PER_PIXEL = 3


def check_pixel_count(data: bytes, name: str | Path, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, without decoding it.

    The limit is also one of memory: an image of more than :data:`BYTES_PER_PIXEL`
    bytes per pixel (16-bit or floating-point colour, float64 gray) may hold
    proportionally fewer pixels. A header that cannot be read is left for the
    decoder to report.

    Raises
    ------
    ImageReadError
        The image is larger than the limit.
    """
    _check_header(read_header(data, name), Path(name), max_pixels)


def _check_header(
    header: ImageHeader | None, name: Path, max_pixels: int, shape: tuple[int, int] | None = None
) -> None:
    """Refuse, from its header, an image over the pixel (and memory) limit or not of ``shape``."""
    if header is None:  # unreadable: the decoder reports it
        return
    if header.pixels > max_pixels:
        raise ImageReadError(
            f"image has {header.pixels / 1e6:.1f} million pixels; the limit is {max_pixels / 1e6:.1f} million",
            name,
        )
    if header.bytes > max_pixels * BYTES_PER_PIXEL:
        raise ImageReadError(
            f"image of {header.pixels / 1e6:.1f} million pixels at {header.samples * header.bytes_per_sample} "
            f"bytes per pixel needs {header.bytes / 1e6:.0f} MB; the limit is "
            f"{max_pixels * BYTES_PER_PIXEL / 1e6:.0f} MB",
            name,
        )
    if shape is not None and header.shape is not None and header.shape != tuple(shape):
        raise ImageReadError(
            f"image is {header.shape[0]}x{header.shape[1]}, expected {shape[0]}x{shape[1]}", name
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


def _read_pil(source: io.BytesIO, path: Path, integers: bool = False) -> np.ndarray:
    try:
        with Image.open(source) as img:
            img.load()  # decode now: a truncated file fails here, not later
            if getattr(img, "n_frames", 1) > 1:
                raise ImageReadError(_stack_message(img.n_frames), path)
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(img, dtype=np.uint16)
            if img.mode in ("I", "F"):  # 32-bit integer or float pixels
                return _wide_to_u16(np.array(img), path, integers)
            if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
                img = img.convert("RGB") if img.mode not in ("LA", "1") else img.convert("L")
            return np.array(img)
    except ImageReadError:
        raise
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


def _stack_message(n: int) -> str:
    return f"a stack of {n} images (pages), not one image; save each page as its own file"


def _read_tiff(source: io.BytesIO, path: Path, integers: bool = False) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(source) as tif:
            series = tif.series[0]
            rgb = tif.pages[0].photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.PALETTE)
            array = tif.asarray()
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise ImageReadError(f"corrupt or unreadable TIFF ({exc})", path) from None
    if array.ndim == 3 and not rgb:
        # pages of a stack (or extra channels): blending them as RGB would be a wrong image
        raise ImageReadError(_stack_message(array.shape[0]) + f" (axes {series.axes})", path)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar RGB
    if np.iscomplexobj(array):
        raise ImageReadError(
            f"complex-valued image ({array.dtype}); save its magnitude or real part as a real image", path
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype not in (np.uint8, np.uint16):
        return _wide_to_u16(array, path, integers)
    return array


def _wide_to_u16(array: np.ndarray, path: Path, integers: bool = False) -> np.ndarray:
    """Integer pixels wider than 16 bit, or floating-point ones: kept as int64 for ``integers``
    (label ids), else as uint16 by :func:`float_to_u16` (exact for whole numbers in 0..65535)."""
    if integers and np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    if np.issubdtype(array.dtype, np.integer) and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= 65535:
            return array.astype(np.uint16)
    return float_to_u16(array, path)


class FloatImageWarning(UserWarning):
    """A floating-point image was scaled to 16 bit."""


def float_to_u16(array: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """A floating-point image as uint16: exact when it holds whole numbers in 0..65535 (a label
    image saved as float), else its finite range stretched to 0..65535, with a warning."""
    kind = (
        "floating-point"
        if np.issubdtype(np.asarray(array).dtype, np.floating)
        else str(np.asarray(array).dtype)
    )
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        raise ImageReadError("floating-point image without a finite value", path)
    values = array[finite]
    lo, hi = float(values.min()), float(values.max())
    if finite.all() and lo >= 0 and hi <= 65535 and np.array_equal(values, np.round(values)):
        return array.astype(np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):  # a range beyond float64 (e.g. -1e308..1e308)
        span = hi - lo
        if np.isfinite(span):
            scaled = (np.where(finite, array, lo) - lo) / span * 65535 if hi > lo else np.zeros_like(array)
        else:  # scale both ends first so that the span stays finite
            scaled = (np.where(finite, array, lo) / 2 - lo / 2) / (hi / 2 - lo / 2) * 65535
    warnings.warn(
        f"{path}: {kind} image scaled from [{lo:.6g}, {hi:.6g}] to 16 bit"
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
    if array.dtype not in (np.uint8, np.uint16):  # 32-bit or float colour: luminance of 16-bit data
        rgb = _wide_to_u16(rgb, path)
    gray = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    rows = max(1, 2**20 // max(rgb.shape[1], 1))  # ~1 Mpx blocks: float64 never for the whole image
    for start in range(0, rgb.shape[0], rows):
        block = rgb[start : start + rows].astype(np.float64) @ _LUMA
        gray[start : start + rows] = np.clip(np.rint(block), 0, np.iinfo(rgb.dtype).max)
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
        return [check_name(folder)]
    if not folder.is_dir():
        raise ImageReadError("no such file or folder", folder)
    pattern = "**/*" if recursive else "*"
    found = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return [check_name(p) for p in found]


def check_name(path: Path) -> Path:
    """``path`` unchanged when its name is valid UTF-8 text, else a one-line :class:`ImageReadError`.

    Results carry the input's name (tables, JSON, output files), and text
    files cannot hold a name that is not text.
    """
    try:
        os.fsencode(path.name).decode("utf-8")
    except UnicodeDecodeError:
        raise ImageReadError(
            "file name is not valid UTF-8 text; rename the file (results are written under its name)",
            ascii(str(path))[1:-1],
        ) from None
    return path


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
        files.append(check_name(file))
    return files
