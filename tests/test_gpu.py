"""Serving on CUDA: the CUDA provider scores what the CPU provider scores, through the service's
own Scorer (I/O binding) and micro-batcher, on the same ONNX bytes and inputs.

Tests that need a working CUDA provider skip, with the reason, where there is none; the
CTR_DEVICE=cuda ones run everywhere and check the refusal where CUDA does not work.

    pytest -m gpu tests/test_gpu.py        # bench/gpu/run.sh runs this on a GPU machine
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest

from app.batching import MicroBatcher, pad_batch, run_group
from app.scorer import Scorer, ScorerError, create_session
from bench.gpu.graph import OUTPUT, dense_onnx, feeds, random_inputs
from bench.gpu.micro import CUDA_METHODS, Sessions, cpu_reference, cuda_method
from bench.gpu.runtime import cuda_status, make_session, nvidia_lib_dirs, preload_cuda

pytestmark = pytest.mark.gpu
TOLERANCE = 1e-5
TF32_HINT = "onnxruntime's CUDA provider rounds fp32 MatMul inputs to TF32 unless use_tf32=0"
USERS = ((50, 100), (20, 300), (80, 10), (1, 1))  # (T, C) of each user of a batch


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    preload_cuda()  # before any CUDA session: CUDA and cuDNN from the nvidia-* packages
    return dense_onnx()


@pytest.fixture(scope="module")
def cuda() -> None:
    status = cuda_status()
    if not status.available:
        pytest.skip(f"CUDA execution provider unavailable: {status.reason}")


@pytest.fixture(scope="module")
def cpu_scorer(onnx_bytes) -> Scorer:
    return Scorer(create_session(onnx_bytes, "cpu", 1), OUTPUT)


@pytest.fixture(scope="module")
def cuda_scorer(cuda, onnx_bytes) -> Scorer:
    scorer = Scorer(create_session(onnx_bytes, "cuda", 1), OUTPUT)
    assert scorer.provider == "cuda"  # so score_batch goes through I/O binding
    return scorer


def one_user(t: int, c: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs by name, (C, D), (T, D), (T,), with the last behaviour masked when T > 1."""
    user = {name: a[0] for name, a in feeds(random_inputs(1, t, c, seed=seed)).items()}
    user["history_mask"][t - 1 :] = 0.0 if t > 1 else 1.0
    return user


def prepared(scorer: Scorer, user: dict[str, np.ndarray]) -> SimpleNamespace:
    """What the micro-batcher reads of a prepared request: its inputs and its bundle."""
    bundle = SimpleNamespace(scorer=scorer, version="v1")
    return SimpleNamespace(bundle=bundle, inputs=user, n_candidates=len(user["candidates"]))


@pytest.mark.parametrize(("b", "t", "c"), [(1, 50, 100), (4, 100, 1000), (2, 200, 2000)])
def test_cuda_scores_equal_cpu_scores(cpu_scorer, cuda_scorer, b, t, c):
    batch = feeds(random_inputs(b, t, c, seed=c))
    want = cpu_scorer.score_batch(batch)
    got = cuda_scorer.score_batch(batch)
    assert got.shape == (b, c) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE, err_msg=TF32_HINT)


def test_cuda_without_tf32_scores_equal_cpu_scores(cuda, onnx_bytes, cpu_scorer):
    """The remedy if the test above fails: the same graph with use_tf32=0."""
    scorer = Scorer(make_session(onnx_bytes, "cuda", 1, use_tf32="0"), OUTPUT)
    batch = feeds(random_inputs(4, 100, 1000, seed=1000))
    got, want = scorer.score_batch(batch), cpu_scorer.score_batch(batch)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


def test_cuda_scores_one_user_like_cpu(cpu_scorer, cuda_scorer):
    user = one_user(50, 100, seed=3)
    np.testing.assert_allclose(cuda_scorer.score(user), cpu_scorer.score(user), atol=TOLERANCE)


def test_padded_batch_on_cuda_scores_each_user_like_cpu_alone(cpu_scorer, cuda_scorer):
    users = [one_user(t, c, seed=k) for k, (t, c) in enumerate(USERS)]
    jobs = [prepared(cuda_scorer, user) for user in users]
    dim = users[0]["candidates"].shape[1]
    assert pad_batch(jobs)["candidates"].shape == (len(USERS), 300, dim)
    for user, scores in zip(users, run_group(jobs), strict=True):
        np.testing.assert_allclose(scores, cpu_scorer.score(user), rtol=0, atol=TOLERANCE)


def test_micro_batcher_on_cuda_answers_each_request_with_its_own_scores(cpu_scorer, cuda_scorer):
    users = [one_user(t, c, seed=10 + k) for k, (t, c) in enumerate(USERS * 4)]
    metrics = SimpleNamespace(batch_size=SimpleNamespace(observe=lambda n: None))

    async def score_all() -> list[np.ndarray]:
        batcher = MicroBatcher(metrics, max_requests=8, wait_s=0.005, runners=2)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.score(prepared(cuda_scorer, u)) for u in users))
        finally:
            await batcher.stop()

    for user, scores in zip(users, asyncio.run(score_all()), strict=True):
        np.testing.assert_allclose(scores, cpu_scorer.score(user), rtol=0, atol=TOLERANCE)


def test_device_cuda_insists_on_cuda_and_auto_falls_back(onnx_bytes):
    status = cuda_status()
    if status.available:
        assert create_session(onnx_bytes, "cuda", 1).get_providers()[0] == "CUDAExecutionProvider"
        return
    with pytest.raises(ScorerError, match="CUDA execution provider is unavailable"):
        create_session(onnx_bytes, "cuda", 1)
    assert create_session(onnx_bytes, "auto", 1).get_providers() == ["CPUExecutionProvider"]


def test_service_on_cuda_refuses_the_bundle_and_stays_unready_without_cuda(
    redis_server, redis_client, ns
):
    if cuda_status().available:
        pytest.skip("CUDA works here: a CTR_DEVICE=cuda service becomes ready")
    from export.publish import publish_bundle
    from tests.factories import synthetic_bundle
    from tests.service import in_process

    version = publish_bundle(redis_client, ns, synthetic_bundle(30), progress=False).version
    with in_process(redis_server.url, ns, ready=False, device="cuda") as client:
        holder = client.app.state.ctr.holder
        deadline = time.monotonic() + 30.0
        while version not in holder.refused and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "CUDA" in holder.refused[version][0]
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["version"] is None


@pytest.fixture(scope="module")
def sessions() -> Sessions:
    return Sessions(threads=1)


@pytest.mark.parametrize("method", CUDA_METHODS)
def test_bench_methods_score_like_session_run_on_host_buffers(sessions, method):
    """Each way bench/gpu times the CUDA provider, dry-run on the CPU one (host OrtValues)."""
    inputs = random_inputs(3, 20, 30)
    scores = cuda_method(sessions, method, inputs, provider="cpu")
    scores.call()
    tolerance = 1e-2 if method == "fp16" else TOLERANCE
    np.testing.assert_allclose(scores.fetch(), cpu_reference(sessions, inputs), atol=tolerance)


def test_nvidia_library_folders_are_found_on_sys_path(tmp_path, monkeypatch):
    for folder in ("nvidia/cu13/lib", "nvidia/cudnn/lib", "nvidia/empty"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.setattr("sys.path", [str(tmp_path)])
    assert nvidia_lib_dirs() == [tmp_path / "nvidia/cu13/lib", tmp_path / "nvidia/cudnn/lib"]
