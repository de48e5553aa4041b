"""Exported models (``micrometry export``), ``--model shipped``, and hostile or broken model files.

Run folders here are built by hand from the shipped weights (no training): a
checkpoint written by ``save_checkpoint`` as the training loop writes it.
"""

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from micrometry.cli import run
from micrometry.io.image import read_image, write_image
from micrometry.modelfile import read_model
from micrometry.train import save_checkpoint


class Hostile:
    """A pickle that, if ever unpickled, creates the file MARKER."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_files(folder: Path, marker: Path) -> dict[str, Path]:
    """A bare pickle and a torch.save zip, both running ``touch MARKER`` when unpickled."""
    folder.mkdir(parents=True, exist_ok=True)
    bare, zipped = folder / "bare.pkl", folder / "zipped.pt"
    bare.write_bytes(pickle.dumps(Hostile(marker)))
    torch.save({"format": "micrometry-checkpoint", "state": Hostile(marker)}, zipped)
    return {"bare": bare, "zipped": zipped}


def shipped(job: str) -> Path:
    from micrometry.depth.methods.base import shipped_model_dir as depth_dir
    from micrometry.particles.models.base import shipped_model_dir as particles_dir

    return depth_dir() if job == "depth" else particles_dir()


def run_from_model(model_dir: Path, run_dir: Path) -> Path:
    """A finished training run folder holding the weights of an exported model, as training leaves it."""
    exported = read_model(model_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    if exported.job == "depth":
        config = {"method": exported.model, "method_config": exported.settings["method_config"], "seed": 0}
        payload = {
            "method": exported.model,
            "method_config": exported.settings["method_config"],
            "state": {},
            "rng": {},
            "loop": {},
            "model": exported.state,
        }
    else:
        s = exported.settings
        config = {
            "model": exported.model,
            "settings": {"model": exported.model, "scale": s["scale"], "widths": s["widths"]},
        }
        payload = {
            "kind": "particles-dense",
            "model": exported.model,
            **s,
            "state": {"modules": exported.state["modules"], "optimizers": {}},
            "rng": {},
            "loop": {},
        }
    (run_dir / "config.json").write_text(json.dumps(config))
    save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
    return run_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of SEM images and one of particle photos."""
    from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    (root / "sem").mkdir()
    for i in range(3):
        write_image(root / "sem" / f"s{i}.png", rng.integers(60, 200, (72, 48), dtype=np.uint8))
    (root / "photos").mkdir()
    for i in range(2):
        scene = render_image(SuspensionParams(height=192, width=256), image_rng(7, "test", i))
        write_image(root / "photos" / f"p{i}.png", scene.image)
    return root


def predicted(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): read_image(p) for p in sorted(folder.rglob("*.png"))}


# -- export ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["depth", "particles"])
def test_export_of_a_run_predicts_exactly_as_the_run(job, inputs, tmp_path, capsys, monkeypatch):
    # float32 throughout: the shipped particle model also has an int8 network, this run does not
    # (tests/test_particles_int8.py checks that export carries one)
    monkeypatch.setenv("MICROMETRY_PRECISION", "fp32")
    run_dir = run_from_model(shipped(job), tmp_path / "run")
    model = tmp_path / "model"
    assert run(["export", run_dir, "--out", model]) == 0
    assert f"exported {job} model" in capsys.readouterr().out
    document = json.loads((model / "model.json").read_text())
    assert document["format"] == "micrometry-model" and document["job"] == job
    assert document["provenance"]["run"] == str(run_dir.resolve()) and document["preprocessing"]
    assert sorted(p.name for p in model.iterdir()) == ["model.json", "weights.safetensors"]
    # far smaller than the run's checkpoint would be with optimiser state; here: the same weights, no pickle
    assert (model / "weights.safetensors").stat().st_size < 2_500_000

    images = inputs / ("sem" if job == "depth" else "photos")
    outs = {}
    for label, source in (("run", run_dir), ("export", model), ("shipped", "shipped")):
        outs[label] = tmp_path / f"pred-{label}"
        assert run([job, "predict", images, "--model", source, "--out", outs[label]]) == 0
    by_run, by_export, by_shipped = (predicted(outs[k]) for k in ("run", "export", "shipped"))
    assert by_run.keys() == by_export.keys() == by_shipped.keys() and len(by_run) >= 2
    for name in by_run:
        assert np.array_equal(by_run[name], by_export[name]) and np.array_equal(
            by_run[name], by_shipped[name]
        )

    # refuses to clobber, replaces with --overwrite
    assert run(["export", run_dir, "--out", model]) == 2
    assert "already exists" in capsys.readouterr().err
    assert run(["export", run_dir, "--out", model, "--overwrite"]) == 0


