"""session.run of the dense DIN graph on the CPU and CUDA providers, one process, one machine.

Every CUDA way of calling the graph is timed at each (T, C), and its scores are compared with
the CPU provider's on the same inputs:

  run               session.run, numpy in and out
  bound_host        I/O binding, host inputs and a host output (the service's Scorer)
  bound_device_out  host inputs, the output in a preallocated CUDA OrtValue, then copied back
  bound_device_all  inputs copied into fixed CUDA OrtValues, output there too, copied back
  device_only       fixed CUDA inputs and output, no copies: the graph alone
  cuda_graph        bound_device_all on a fixed-shape graph with enable_cuda_graph
  no_tf32           bound_host with use_tf32=0 (the default lets cuBLAS round fp32 to TF32)
  fp16              bound_host on the graph computed in fp16 (fp32 at its edges)

Batching runs B users per call on each provider's service path (CPU run, CUDA bound_host).

    python -m bench.gpu.micro --quick        # prints the rows as JSON
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import onnxruntime as ort

from bench.gpu.graph import OUTPUT, dense_onnx, feeds, random_inputs
from bench.gpu.runtime import cuda_status, make_session
from bench.gpu.timing import Budget, Stats, time_call

log = logging.getLogger(__name__)
SHAPES = ((50, 100), (100, 1000), (200, 2000))  # (T, C)
BATCHES = (1, 8, 32)
BATCH_SHAPES = {"cpu": ((50, 100),), "cuda": ((50, 100), (100, 1000))}
CUDA_METHODS = (
    "run",
    "bound_host",
    "bound_device_out",
    "bound_device_all",
    "device_only",
    "cuda_graph",
    "no_tf32",
    "fp16",
)
Inputs = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Method:
    call: Callable[[], object]
    fetch: Callable[[], np.ndarray]  # the scores of the last call, on the host


@dataclass
class Cell:
    provider: str
    method: str
    b: int
    t: int
    c: int
    stats: Stats | None
    max_abs_diff: float | None = None  # against the CPU provider, same inputs
    error: str | None = None

    def to_dict(self) -> dict:
        row = {k: v for k, v in self.__dict__.items() if k != "stats"}
        if self.stats is not None:
            row |= self.stats.to_dict()
            row["candidates_per_s"] = self.b * self.c / (self.stats.p50_ms / 1e3)
        return row


def last_output(call: Callable[[], np.ndarray]) -> Method:
    box: list[np.ndarray] = []

    def remember() -> np.ndarray:
        box[:] = [call()]
        return box[0]

    return Method(remember, lambda: box[0] if box else call())


def plain(session: ort.InferenceSession, inputs: Inputs) -> Method:
    named = feeds(inputs)
    return last_output(lambda: session.run([OUTPUT], named)[0])


def bound_host(session: ort.InferenceSession, inputs: Inputs) -> Method:
    named = feeds(inputs)

    def call() -> np.ndarray:
        binding = session.io_binding()
        for name, array in named.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(OUTPUT, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    return last_output(call)


def ort_device(provider: str) -> str:
    return "cuda" if provider == "cuda" else "cpu"


def output_value(inputs: Inputs, device: str) -> ort.OrtValue:
    b, c = inputs[0].shape[:2]
    return ort.OrtValue.ortvalue_from_shape_and_type([b, c], np.float32, device, 0)


def bound_device_out(session: ort.InferenceSession, inputs: Inputs, device: str) -> Method:
    named, out = feeds(inputs), output_value(inputs, device)
    binding = session.io_binding()
    binding.bind_ortvalue_output(OUTPUT, out)

    def call() -> np.ndarray:
        for name, array in named.items():
            binding.bind_cpu_input(name, array)
        session.run_with_iobinding(binding)
        return out.numpy()

    return Method(call, out.numpy)


def device_binding(session: ort.InferenceSession, inputs: Inputs, device: str):
    """A binding to fixed device buffers: (binding, input values by name, output value)."""
    named = feeds(inputs)
    values = {name: ort.OrtValue.ortvalue_from_numpy(a, device, 0) for name, a in named.items()}
    out = output_value(inputs, device)
    binding = session.io_binding()
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    binding.bind_ortvalue_output(OUTPUT, out)
    return binding, values, out


def bound_device_all(session: ort.InferenceSession, inputs: Inputs, device: str) -> Method:
    binding, values, out = device_binding(session, inputs, device)
    named = feeds(inputs)

    def call() -> np.ndarray:
        for name, array in named.items():
            values[name].update_inplace(array)
        session.run_with_iobinding(binding)
        return out.numpy()

    return Method(call, out.numpy)


def device_only(session: ort.InferenceSession, inputs: Inputs, device: str) -> Method:
    binding, _, out = device_binding(session, inputs, device)
    return Method(lambda: session.run_with_iobinding(binding), out.numpy)


class Sessions:
    """Sessions made once and shared by the cells; fixed-shape ones per (B, T, C)."""

    def __init__(self, threads: int) -> None:
        self.onnx = dense_onnx()
        self.threads = threads
        self._made: dict[tuple, ort.InferenceSession] = {}

    def get(self, provider: str, variant: str = "", shape: tuple = ()) -> ort.InferenceSession:
        key = (provider, variant, shape)
        if key not in self._made:
            self._made[key] = self._make(provider, variant, shape)
        return self._made[key]

    def _make(self, provider: str, variant: str, shape: tuple) -> ort.InferenceSession:
        if variant == "fp16":
            return make_session(dense_onnx(fp16=True), provider, self.threads)
        if variant == "no_tf32":
            return make_session(self.onnx, provider, self.threads, use_tf32="0")
        if variant == "cuda_graph":
            static = dense_onnx(static=shape)
            return make_session(static, provider, self.threads, enable_cuda_graph="1")
        return make_session(self.onnx, provider, self.threads)


def cuda_method(sessions: Sessions, name: str, inputs: Inputs, provider: str = "cuda") -> Method:
    """One of CUDA_METHODS; on provider "cpu" the same calls run on host buffers (a dry run)."""
    b, c, _ = inputs[0].shape
    t, device = inputs[1].shape[1], ort_device(provider)
    if name == "run":
        return plain(sessions.get(provider), inputs)
    if name == "bound_host":
        return bound_host(sessions.get(provider), inputs)
    if name in ("no_tf32", "fp16"):
        return bound_host(sessions.get(provider, name), inputs)
    if name == "cuda_graph":
        return bound_device_all(sessions.get(provider, name, (b, t, c)), inputs, device)
    builders = {
        "bound_device_out": bound_device_out,
        "bound_device_all": bound_device_all,
        "device_only": device_only,
    }
    return builders[name](sessions.get(provider), inputs, device)


def measure(
    provider: str,
    name: str,
    make: Callable[[], Method],
    inputs: Inputs,
    budget: Budget,
    ref: np.ndarray | None,
) -> Cell:
    """Time one method; its max abs diff against `ref` (the CPU provider's scores) if given."""
    (b, c, _), t = inputs[0].shape, inputs[1].shape[1]
    try:
        method = make()
        stats = time_call(method.call, budget)
        diff = None if ref is None else float(np.abs(method.fetch() - ref).max())
    except Exception as error:  # one failing method (say CUDA graphs) must not end the run
        log.warning("%s %s at B=%d T=%d C=%d failed: %s", provider, name, b, t, c, error)
        return Cell(provider, name, b, t, c, None, error=f"{type(error).__name__}: {error}"[:400])
    log.info("%s %-16s B=%-2d T=%-3d C=%-4d p50 %.3f ms", provider, name, b, t, c, stats.p50_ms)
    return Cell(provider, name, b, t, c, stats, diff)


def cpu_reference(sessions: Sessions, inputs: Inputs) -> np.ndarray:
    return plain(sessions.get("cpu"), inputs).call()


def shape_cells(sessions: Sessions, t: int, c: int, budget: Budget, cuda: bool) -> list[Cell]:
    """B=1 at (T, C): the CPU provider's session.run, then every CUDA method."""
    inputs = random_inputs(1, t, c)
    ref = cpu_reference(sessions, inputs)
    cpu = partial(cuda_method, sessions, "run", inputs, "cpu")
    cells = [measure("cpu", "run", cpu, inputs, budget, ref)]
    for name in CUDA_METHODS if cuda else ():
        make = partial(cuda_method, sessions, name, inputs)
        cells.append(measure("cuda", name, make, inputs, budget, ref))
    return cells


def batch_cells(sessions: Sessions, provider: str, budget: Budget) -> list[Cell]:
    """B users per call on the provider's service path: CPU session.run, CUDA bound_host."""
    name = "run" if provider == "cpu" else "bound_host"
    cells = []
    for t, c in BATCH_SHAPES[provider]:
        for b in BATCHES:
            inputs = random_inputs(b, t, c, seed=b)
            ref = cpu_reference(sessions, inputs) if provider == "cuda" else None
            make = partial(cuda_method, sessions, name, inputs, provider)
            cells.append(measure(provider, name, make, inputs, budget, ref))
    return cells


def run_micro(budget: Budget, threads: int = 1, cuda: bool | None = None) -> dict:
    """All session.run cells: {"single": [...], "batching": [...]} as dicts."""
    cuda = cuda_status().available if cuda is None else cuda
    sessions = Sessions(threads)
    single = [cell for t, c in SHAPES for cell in shape_cells(sessions, t, c, budget, cuda)]
    providers = ("cpu", "cuda") if cuda else ("cpu",)
    batching = [cell for p in providers for cell in batch_cells(sessions, p, budget)]
    return {
        "cpu_threads": threads,
        "single": [cell.to_dict() for cell in single],
        "batching": [cell.to_dict() for cell in batching],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budget = Budget.quick() if args.quick else Budget.full()
    print(json.dumps(run_micro(budget), indent=2))


if __name__ == "__main__":
    main()
