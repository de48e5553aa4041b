"""One registry and one kind of checked configuration serve both jobs."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pytest

from micrometry.config import Config, make_config, param
from micrometry.errors import InputError
from micrometry.registry import Registry, import_submodules


def test_register_create_list_and_unknown_names():
    models = Registry("toy model")

    @models.register("b")
    def make_b(**cfg):
        return ("b", cfg)

    models.register("a")(dict)
    assert models.list() == ["a", "b"] and "a" in models and "c" not in models
    assert models.create("b", width=3) == ("b", {"width": 3})
    with pytest.raises(InputError, match=r"unknown toy model 'c'; choose one of: a, b"):
        models.create("c")
    with pytest.raises(ValueError, match="registered twice"):
        models.register("a")(dict)


def test_a_new_model_is_one_module_in_the_package(tmp_path, monkeypatch):
    """Discovery imports every module of the registry's package, sub-packages included."""
    package = tmp_path / "toyjob"
    (package / "family").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from micrometry.registry import Registry\nTOYS = Registry('toy', 'toyjob')\n"
    )
    (package / "family" / "__init__.py").write_text("")
    (package / "family" / "mine.py").write_text(
        "from toyjob import TOYS\n\n@TOYS.register('mine')\nclass Mine:\n    def __init__(self, **cfg):\n"
        "        self.cfg = cfg\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import toyjob

        assert toyjob.TOYS.list() == ["mine"]  # nothing imported it but the registry's first look-up
        assert toyjob.TOYS.create("mine", k=1).cfg == {"k": 1}
        assert "toyjob.family.mine" in import_submodules("toyjob")
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "toyjob"]:
            del sys.modules[name]


def test_both_jobs_use_the_one_registry_with_their_packages():
    from micrometry.depth.methods import DEPTH_METHODS
    from micrometry.particles.models import PARTICLE_MODELS

    assert type(DEPTH_METHODS) is type(PARTICLE_MODELS) is Registry
    assert {"ae", "unet", "unet-weak", "lookup", "cyclegan", "classifier"} <= set(DEPTH_METHODS.list())
    assert {"center-offset", "unet-watershed", "watershed", "maskrcnn"} <= set(PARTICLE_MODELS.list())
    method = DEPTH_METHODS.create("unet", width=4)
    assert method.cfg.width == 4 and method.config()["width"] == 4
    entry = PARTICLE_MODELS.create("center-offset")
    assert callable(entry.build_task)  # one name for the task builder in both jobs
    assert callable(method.build_task)


@dataclass
class Toy(Config):
    width: int = param(8, ge=1)
    lr: float = param(1e-3, ge=0)
    frac: float = param(0.1, ge=0, lt=1)
    mode: str = param("a", choices=("a", "b"))
    flag: bool = param(False)
    size: float | None = param(None, gt=0)
    widths: list[int] = param([1, 2])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"width": 0}, "parameter width must be at least 1, not 0"),
        ({"width": 1.5}, "parameter width must be an integer, not 1.5"),
        ({"width": True}, "parameter width must be an integer"),
        ({"lr": "abc"}, "parameter lr must be a finite number, not 'abc'"),
        ({"lr": float("nan")}, "parameter lr must be a finite number"),
        ({"lr": -1}, "parameter lr must not be negative, not -1"),
        ({"frac": 1}, r"parameter frac must be in \[0, 1\), not 1"),
        ({"mode": "c"}, "parameter mode must be one of a, b, not 'c'"),
        ({"flag": 1}, "parameter flag must be true or false, not 1"),
        ({"size": 0}, "parameter size must be positive, not 0"),
        ({"widths": 3}, "parameter widths must be a list"),
        ({"widths": [1, 2.5]}, "parameter widths must be an integer, not 2.5"),
    ],
)
def test_config_fields_are_checked_by_type_and_range(values, message):
    with pytest.raises(InputError, match=f"^toy 'x': {message}"):
        make_config(Toy, values, "toy 'x'")
    with pytest.raises(InputError, match=message):  # built directly: the same check
        Toy(**values)


def test_config_coerces_numbers_and_round_trips_through_json():
    toy = make_config(Toy, {"width": 4.0, "lr": 1, "size": 2, "widths": [3.0]}, "toy")
    assert (toy.width, toy.lr, toy.size, toy.widths) == (4, 1.0, 2.0, [3])
    assert isinstance(toy.width, int) and isinstance(toy.lr, float)
    assert make_config(Toy, json.loads(json.dumps(toy.to_dict())), "toy") == toy
    assert Toy().widths is not Toy().widths  # list defaults are not shared
    with pytest.raises(InputError, match="^toy has no parameter\\(s\\) depth; known: flag, frac, lr"):
        make_config(Toy, {"depth": 3}, "toy")


def test_a_config_subclass_must_be_a_dataclass():
    class Forgot(Toy):
        extra: int = param(1, ge=0)

    with pytest.raises(TypeError, match="must be decorated with @dataclass"):
        make_config(Forgot, {}, "toy")


def test_particle_train_settings_are_checked_by_their_fields():
    from micrometry.particles.models.training import TrainSettings

    with pytest.raises(InputError, match="parameter crop must be at least 32, not 8"):
        TrainSettings(crop=8)
    with pytest.raises(InputError, match="parameter time_budget_s must not be negative"):
        TrainSettings(time_budget_s=-1)
    assert TrainSettings(epochs=3.0, time_budget_s=None).epochs == 3


def test_particle_model_files_have_one_name_each():
    """One folder per model family; no module name repeats inside the particles job."""
    from pathlib import Path

    import micrometry.particles as particles

    root = Path(particles.__file__).parent
    names = [p.name for p in root.rglob("*.py") if p.name != "__init__.py"]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
    families = {p.parent.name for p in (root / "models").rglob("*_models.py")}
    assert families == {"dense", "detection"}


def test_a_lookup_imports_only_the_module_named_after_the_entry():
    """``unet-weak`` -> ``unet_weak.py``: loading one depth method imports no GAN method (nor scipy)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from micrometry.depth.methods import DEPTH_METHODS, load_depth_model\n"
        "load_depth_model('shipped', device='cpu')\n"
        "DEPTH_METHODS.create('ae')\n"
        "print(sorted(m for m in sys.modules if m.startswith('micrometry.depth.methods.')))\n"
        "print('scipy' in sys.modules)\n"
        "print(len(DEPTH_METHODS.list()) >= 6, 'micrometry.depth.methods.lookup' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "['micrometry.depth.methods.ae', 'micrometry.depth.methods.base', "
        "'micrometry.depth.methods.unet', 'micrometry.depth.methods.unet_weak']",
        "False",
        "True True",  # list() discovers every module
    ]
