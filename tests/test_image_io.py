import numpy as np
import pytest
import tifffile
from PIL import Image

from micrometry.errors import ImageReadError
from micrometry.io.image import ColourImageWarning, read_gray_u8, read_image, write_image


@pytest.fixture
def gray():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(72, 48), dtype=np.uint8)


def test_png_gray_roundtrip(tmp_path, gray):
    write_image(tmp_path / "a.png", gray)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), gray)


def test_rgb_with_equal_channels_reads_as_gray(tmp_path, gray):
    write_image(tmp_path / "rgb.png", gray, rgb=True)
    assert np.array(Image.open(tmp_path / "rgb.png")).shape == (72, 48, 3)
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == (72, 48)
    np.testing.assert_array_equal(out, gray)


def test_coloured_image_gives_luminance_and_warns(tmp_path, gray):
    rgb = np.stack([gray, gray // 2, np.zeros_like(gray)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.warns(ColourImageWarning):
        out = read_image(tmp_path / "c.png")
    expected = np.rint(gray * 0.299 + (gray // 2) * 0.587).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_16bit_png_and_tiff(tmp_path):
    img = (np.arange(72 * 48, dtype=np.uint16) * 13).reshape(72, 48)
    write_image(tmp_path / "a.png", img)
    tifffile.imwrite(tmp_path / "a.tif", img)
    for name in ("a.png", "a.tif"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, img)
    assert read_gray_u8(tmp_path / "a.tif").dtype == np.uint8


def test_jpeg_reads(tmp_path, gray):
    Image.fromarray(gray).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == gray.shape


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
    ],
)
def test_broken_files_raise_typed_errors(tmp_path, content, problem):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=problem) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_png_raises(tmp_path, gray):
    write_image(tmp_path / "a.png", np.tile(gray, (4, 4)))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated|corrupt"):
        read_image(tmp_path / "t.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_write_is_atomic_no_temp_left(tmp_path, gray):
    write_image(tmp_path / "a.png", gray)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_written_files_are_not_private(tmp_path, gray):
    import os
    import stat

    write_image(tmp_path / "a.png", gray)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o666 & ~mask
