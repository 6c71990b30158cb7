"""The Python locks: the runtime wheel needs no benchmark library, every venv installs from a lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH_ONLY = {"matplotlib", "hdrhistogram", "psutil"}


def _packages(lock: Path) -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for package in tomllib.loads(lock.read_text())["package"]:
        by_name.setdefault(package["name"], []).append(package)
    return by_name


def _closure(packages: dict[str, list[dict[str, Any]]], roots: list[str]) -> set[str]:
    """Every package reachable from `roots` through run-time dependencies (all forks of a name)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for version in packages.get(name, []):
            todo.extend(dep["name"] for dep in version.get("dependencies", []))
    return seen


def test_the_runtime_wheel_brings_no_benchmark_library() -> None:
    packages = _packages(REPO / "uv.lock")
    (project,) = packages["triton-gateway"]
    runtime = _closure(packages, [dep["name"] for dep in project["dependencies"]])
    assert not runtime & BENCH_ONLY, sorted(runtime & BENCH_ONLY)
    assert {dep["name"] for dep in project["optional-dependencies"]["bench"]} == BENCH_ONLY
    assert {"grpcio", "pydantic", "redis", "scipy"} <= runtime


def test_the_lock_holds_what_pyproject_names() -> None:
    """Every name pyproject.toml declares has a locked version (uv sync --locked checks the rest)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = [*project["project"]["dependencies"], *project["dependency-groups"]["dev"]]
    declared += [dep for deps in project["project"]["optional-dependencies"].values() for dep in deps]
    names = {re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower().replace("_", "-") for dep in declared}
    locked = set(_packages(REPO / "uv.lock"))
    assert names - locked == set()


def test_every_venv_is_installed_from_its_lock() -> None:
    makefile = (REPO / "Makefile").read_text()
    syncs = [line for line in makefile.splitlines() if " sync " in line]
    assert syncs and all("--locked" in line for line in syncs), syncs
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    assert installs and all("--require-hashes" in line for line in installs), installs
    triton = tomllib.loads((REPO / "deploy/triton-venv/pyproject.toml").read_text())
    locked = _packages(REPO / "deploy/triton-venv/uv.lock")
    assert [v["version"] for v in locked["nvidia-pytriton"]] == ["0.7.0"]
    assert all(v["version"].startswith("1.") for v in locked["numpy"]), "pytriton's stub needs numpy<2"
    assert "nvidia-pytriton==0.7.0" in triton["project"]["dependencies"]
