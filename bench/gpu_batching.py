"""Does micro-batching pay on a GPU? Times the dense DIN graph for B users per call.

Runs the PyTorch dense model (the same module the ONNX graph is exported from, with the
MovieLens example schema's fields) on CUDA and on the CPU, for B = 1..32 users of C=100
candidates and T=50 behaviours each, with their user and context rows, and prints the
latency per call and the candidates/s. Weights are random: only the time matters here.

    python -m bench.gpu_batching [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.workload import example_schema
from core import graph
from export.model import DenseDIN, DINConfig
from export.to_onnx import example_inputs

BATCHES = (1, 2, 4, 8, 16, 32)
CANDIDATES, HISTORY, REPEATS = 100, 50, 200


def time_call(dense: DenseDIN, batch: int, device: str) -> float:
    schema = dense.config.schema
    named = example_inputs(schema, b=batch, c=CANDIDATES, t=HISTORY)
    names = graph.input_names(schema)
    inputs = tuple(named[name].to(device) for name in names)
    times = []
    with torch.inference_mode():
        for _ in range(REPEATS // 10):
            dense(*inputs)
        for _ in range(REPEATS):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            dense(*inputs).cpu()  # the answer has to come back to the host
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def measure(device: str) -> list[dict]:
    dense = DenseDIN(DINConfig(example_schema(), vocab_sizes={})).eval().to(device)
    dense.attention.form = "split"
    rows = []
    for batch in BATCHES:
        median = time_call(dense, batch, device)
        rows.append(
            {
                "device": device,
                "batch": batch,
                "ms_per_call": median * 1e3,
                "candidates_per_s": batch * CANDIDATES / median,
            }
        )
        print(
            f"{device:5s} B={batch:3d}  {median * 1e3:8.3f} ms/call  "
            f"{batch * CANDIDATES / median:12,.0f} candidates/s",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    result = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "rows": [row for device in devices for row in measure(device)],
    }
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
