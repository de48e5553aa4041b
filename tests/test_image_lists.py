"""Prediction over a list of files (``IMAGES.txt``) instead of a folder."""

import json

import numpy as np

from micrometry.cli import run
from micrometry.io.image import list_images, write_image


def _images(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = np.full((64, 80), 40, np.uint8)
        y, x = np.ogrid[:64, :80]
        image[(y - 20 - 8 * i) ** 2 + (x - 30 - 10 * i) ** 2 < 64] = 200
        write_image(folder / f"im{i}.png", (image + rng.integers(0, 5, image.shape)).astype(np.uint8))
    return folder


def test_list_keeps_its_order_and_skips_comments(tmp_path):
    folder = _images(tmp_path / "imgs")
    listed = tmp_path / "list.txt"
    listed.write_text(f"# picked by hand\nimgs/im2.png\n\n{folder / 'im0.png'}  # absolute\n")
    assert list_images(listed) == [tmp_path / "imgs" / "im2.png", folder / "im0.png"]


def _predict_listed(tmp_path, listing: str) -> int:
    """Exit code of ``particles predict`` (watershed) of the list ``listing`` of ``_images`` into tmp_path/pred."""
    _images(tmp_path / "imgs")
    listed = tmp_path / "list.txt"
    listed.write_text(listing)
    return run(["particles", "predict", str(listed), "--model", "watershed", "--out", str(tmp_path / "pred")])


def test_particles_predict_over_a_list(tmp_path):
    assert _predict_listed(tmp_path, "imgs/im2.png\nimgs/im0.png\n") == 0
    images = json.loads((tmp_path / "pred" / "images.json").read_text())["images"]
    assert [(im["id"], im["file_name"]) for im in images] == [(1, "im2.png"), (2, "im0.png")]
    assert sorted(p.name for p in (tmp_path / "pred" / "labels").iterdir()) == ["im0.png", "im2.png"]


def test_missing_listed_file_is_one_line_and_leaves_nothing(tmp_path, capsys):
    assert _predict_listed(tmp_path, "imgs/im0.png\nimgs/gone.png\n") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("gone.png: listed on line 2 of list.txt but does not exist") and "\n" not in err
    assert not (tmp_path / "pred").exists()
