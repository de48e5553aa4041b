"""Issue 13, items 3, 4, 5 and 7: each reproduction from the issue, as a test.

One COCO polygon must not exhaust memory; two inputs must not silently share
one output; user errors are one line and exit 2 (never a traceback), found
before the work; killed runs' temporaries are cleaned up; outputs honour the
umask; ``particles info`` finds truncated images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fuzz_corpus import png_claiming, tiff_claiming
from helpers import depth_predict_argv, one_error_line
from micrometry.cli import run
from micrometry.errors import CheckpointError, DatasetError, ImageReadError, InputError
from micrometry.io.atomic import atomic_dir, atomic_path, refuse_existing, remove_stale_temporaries
from micrometry.io.coco import load_coco
from micrometry.io.coco.segmentation import clip_polygon
from micrometry.io.image import read_image, write_image
from micrometry.io.output_names import unique_output_names


@pytest.fixture
def coco_256x320(tmp_path):
    """A COCO folder with one 256x320 image and one small square particle."""
    image = np.full((256, 320), 50, np.uint8)
    image[100:120, 100:130] = 200
    write_image(tmp_path / "coco" / "images" / "a.png", image)
    ann = {
        "images": [{"id": 1, "file_name": "a.png", "height": 256, "width": 320}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[100, 100, 130, 100, 130, 120, 100, 120]],
            }
        ],
        "categories": [{"id": 1, "name": "particle"}],
    }
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(ann))
    return tmp_path / "coco"


def _edit(coco, change):
    path = coco / "annotations.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# -- item 3: COCO geometry that would exhaust memory


def test_clip_polygon_keeps_exactly_the_part_inside():
    triangle = np.array([[0, 0], [4e8, 0], [4e8, 4e8]], float)
    clipped = clip_polygon(triangle, (0, 0, 320, 256))
    # the triangle y <= x inside the box: (0,0) (320,0) (320,256) (256,256)
    assert {tuple(p) for p in np.round(clipped, 6)} == {(0, 0), (320, 0), (320, 256), (256, 256)}
    assert len(clip_polygon(np.array([[1e6, 1e6], [2e6, 1e6], [2e6, 2e6]]), (0, 0, 10, 10))) == 0


def test_polygon_reaching_4e8_px_is_clipped_before_rasterising(coco_256x320):
    """The issue's case: ``[0,0,4e8,0,4e8,4e8]`` on a 256x320 image grew to 23 GB. Now: clipped, small, exact."""
    _edit(coco_256x320, lambda d: d["annotations"][0].update(segmentation=[[0, 0, 4e8, 0, 4e8, 4e8]]))
    code = (
        "import resource, warnings, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from micrometry.io.coco import load_coco\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    ds = load_coco({str(coco_256x320)!r})\n"
        "a = ds.all_annotations()[0]\n"
        "print(a.area, a.bbox, any('clipped' in str(x.message) for x in w),"
        " (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    area, *rest = out.stdout.split()
    peak_mb = int(rest[-1])  # growth of the peak resident memory while loading
    # true area of the triangle's part inside the image: 320*256 - 256*256/2 = 49152 px (pixel-centre rounding aside)
    assert abs(float(area) - 49152) < 0.01 * 49152
    assert rest[-2] == "True"  # warned that it was clipped
    assert peak_mb < 100


def test_far_polygon_outside_the_image_is_dropped_with_a_warning(coco_256x320):
    _edit(coco_256x320, lambda d: d["annotations"][0].update(segmentation=[[1e6, 1e6, 2e6, 1e6, 2e6, 2e6]]))
    with pytest.warns(UserWarning, match="outside the image"):
        ds = load_coco(coco_256x320)
    assert ds.n_annotations == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["images"][0].update(width=10**9), "larger than any image"),
        (
            lambda d: d["annotations"][0].update(segmentation={"size": [10**9, 10**9], "counts": "0"}),
            "larger than any",
        ),
        # a zig-zag inside the image whose outline is 4000 x 1e4 px long: memory bomb for the rasteriser
        (
            lambda d: d["annotations"][0].update(
                segmentation=[
                    [v for i in range(4000) for v in (0, i * 0.01, 320, i * 0.01)] + [320, 200, 0, 200]
                ]
            ),
            "outline",
        ),
        (lambda d: d["annotations"][0].update(image_id=[1]), "'image_id' must be an integer"),
        (lambda d: d["annotations"][0].update(category_id=[1]), "category_id"),
        (lambda d: d["annotations"][0].update(segmentation=[[0, 0, 10**30, 0, 10**30, 10**30]]), None),
    ],
)
def test_absurd_coco_values_are_one_line_errors(coco_256x320, capsys, change, message):
    drop_images = message == "larger than any image"
    if drop_images:  # without image files the sizes come from the JSON alone
        shutil.rmtree(coco_256x320 / "images")
    _edit(coco_256x320, change)
    code = run(["particles", "info", str(coco_256x320 / "annotations.json"), "--json"])
    if message is None:  # a huge int coordinate: clipped like any other
        assert code == 0
        return
    assert code == 2
    one_error_line(capsys, message)


