# syntax=docker/dockerfile:1
#
# Three images from one file:
#   docker build --target serve-gpu -t din-serving:0.1.0-gpu .       # default target
#   docker build --target serve-cpu -t din-serving:0.1.0-cpu .
#   docker build --target exporter  -t din-serving-exporter:0.1.0 .
#
# Every image installs the locked versions, hashes checked: the serving images
# requirements/serve.txt (onnxruntime, no torch), the exporter requirements/export.txt (the CPU
# build of torch, Spark). `make lock` re-resolves them. Every image runs as the numeric user
# 10001.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- shared Python base
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --gid 10001 ctr \
    && useradd --uid 10001 --gid 10001 --home-dir /home/ctr --create-home --shell /usr/sbin/nologin ctr

# ---------------------------------------------------------------- CPU serving
FROM python-base AS serve-cpu-build
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, from pyproject.toml alone, so a code edit reuses this layer.
COPY pyproject.toml README.md requirements/serve.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r serve.txt
COPY app ./app
COPY core ./core
COPY ingest ./ingest
COPY export ./export
COPY examples ./examples
RUN pip install --no-cache-dir --no-deps --no-build-isolation --force-reinstall .

FROM python-base AS serve-cpu
COPY --from=serve-cpu-build /opt/venv /opt/venv
WORKDIR /home/ctr
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--timeout-graceful-shutdown", "20"]

# ---------------------------------------------------------------- exporter (training + publish)
FROM python-base AS exporter-build
# The CPU wheel of torch: the exporter trains on CPU and must not pull the CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md requirements/export.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps --extra-index-url "${TORCH_INDEX_URL}" \
    -r export.txt
COPY app ./app
COPY core ./core
COPY ingest ./ingest
COPY export ./export
COPY examples ./examples
RUN pip install --no-cache-dir --no-deps --no-build-isolation --force-reinstall .

FROM python-base AS exporter
COPY --from=exporter-build /opt/venv /opt/venv
# Data and bundles go to /scratch; Kubernetes mounts a writable emptyDir there.
RUN install -d -o 10001 -g 10001 /scratch
WORKDIR /scratch
ENV HOME=/scratch
USER 10001:10001
CMD ["ctr-export", "--help"]

# ---------------------------------------------------------------- GPU serving (CUDA 13, cuDNN 9)
FROM ${CUDA_IMAGE} AS gpu-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The base image tag pins the Ubuntu release; exact apt versions rotate out of the archive
# and would break rebuilds, so packages follow the release's security updates instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 ctr \
    && useradd --uid 10001 --gid 10001 --home-dir /home/ctr --create-home --shell /usr/sbin/nologin ctr

FROM gpu-base AS serve-gpu-build
# Same reason as above: the venv module comes from the release pinned by the base tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3.12 -m venv /opt/venv
COPY pyproject.toml README.md requirements/serve.txt ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r serve.txt
COPY app ./app
COPY core ./core
COPY ingest ./ingest
COPY export ./export
COPY examples ./examples
RUN pip install --no-cache-dir --no-deps --no-build-isolation --force-reinstall .

# Last stage, so a plain `docker build .` gives the GPU serving image.
FROM gpu-base AS serve-gpu
COPY --from=serve-gpu-build /opt/venv /opt/venv
WORKDIR /home/ctr
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--timeout-graceful-shutdown", "20"]
