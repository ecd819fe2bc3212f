"""onnxruntime on CUDA: find and load the CUDA/cuDNN libraries of the nvidia-* pip packages,
tell whether the CUDA provider really starts, and make sessions for either provider.

    python -m bench.gpu.runtime                    # what was loaded, and the CUDA verdict (JSON)
    python -m bench.gpu.runtime --library-path     # the nvidia lib folders, ':'-joined

onnxruntime-gpu installed with `pip --target` does not sit beside the nvidia packages, so its
own preload_dlls() would not find them: the folders are looked up on sys.path and passed in.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# CUDA 13 wheels share nvidia/cu13/lib; CUDA 12 ones have one folder per library
CUDA_LIB_GLOBS = ("nvidia/cu1*/lib", "nvidia/*/lib")
CUDNN_LIB = "nvidia/cudnn/lib"


@dataclass
class CudaStatus:
    available: bool
    reason: str  # why not, or the device when it is
    providers: list[str]
    preload: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def nvidia_lib_dirs() -> list[Path]:
    """Every nvidia/*/lib folder on sys.path, CUDA 13's shared one first."""
    found: list[Path] = []
    for entry in map(Path, sys.path):
        for pattern in CUDA_LIB_GLOBS:
            found += [p for p in sorted(entry.glob(pattern)) if p.is_dir() and p not in found]
    return found


def _dir_holding(dirs: list[Path], prefix: str) -> Path | None:
    return next((d for d in dirs if any(d.glob(f"{prefix}*"))), None)


def _quiet_preload(**kwargs) -> str:
    """preload_dlls() prints its failures; keep them for the report instead."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ort.preload_dlls(**kwargs)
    return out.getvalue().strip()


@functools.cache
def preload_cuda() -> dict:
    """Load CUDA and cuDNN from the nvidia-* packages before any CUDA session is made."""
    if not hasattr(ort, "preload_dlls"):
        return {"skipped": f"onnxruntime {ort.__version__} has no preload_dlls"}
    dirs = nvidia_lib_dirs()
    cuda_dir, cudnn_dir = _dir_holding(dirs, "libcudart.so"), _dir_holding(dirs, "libcudnn.so")
    report: dict = {"cuda_dir": str(cuda_dir), "cudnn_dir": str(cudnn_dir)}
    try:
        if cuda_dir is None and cudnn_dir is None:
            report["default"] = _quiet_preload()
        if cuda_dir is not None:
            report["cuda"] = _quiet_preload(cuda=True, cudnn=False, directory=str(cuda_dir))
        if cudnn_dir is not None:
            report["cudnn"] = _quiet_preload(cuda=False, cudnn=True, directory=str(cudnn_dir))
    except Exception as error:  # a bad folder must not stop a CPU run
        report["error"] = f"{type(error).__name__}: {error}"
    log.info("preload: %s", report)
    return report


def session_options(threads: int = 1) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def make_session(
    onnx_bytes: bytes, provider: str, threads: int = 1, **cuda_options: str
) -> ort.InferenceSession:
    """A session on `provider` ("cpu" or "cuda"); CUDA must really start or this raises."""
    if provider == "cpu":
        return ort.InferenceSession(onnx_bytes, session_options(threads), providers=[CPU])
    preload_cuda()
    session = ort.InferenceSession(
        onnx_bytes, session_options(threads), providers=[(CUDA, cuda_options), CPU]
    )
    if session.get_providers()[0] != CUDA:
        raise RuntimeError(f"CUDA provider did not start (session has {session.get_providers()})")
    return session


def _device_name() -> str:
    try:
        import torch
    except ImportError:
        return "a CUDA device"
    if not torch.cuda.is_available():
        return ""
    return torch.cuda.get_device_name(0)


@functools.cache
def cuda_status() -> CudaStatus:
    """Whether a CUDA session really starts here, and if not, why."""
    providers = ort.get_available_providers()
    preload = preload_cuda()
    if CUDA not in providers:
        reason = f"onnxruntime {ort.__version__} has no CUDA provider (has {providers})"
        return CudaStatus(False, reason, providers, preload)
    from bench.gpu.graph import dense_onnx

    try:
        make_session(dense_onnx(), "cuda")
    except Exception as error:
        reason = f"CUDA provider listed but does not start: {error}"
        return CudaStatus(False, reason[:500], providers, preload)
    device = _device_name()
    if not device:
        return CudaStatus(False, "torch sees no CUDA device", providers, preload)
    return CudaStatus(True, device, providers, preload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library-path", action="store_true")
    args = parser.parse_args()
    if args.library_path:
        print(":".join(str(d) for d in nvidia_lib_dirs()))
        return
    print(json.dumps(cuda_status().to_dict(), indent=2))


if __name__ == "__main__":
    main()