# -- item 4: two inputs, one output


def test_unique_output_names_refuses_collisions(tmp_path):
    assert unique_output_names(["x/a.png", "x/b.tif"], ".png") == ["a.png", "b.png"]
    with pytest.raises(DatasetError, match="a.png and .*a.tif would both be written as a.png"):
        unique_output_names(["x/a.png", "x/a.tif"], ".png")
    with pytest.raises(DatasetError, match="sub2/img.png would both"):
        unique_output_names(["sub1/img.png", "sub2/img.png"], ".png")
    with pytest.raises(DatasetError, match="both"):  # one file on a case-insensitive file system
        unique_output_names(["A.png", "a.png"], ".png")


@pytest.fixture
def sem_images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    for name in ("a.png", "a.tif", "b.png"):
        write_image(folder / name, rng.integers(0, 255, (72, 48)).astype(np.uint8))
    return folder


def test_depth_predict_refuses_two_inputs_with_one_output_name(sem_images, tmp_path, capsys):
    assert run(["depth", "predict", str(sem_images), "--out", str(tmp_path / "pred")]) == 2
    one_error_line(capsys, "would both be written as a.png")
    assert not (tmp_path / "pred").exists()
    (sem_images / "a.tif").unlink()
    assert run(["depth", "predict", str(sem_images), "--out", str(tmp_path / "pred")]) == 0
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == ["a.png", "b.png"]


def test_particles_predict_refuses_same_name_in_two_subfolders(tmp_path, capsys):
    image = np.full((48, 64), 60, np.uint8)
    image[10:20, 10:20] = 200
    for sub in ("sub1", "sub2"):
        write_image(tmp_path / sub / "img.png", image)
    (tmp_path / "list.txt").write_text("sub1/img.png\nsub2/img.png\n")
    assert (
        run(
            [
                "particles",
                "predict",
                str(tmp_path / "list.txt"),
                "--model",
                "watershed",
                "--out",
                str(tmp_path / "pred"),
            ]
        )
        == 2
    )
    one_error_line(capsys, "would both be written as img.png")
    assert not (tmp_path / "pred").exists()


# -- item 5: one line and exit 2, found before the work


def test_output_in_an_unwritable_place_is_refused_before_the_work(sem_images, tmp_path, capsys):
    (sem_images / "a.tif").unlink()
    # the model is missing too: the output is checked first, before any loading
    assert run(depth_predict_argv(sem_images, tmp_path / "nomodel", "/proc/micrometry-pred")) == 2
    one_error_line(capsys, "cannot be written")
    (tmp_path / "afile").write_text("x")
    assert run(["depth", "measure", str(sem_images), "--out", str(tmp_path / "afile" / "m.csv")]) == 2
    one_error_line(capsys, "afile is not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: the /proc case above covers it")
def test_output_in_a_read_only_folder_is_refused(sem_images, tmp_path, capsys):
    (sem_images / "a.tif").unlink()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert run(["depth", "predict", str(sem_images), "--out", str(locked / "pred")]) == 2
        one_error_line(capsys, "cannot be written")
    finally:
        locked.chmod(0o755)


def test_outputs_of_the_wrong_kind_are_refused(sem_images, tmp_path, capsys):
    (sem_images / "a.tif").unlink()
    (tmp_path / "afile").write_text("keep")
    assert run(["depth", "train", str(sem_images), "--out", str(tmp_path / "afile")]) == 2
    one_error_line(capsys, "exists and is not a folder")
    (tmp_path / "holes.csv").mkdir()  # a folder named like the table
    (tmp_path / "holes.csv" / "x").write_text("keep")
    assert (
        run(["depth", "measure", str(sem_images), "--out", str(tmp_path / "holes.csv"), "--overwrite"]) == 2
    )
    one_error_line(capsys, "is a folder")
    assert (tmp_path / "holes.csv" / "x").read_text() == "keep" and (tmp_path / "afile").read_text() == "keep"


def test_overwrite_never_replaces_the_current_folder(sem_images, tmp_path, capsys, monkeypatch):
    (sem_images / "a.tif").unlink()
    monkeypatch.chdir(tmp_path)
    assert run(["depth", "predict", str(sem_images), "--out", ".", "--overwrite"]) == 2
    one_error_line(capsys, "--out holds the input")  # (the current folder holds the images)
    assert run(["depth", "predict", str(sem_images / "a.png"), "--out", ".", "--overwrite"]) == 2
    one_error_line(capsys, "--out holds the input")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert (
        run(["depth", "predict", str(sem_images), "--out", str(tmp_path / "elsewhere"), "--overwrite"]) == 2
    )
    one_error_line(capsys, "is the current folder")
    assert (sem_images / "a.png").exists()