def test_export_refuses_what_is_not_a_finished_run(tmp_path, capsys):
    assert run(["export", tmp_path / "nothing", "--out", tmp_path / "m"]) == 2
    (tmp_path / "unfinished" / "checkpoints").mkdir(parents=True)
    (tmp_path / "unfinished" / "config.json").write_text(json.dumps({"method": "unet-weak"}))
    save_checkpoint(tmp_path / "unfinished" / "checkpoints" / "best.pt", {"method": "unet-weak", "state": {}})
    assert run(["export", tmp_path / "unfinished", "--out", tmp_path / "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such run" in err[0] and "training did not finish" in err[1]
    assert not (tmp_path / "m").exists()


# -- --model shipped ---------------------------------------------------------------------------------


def test_shipped_means_the_default_everywhere():
    from micrometry.depth.methods import load_depth_model
    from micrometry.particles.models import load_particle_model

    image = np.full((3, 72, 48), 120, np.uint8)
    assert np.array_equal(
        load_depth_model("shipped", device="cpu").predict(image),
        load_depth_model(shipped("depth"), device="cpu").predict(image),
    )
    assert (
        load_particle_model("shipped").name
        == load_particle_model(None).name
        == read_model(shipped("particles")).model
    )


def test_shipped_particle_model_is_deterministic_and_sane():
    from micrometry.particles.models import load_particle_model
    from micrometry.particles.models.validation import evaluate_label_images, truth_dataset
    from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

    # a full-size photo of the kind it was trained on (1024x1280; ~100 particles)
    scene = render_image(SuspensionParams(), image_rng(5, "test", 1))
    first = load_particle_model("shipped").segment(scene.image)
    again = load_particle_model("shipped").segment(scene.image)
    assert np.array_equal(first.labels, again.labels) and np.array_equal(first.scores, again.scores)
    n_true = len(np.unique(scene.labels)) - 1
    assert 0.7 * n_true <= first.count <= 1.4 * n_true, (first.count, n_true)
    assert ((first.scores > 0) & (first.scores <= 1)).all()
    metrics = evaluate_label_images([(first.labels, first.scores)], truth_dataset([scene.labels]))
    assert metrics["F1@0.5"] > 0.6 and metrics["AP"] > 0.35, metrics  # measured 0.78 and 0.53


def test_help_says_what_shipped_is(capsys):
    for job in ("depth", "particles"):
        assert run([job, "predict", "--help"]) == 0
        assert "'shipped' (the" in capsys.readouterr().out


# -- hostile and broken files --------------------------------------------------------------------------


def _one_line(capsys) -> str:
    """The one error line (dataset repair warnings before it are the training data's, not the model's)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("kind", ["bare", "zipped"])
def test_a_hostile_checkpoint_is_refused_and_never_run(kind, inputs, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = hostile_files(tmp_path / "evil", marker)[kind]
    data = tmp_path / "data"
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset
    from particle_scenes import write_coco_folder

    write_sem_dataset(
        data / "sem",
        data / "sem-truth",
        SemSynthConfig(seed=1, n_structures=2, n_sites=2, images_per_site=1, n_test=2),
    )
    coco = write_coco_folder(data / "coco", n_images=1, height=64, width=64, n=3)

    for job, config in (
        ("depth", {"method": "unet", "method_config": {"width": 4}, "seed": 0}),
        ("particles", {"model": "center-offset", "settings": {"scale": 1.0, "epochs": 1}}),
    ):
        run_dir = tmp_path / f"run-{job}"
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(config))
        for name in ("best", "last"):
            shutil.copy(evil, run_dir / "checkpoints" / f"{name}.pt")
        images = inputs / ("sem" if job == "depth" else "photos")
        training_data = data / "sem" if job == "depth" else coco
        commands = {
            "predict": [job, "predict", images, "--model", run_dir, "--out", tmp_path / f"pred-{job}"],
            "resume": [job, "train", training_data, "--out", run_dir, "--resume"],
            "export": ["export", run_dir, "--out", tmp_path / f"model-{job}"],
        }
        for what, argv in commands.items():
            assert run(argv) == 2, (job, what)
            line = _one_line(capsys)
            checkpoint = run_dir / "checkpoints" / ("last.pt" if what == "resume" else "best.pt")
            assert line == f"error: {checkpoint}: not a micrometry model", (job, what, line)
            assert not marker.exists(), (job, what)
        assert not (tmp_path / f"pred-{job}").exists() and not (tmp_path / f"model-{job}").exists()

        # the same file as the weights of an exported model folder
        model = tmp_path / f"exported-{job}"
        shutil.copytree(shipped(job), model)
        shutil.copy(evil, model / "weights.safetensors")
        assert run([job, "predict", images, "--model", model, "--out", tmp_path / f"pred2-{job}"]) == 2
        assert _one_line(capsys) == f"error: {model / 'weights.safetensors'}: not a micrometry model"
        assert not marker.exists()


@pytest.mark.parametrize("job", ["depth", "particles"])
def test_broken_exported_models_are_one_line_errors(job, inputs, tmp_path, capsys):
    images = inputs / ("sem" if job == "depth" else "photos")
    other = "particles" if job == "depth" else "depth"

    def predict(model) -> str:
        out = tmp_path / "pred"
        assert run([job, "predict", images, "--model", model, "--out", out]) == 2
        assert not out.exists()
        return _one_line(capsys)

    truncated = tmp_path / "truncated"
    shutil.copytree(shipped(job), truncated)
    weights = (truncated / "weights.safetensors").read_bytes()
    (truncated / "weights.safetensors").write_bytes(weights[: len(weights) // 2])
    assert predict(truncated) == f"error: {truncated / 'weights.safetensors'}: not a micrometry model"

    garbage = tmp_path / "garbage"
    shutil.copytree(shipped(job), garbage)
    (garbage / "weights.safetensors").write_bytes(b"\x00garbage" * 100)
    assert predict(garbage).endswith("not a micrometry model")

    unknown = tmp_path / "unknown"
    shutil.copytree(shipped(job), unknown)
    document = json.loads((unknown / "model.json").read_text())
    (unknown / "model.json").write_text(json.dumps({**document, "model": "no-such-model"}))
    assert "unknown" in predict(unknown) and "'no-such-model'" in predict(unknown)

    bad_json = tmp_path / "bad-json"
    shutil.copytree(shipped(job), bad_json)
    (bad_json / "model.json").write_text("{not json")
    assert predict(bad_json) == f"error: {bad_json / 'model.json'}: not a micrometry model"

    # a model of the other job, exported or as a run folder
    assert predict(shipped(other)) == f"error: {shipped(other)}: is a {other} model, not a {job} model"
    other_run = run_from_model(shipped(other), tmp_path / "other-run")
    assert predict(other_run) == f"error: {other_run}: is a {other} model, not a {job} model"


def test_serve_refuses_a_hostile_model_before_serving(tmp_path, monkeypatch, capsys):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: served.append(a))
    marker = tmp_path / "MARKER"
    model = tmp_path / "exported"
    shutil.copytree(shipped("particles"), model)
    shutil.copy(hostile_files(tmp_path / "evil", marker)["zipped"], model / "weights.safetensors")
    assert run(["serve", "--particle-model", model]) == 2
    assert _one_line(capsys) == f"error: {model / 'weights.safetensors'}: not a micrometry model"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"method": "unet-weak"}))
    shutil.copy(hostile_files(tmp_path / "evil", marker)["zipped"], run_dir / "checkpoints" / "best.pt")
    assert run(["serve", "--depth-model", run_dir]) == 2
    assert _one_line(capsys) == f"error: {run_dir / 'checkpoints' / 'best.pt'}: not a micrometry model"
    assert not served and not marker.exists()
    assert run(["serve", "--particle-model", "watershed"]) == 0 and len(served) == 1  # shipped depth model


def test_state_with_arrays_and_extras_survives_a_model_folder(tmp_path):
    from micrometry.modelfile import ExportedModel, write_model

    state = {
        "modules": {"net": {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor(7)}},
        "extra": {
            "banks": {1: {"images": torch.ones(2, 2).half(), "depth": np.arange(4, dtype=np.uint8)}},
            "affine": [1.5, -2.0],
            "ridge": None,
        },
    }
    write_model(tmp_path / "m", ExportedModel("depth", "lookup", {"method_config": {"k": 1}}, state))
    back = read_model(tmp_path / "m").state
    assert torch.equal(back["modules"]["net"]["w"], state["modules"]["net"]["w"])
    assert back["modules"]["net"]["n"].item() == 7
    bank = back["extra"]["banks"]["1"]  # JSON keys are strings; methods convert them (int(case))
    assert bank["images"].dtype == torch.float16 and isinstance(bank["depth"], np.ndarray)
    assert bank["depth"].dtype == np.uint8 and bank["depth"].tolist() == [0, 1, 2, 3]
    assert back["extra"]["affine"] == [1.5, -2.0] and back["extra"]["ridge"] is None
    with pytest.raises(Exception, match="already exists"):
        write_model(tmp_path / "m", ExportedModel("depth", "lookup", {}, state))
