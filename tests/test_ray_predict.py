"""``--engine ray``: batch prediction on a local Ray instance writes what plain prediction writes."""

import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from helpers import TINY_UNET_OPTIONS, depth_predict_argv, synth_particles_argv
from micrometry.cli import run as run_cli
from micrometry.io.image import read_image, write_image

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'micrometry[scale]'")


@pytest.fixture(scope="module")
def local_ray():
    """One small Ray instance for the module (starting Ray takes seconds); prediction reuses it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def particle_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("particles")
    assert (
        run(
            synth_particles_argv(
                root / "data", root / "truth", n_train=0, n_test=5, n_batch=0, height=160, width=200
            )
        )
        == 0
    )
    return root / "data" / "test" / "images"


def run(args):
    return run_cli([str(a) for a in args])


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_ray_particles_predict_equals_plain(local_ray, particle_images, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted(particle_images.iterdir()):
        (images / src.name).write_bytes(src.read_bytes())
    # one colour image: its conversion warning must reach the user from a Ray actor too
    gray = read_image(images / "test_0003.png")
    Image.fromarray(np.stack([gray, gray // 2, gray], axis=-1).astype(np.uint8), "RGB").save(
        images / "test_0003.png"
    )
    plain, distributed = tmp_path / "plain", tmp_path / "ray"
    capsys.readouterr()
    assert (
        run(["particles", "predict", images, "--model", "watershed", "--out", plain, "--batch-size", "2"])
        == 0
    )
    plain_warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    # batch size 2 over 5 images: the two actors get uneven batches and may finish in any order
    assert (
        run(
            [
                "particles",
                "predict",
                images,
                "--model",
                "watershed",
                "--out",
                distributed,
                "--engine",
                "ray",
                "--ray-workers",
                "2",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    ray_warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    # the colour conversion, and whatever else the plain run warns of (e.g. an unreliable image)
    assert sum("test_0003.png: colour image" in line for line in plain_warnings) == 1
    assert sorted(ray_warnings) == sorted(plain_warnings)
    expected, got = _files(plain), _files(distributed)
    assert len([name for name in expected if name.startswith("labels/")]) == 5
    assert (
        b'"segmentation"' in expected["results.json"]
    )  # particles were found: the comparison means something
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], name


def test_engine_ray_without_ray_installed(particle_images, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when Ray is not installed
    out = tmp_path / "pred"
    assert run(["particles", "predict", particle_images, "--out", out, "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --engine ray needs Ray") and "micrometry[scale]" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "spark"], "unknown engine 'spark'"),
        (["--ray-address", "auto"], "--ray-address needs --engine ray"),
    ],
)
def test_bad_engine_options(particle_images, tmp_path, capsys, args, message):
    out = tmp_path / "pred"
    assert run(["particles", "predict", particle_images, "--out", out, *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    root = tmp_path_factory.mktemp("depth")
    write_sem_dataset(
        root / "data",
        root / "truth",
        SemSynthConfig(seed=3, n_structures=6, n_sites=4, images_per_site=3, n_test=7),
    )
    assert (
        run(["depth", "train", root / "data", "--out", root / "run", *TINY_UNET_OPTIONS, "--epochs", "1"])
        == 0
    )
    return root


@pytest.mark.slow
def test_ray_depth_predict_equals_plain(local_ray, depth_run, tmp_path):
    # the Ray run reads a list of files, the plain run the dataset folder: the same images
    listed = tmp_path / "images.txt"
    listed.write_text("".join(f"{p}\n" for p in sorted((depth_run / "data/test/SEM").iterdir())))
    common = ["depth", "predict", "--model", depth_run / "run", "--batch-size", "3"]
    # one thread, as each actor has: float sums then add up in the same order
    assert (
        run(
            [
                *common,
                depth_run / "data",
                "--out",
                tmp_path / "plain",
                "--zip",
                tmp_path / "plain.zip",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert (
        run(
            [
                *common,
                listed,
                "--out",
                tmp_path / "ray",
                "--zip",
                tmp_path / "ray.zip",
                "--engine",
                "ray",
                "--ray-workers",
                "2",
            ]
        )
        == 0
    )
    expected, got = _files(tmp_path / "plain"), _files(tmp_path / "ray")
    assert len(expected) == 7 and got == expected
    with zipfile.ZipFile(tmp_path / "plain.zip") as a, zipfile.ZipFile(tmp_path / "ray.zip") as b:
        assert a.namelist() == b.namelist() and all(a.read(n) == b.read(n) for n in a.namelist())


@pytest.mark.slow
def test_ray_depth_predict_bad_image(local_ray, depth_run, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted((depth_run / "data" / "test" / "SEM").iterdir())[:2]:
        (images / src.name).write_bytes(src.read_bytes())
    write_image(images / "zz_wrong_size.png", np.zeros((10, 10), np.uint8))
    out = tmp_path / "pred"
    assert run(depth_predict_argv(images, depth_run / "run", out, engine="ray", batch_size=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "zz_wrong_size.png" in err[-1] and "72x48" in err[-1]
    assert not out.exists()