def test_param_of_the_wrong_type_or_range_is_refused_before_the_run_folder(tmp_path, capsys):
    for param, message in (
        ("lr=abc", "lr must be a finite number"),
        ("width=1.5", "width must be an integer"),
        ("mean_itr=3", "mean_itr must be true or false"),
        # the fuzz's finds: sizes of 0, negative widths, fractions above 1
        ("batch_size=0", "batch_size must be at least 1"),
        ("width=-3", "width must be at least 1"),
        ("val_fraction=2", "val_fraction must be in [0, 1)"),
        ("lr=-1", "lr must not be negative"),
    ):
        assert (
            run(
                [
                    "depth",
                    "train",
                    str(tmp_path / "data"),  # (a run folder inside its data is refused)
                    "--method",
                    "unet",
                    "--param",
                    param,
                    "--out",
                    str(tmp_path / "run"),
                ]
            )
            == 2
        )
        one_error_line(capsys, message)
        assert not (tmp_path / "run").exists()


def _sem_layout(root):
    rng = np.random.default_rng(1)
    for path in ("train/SEM/Depth_110/site_00001/SEM_000001.png", "test/SEM/000001.png"):
        write_image(root / path, rng.integers(0, 255, (72, 48)).astype(np.uint8))
    return root / "train" / "average_depth.csv"


def test_average_depth_csv_not_utf8_isone_error_line(tmp_path, capsys):
    csv = _sem_layout(tmp_path)
    csv.write_bytes(b"0,1\ndepth_110_site_00001,110.5\n# caf\xe9\n")
    assert run(["sem", "info", str(tmp_path), "--json"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not UTF-8 text" in err
    csv.write_bytes(b"\xef\xbb\xbf0,1\ndepth_110_site_00001,110.5\n")  # Excel's UTF-8 with a byte-order mark
    assert run(["sem", "info", str(tmp_path), "--json"]) == 0


def test_corrupt_metrics_json_is_a_checkpoint_error(tmp_path):
    from micrometry.train.run import RunDir

    run_dir = RunDir(tmp_path / "run")
    run_dir.metrics_path.write_text('{"hist')
    with pytest.raises(CheckpointError, match="metrics.json is not valid JSON"):
        run_dir.read_metrics()
    run_dir.metrics_path.write_bytes(b"\xff\xfe")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        run_dir.read_metrics()


def test_resume_refuses_a_checkpoint_without_training_state(tmp_path, capsys):
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
    from micrometry.train.run import save_checkpoint

    run_dir = tmp_path / "run"
    write_sem_dataset(
        tmp_path / "data",
        tmp_path / "truth",
        SemSynthConfig(seed=1, n_structures=2, n_sites=1, images_per_site=1, n_test=1),
    )
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"method": "unet", "method_config": {"width": 4}}))
    save_checkpoint(run_dir / "checkpoints" / "last.pt", {"model": {"x": 1}})
    assert run(["depth", "train", str(tmp_path / "data"), "--out", str(run_dir), "--resume"]) == 2
    one_error_line(capsys, "checkpoint lacks state, rng, loop")


def test_particle_checkpoint_given_to_depth_predict(sem_images, tmp_path, capsys):
    import torch

    from micrometry.train.run import save_checkpoint

    (sem_images / "a.tif").unlink()
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(
        json.dumps({"method": "unet"})
    )  # a depth config, a particle checkpoint
    save_checkpoint(
        run_dir / "checkpoints" / "best.pt",
        {"model": {"net.stem.weight": torch.zeros(8, 1, 3, 3)}, "settings": {"scale": 0.5}},
    )
    assert (
        run(["depth", "predict", str(sem_images), "--model", str(run_dir), "--out", str(tmp_path / "p")]) == 2
    )
    one_error_line(capsys, "does not fit method 'unet'")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "data, suffix", [(png_claiming(20000, 20000), ".png"), (tiff_claiming(100000, 100000), ".tif")]
)
def test_pixel_bombs_are_refused_from_the_header(tmp_path, capsys, data, suffix):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"bomb{suffix}").write_bytes(data)
    with pytest.raises(ImageReadError, match="the limit is"):
        read_image(tmp_path / "in" / f"bomb{suffix}")
    assert run(["depth", "predict", str(tmp_path / "in"), "--out", str(tmp_path / "p")]) == 2
    one_error_line(capsys, "the limit is")
    assert not (tmp_path / "p").exists()


