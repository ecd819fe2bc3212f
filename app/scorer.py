"""The onnxruntime session of one bundle: CUDA with I/O binding when it can, else CPU."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from core.graph import one_user_feeds

log = logging.getLogger(__name__)
ort.set_default_logger_severity(4)  # a missing CUDA provider is reported by us, once


class ScorerError(RuntimeError):
    pass


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def create_session(onnx_bytes: bytes, device: str, threads: int) -> ort.InferenceSession:
    """`auto` tries CUDA and falls back to CPU with a log line; `cuda` insists on CUDA."""
    if device in ("auto", "cuda"):
        session = _try_cuda(onnx_bytes, threads)
        if session is not None:
            return session
        if device == "cuda":
            raise ScorerError("CTR_DEVICE=cuda but the CUDA execution provider is unavailable")
        log.info("CUDA execution provider unavailable; serving on CPU")
    return ort.InferenceSession(onnx_bytes, _options(threads), providers=["CPUExecutionProvider"])


def _try_cuda(onnx_bytes: bytes, threads: int) -> ort.InferenceSession | None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    try:
        session = ort.InferenceSession(
            onnx_bytes,
            _options(threads),
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    except Exception as error:  # onnxruntime raises bare exceptions for missing CUDA libs
        log.warning("CUDA execution provider failed to start: %s", error)
        return None
    return session if session.get_providers()[0] == "CUDAExecutionProvider" else None


class Scorer:
    """Runs the dense graph on feeds by input name: candidates, history, history_mask, and
    user and context when the schema has such fields (core/graph.py)."""

    def __init__(self, session: ort.InferenceSession, output: str, attention: str = "") -> None:
        self.session = session
        self.output = output
        self.attention = attention  # the attention-weights output; "" when the graph has none
        self.provider = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.input_names = [i.name for i in session.get_inputs()]

    def input_shapes(self) -> list[list[int | str]]:
        return [list(i.shape) for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def score(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """One user: (C, Di), (T, Di), (T,), (Du,), (Dc,) -> (C,)."""
        return self.score_batch(one_user_feeds(self.input_names, inputs))[0]

    def score_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """B users: (B, C, Di), (B, T, Di), (B, T), (B, Du), (B, Dc) -> (B, C)."""
        if self.provider == "cuda":
            return self._score_bound(feeds)
        return self.session.run([self.output], feeds)[0]

    def explain(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One user, one run for both outputs: scores (C,) and weights (C, T). The scores are
        the same run of the same graph as score()'s."""
        feeds = one_user_feeds(self.input_names, inputs)
        scores, weights = self.session.run([self.output, self.attention], feeds)
        return scores[0], weights[0]

    def _score_bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output(self.output, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
