# syntax=docker/dockerfile:1
# HeartSeg GPU worker: CUDA torch, nnunetv2 2.8.1 and the project with every extra (`pip install .[all]`).
# Build from the repository root (the context is filtered by /.dockerignore):
#   docker build -f deploy/docker/worker-gpu.Dockerfile -t heartseg/worker-gpu:0.1.0 .
# The model is not in the image: compose mounts a model folder read-only under /models.

# Ubuntu 24.04 because the project needs Python >= 3.11 (22.04 ships 3.10). The CUDA user-space
# libraries (cuBLAS, cuDNN, ...) arrive with the torch wheel as nvidia-* packages, so the small
# `base` flavour is enough (a -cudnn-runtime base would carry a second, unused cuDNN of ~1 GB).
# Its CUDA 12.6 matches the cu126 torch below: the NVIDIA runtime refuses to start the container
# on a host driver too old for it, instead of torch failing later.
FROM nvidia/cuda:12.6.3-base-ubuntu24.04 AS build

# The distribution's Python 3.12.
# DL3008 (unpinned apt packages) is accepted: Ubuntu drops superseded versions from its
# archive, so a version pin breaks the build at the next security update; the exactly
# tagged base image fixes the Ubuntu release, hence Python 3.12.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# CUDA torch first, from PyTorch's index for that CUDA version, exactly as pinned in
# gpu-constraints.txt; then the project under the same constraint, so it keeps this torch.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
COPY deploy/docker/gpu-constraints.txt /opt/gpu-constraints.txt
RUN pip install --index-url "${TORCH_INDEX_URL}" -r /opt/gpu-constraints.txt \
    && python -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'torch without CUDA')"

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY heartseg/ heartseg/
COPY workers/ workers/
COPY scheduler/ scheduler/
COPY db/ db/
RUN pip install -c /opt/gpu-constraints.txt ".[all]" \
    && pip check \
    && python -c "import torch, nnunetv2, workers.tasks; assert torch.version.cuda, 'CPU torch'"


FROM nvidia/cuda:12.6.3-base-ubuntu24.04

# The same Python as the build stage (the venv's interpreter links to /usr/bin/python3).
# DL3008 (unpinned apt packages) is accepted, as in the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/heartseg heartseg \
    && install -d -o 10001 -g 10001 /data/results /var/cache/heartseg /models

COPY --from=build /opt/venv /opt/venv

# Mount points, not content: /models (read-only model folders), /data/results (masks),
# /var/cache/heartseg (downloaded remote studies). The directories exist owned by the
# worker's user so that named volumes mounted there start writable by it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/heartseg \
    HEARTSEG_DEVICE=cuda \
    HEARTSEG_MODEL_DIR=/models/Dataset027_ACDC/nnUNetTrainer__HeartSegPlans__2d \
    HEARTSEG_TRUSTED_MODEL_ROOTS='["/models"]' \
    HEARTSEG_RESULTS_URI=/data/results \
    HEARTSEG_CACHE_DIR=/var/cache/heartseg \
    HEARTSEG_METRICS_PORT=9808

WORKDIR /home/heartseg
USER 10001:10001
EXPOSE 9808
# One worker for the one GPU the container is given (inside it, that GPU is device 0); its threads hold
# HEARTSEG_STUDIES_IN_FLIGHT studies at once around the one loaded model.
CMD ["heartseg", "worker", "gpu", "--devices", "0"]
