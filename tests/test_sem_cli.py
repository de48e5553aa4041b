"""``micrometry synth sem`` and ``micrometry sem info`` from the command line, good and bad input."""

import json
import shutil

import pytest

from micrometry.cli import run

ARGS = ["--n-structures", "3", "--n-sites", "4", "--images-per-site", "2", "--n-test", "3"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("semcli")
    assert run(["synth", "sem", str(root / "data"), "--truth", str(root / "truth"), *ARGS]) == 0
    return root / "data"


@pytest.fixture
def broken(clean, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(clean, copy)
    return copy


def test_info_on_clean_dataset(clean, capsys):
    assert run(["sem", "info", str(clean), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["simulated_pairs"] == 12 and summary["simulated_base_structures"] == 3
    assert summary["real_train_images"] == 8 and summary["real_sites"] == 4
    assert summary["test_images"] == 3 and summary["problems"] == []


def test_synth_refuses_existing_output_and_truth_inside(clean, tmp_path, capsys):
    assert run(["synth", "sem", str(clean), "--truth", str(tmp_path / "t"), *ARGS]) == 2
    assert "already exists" in capsys.readouterr().err
    assert run(["synth", "sem", str(tmp_path / "d"), "--truth", str(tmp_path / "d" / "truth"), *ARGS]) == 2
    assert not (tmp_path / "d").exists()


def _first(folder, pattern):
    return sorted(folder.rglob(pattern))[0]


def _break_missing_itr(d):
    _first(d, "*_itr1.png").unlink()
    return "_itr1.png is missing"


def _break_missing_depth(d):
    _first(d / "simulation_data/Depth", "*.png").unlink()
    return "no depth map"


def _break_csv_header(d):
    csv = d / "train/average_depth.csv"
    csv.write_text("site,depth\n" + "\n".join(csv.read_text().splitlines()[1:]) + "\n")
    return 'header must be "0,1"'


def _break_csv_value(d):
    csv = d / "train/average_depth.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",deep"
    csv.write_text("\n".join(lines) + "\n")
    return "is not a number"


def _break_site_without_row(d):
    csv = d / "train/average_depth.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    return "no row"


def _break_image_size(d):
    from PIL import Image

    Image.new("L", (50, 50)).save(_first(d / "test/SEM", "*.png"))
    return "expected 72x48"


def _break_truncated(d):
    path = _first(d / "train/SEM", "*.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated"


@pytest.mark.parametrize(
    "breaker",
    [
        _break_missing_itr,
        _break_missing_depth,
        _break_csv_header,
        _break_csv_value,
        _break_site_without_row,
        _break_image_size,
        _break_truncated,
    ],
)
def test_each_defect_is_reported(broken, breaker, capsys):
    expected = breaker(broken)
    assert run(["sem", "info", str(broken)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_site_without_images_is_a_warning(broken, capsys):
    csv = broken / "train/average_depth.csv"
    csv.write_text(csv.read_text() + "depth_110_site_09999,111.000000\n")
    assert run(["sem", "info", str(broken)]) == 0
    assert "has no images" in capsys.readouterr().err


def test_not_a_dataset(tmp_path, capsys):
    assert run(["sem", "info", str(tmp_path)]) == 2
    assert "holds no simulation_data" in capsys.readouterr().err
    assert run(["sem", "info", str(tmp_path / "missing")]) == 2