def test_unreadable_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageReadError, match="cannot read"):
        read_image("/proc/self/mem")


# -- item 7: housekeeping


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_partials_of_killed_writers_are_removed(tmp_path):
    import socket

    host = socket.gethostname().replace(".", "_")
    dead = tmp_path / f".pred.{host}.{_dead_pid()}.abc.partial"
    live = tmp_path / f".pred.{host}.1.abc.partial"  # pid 1 always runs
    other_host = tmp_path / f".pred.elsewhere.{_dead_pid()}.abc.partial"
    legacy = tmp_path / ".pred.k2j3h4.partial"  # no owner to ask: kept
    dead_file = tmp_path / f".m.csv.{host}.{_dead_pid()}.x.tmp.csv"
    for d in (dead, live, other_host, legacy):
        d.mkdir()
        (d / "half.png").write_bytes(b"x")
    dead_file.write_text("half")
    with atomic_dir(tmp_path / "pred") as tmp:
        (tmp / "x.png").write_bytes(b"x")
    assert not dead.exists() and live.exists() and other_host.exists() and legacy.exists()
    refuse_existing(tmp_path / "m.csv")  # what a command checks before writing m.csv
    assert not dead_file.exists()
    assert remove_stale_temporaries(tmp_path / "pred") == []


def test_a_killed_predict_leaves_nothing_the_next_run_keeps(sem_images, tmp_path):
    (sem_images / "a.tif").unlink()
    code = (
        "import os, sys\n"
        "from micrometry.io.atomic import atomic_dir\n"
        f"with atomic_dir({str(tmp_path / 'pred')!r}) as tmp:\n"
        "    (tmp / 'half.png').write_bytes(b'x')\n"
        "    os._exit(9)\n"
    )  # killed mid-write: no clean-up runs
    assert (
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=60,
        ).returncode
        == 9
    )
    assert len(list(tmp_path.glob(".pred.*.partial"))) == 1
    assert run(["depth", "predict", str(sem_images), "--out", str(tmp_path / "pred")]) == 0
    assert list(tmp_path.glob(".pred.*")) == []


@pytest.mark.parametrize(
    "umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600), (0o002, 0o775, 0o664)]
)
def test_outputs_honour_the_umask(tmp_path, umask, folder_mode, file_mode):
    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            write_image(tmp / "a.png", np.zeros((4, 4), np.uint8))
        with atomic_path(tmp_path / "t.csv") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == folder_mode
    assert (tmp_path / "out" / "a.png").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "t.csv").stat().st_mode & 0o777 == file_mode


def test_particles_info_finds_a_truncated_image(coco_256x320, capsys):
    image = coco_256x320 / "images" / "a.png"
    image.write_bytes(image.read_bytes()[:200])
    assert run(["particles", "info", str(coco_256x320), "--json"]) == 2
    one_error_line(capsys, "truncated")
    assert run(["particles", "info", str(coco_256x320), "--json", "--no-check-images"]) == 0


def test_refuse_existing_checks_kind_and_place(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        refuse_existing(tmp_path / "f" / "out")
    with pytest.raises(InputError, match="exists and is not a folder"):
        refuse_existing(tmp_path / "f", overwrite=True, folder=True)
    refuse_existing(tmp_path / "new" / "deeper" / "out")  # missing folders are fine: they will be created
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device, message", [("cuda", "no CUDA device"), ("nonsense", "is not a device")])
def test_unusable_device_isone_error_line(sem_images, tmp_path, capsys, device, message):
    (sem_images / "a.tif").unlink()
    assert run(["depth", "predict", str(sem_images), "--device", device, "--out", str(tmp_path / "p")]) == 2
    one_error_line(capsys, message)
    assert not (tmp_path / "p").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_train_with_unusable_device_leaves_no_run_folder(tmp_path, capsys):
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    write_sem_dataset(
        tmp_path / "data",
        tmp_path / "truth",
        SemSynthConfig(seed=1, n_structures=2, n_sites=1, images_per_site=1, n_test=1),
    )
    assert (
        run(
            [
                "depth",
                "train",
                str(tmp_path / "data"),
                "--method",
                "unet",
                "--device",
                "nonsense",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    one_error_line(capsys, "is not a device")
    assert not (tmp_path / "run").exists()


def test_zip_inside_the_output_folder_is_refused(sem_images, tmp_path, capsys):
    (sem_images / "a.tif").unlink()
    for zip_path in (tmp_path / "p", tmp_path / "p" / "s.zip"):
        assert (
            run(["depth", "predict", str(sem_images), "--out", str(tmp_path / "p"), "--zip", str(zip_path)])
            == 2
        )
        one_error_line(capsys, "(--zip)")  # the CLI keeps every output apart from the others
    assert [p.name for p in tmp_path.iterdir()] == ["imgs"]
