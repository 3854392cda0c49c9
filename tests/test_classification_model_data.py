"""The default defect model ships inside the package, so any install of graphrun has it.

It used to be found through the source tree, which a wheel install does not have. Here a
wheel is built from the sources, installed into a folder of its own, and asked for its
default model by a fresh interpreter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

from graphrun_agents.classification.model import DEFAULT_MODEL, inspect, read_model

REPO = Path(__file__).resolve().parents[1]
MODEL_IN_WHEEL = "graphrun_agents/classification/models/finger_follower_defects.onnx"


def test_the_default_model_is_package_data_found_with_importlib_resources() -> None:
    found = resources.files("graphrun_agents.classification").joinpath("models", "finger_follower_defects.onnx")
    assert found.is_file()
    assert str(DEFAULT_MODEL) == str(found)
    assert resources.files("graphrun_agents.classification").joinpath("models", "MODEL_CARD.md").is_file()
    assert inspect(read_model(DEFAULT_MODEL)).name == "finger-follower-defects"


def test_a_wheel_carries_the_model_and_an_install_of_it_finds_it(tmp_path: Path) -> None:
    # The build runs on a copy: an in-tree build would leave build/ in the working tree.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("runtime", "agents"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / file, source / file)
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(wheels), "."], cwd=source, capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("graphrun-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(MODEL_IN_WHEEL) == read_model(DEFAULT_MODEL)
        assert "graphrun_agents/classification/models/MODEL_CARD.md" in archive.namelist()

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                                "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=240)
    assert installed.returncode == 0, installed.stderr
    # A fresh interpreter from an unrelated folder, the installed copy first on its path.
    probe = ("import json, graphrun_agents; from graphrun_agents.classification.model import DEFAULT_MODEL; "
             "print(json.dumps([graphrun_agents.__file__, str(DEFAULT_MODEL), DEFAULT_MODEL.is_file()]))")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    package, model, exists = json.loads(ran.stdout)
    assert Path(package).is_relative_to(site) and Path(model).is_relative_to(site)
    assert exists
