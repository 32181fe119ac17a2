#!/usr/bin/env bash
# Build .gpu-carry/ (ignored by git) for bench/gpu.sh, on the development machine, from the repository root:
# wheels of what the GPU machine lacks (its python3 is 3.12 with torch, numpy, scipy, scikit-image, pandas; no
# nnunetv2) at the versions of .venv, and the ACDC ED/ES frames packed in two halves of about 33 MiB each, so
# that each device call stays under the 64 MiB it may carry. Then: device run `bash bench/gpu.sh a` carrying
# .gpu-carry/wheels and .gpu-carry/acdc-a (and b, with `--sweep` for no sweep).
set -euo pipefail
version() { .venv/bin/pip show "$1" 2>/dev/null | awk '/^Version/ {print $2}'; }
pure="nnunetv2 acvl_utils dynamic_network_architectures batchgenerators batchgeneratorsv2 nibabel pydicom pydantic
      pydantic-settings python-dotenv typing-inspection annotated-types typing_extensions"
compiled="pydantic_core connected-components-3d"
mkdir -p .gpu-carry/wheels
pip wheel --quiet --no-deps -w .gpu-carry/wheels $(for p in $pure; do echo "$p==$(version "$p")"; done)
pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .gpu-carry/wheels \
  $(for p in $compiled; do echo "$p==$(version "$p")"; done)
.venv/bin/python -m bench.gpu_frames pack .gpu-carry/acdc-a --patients 1-50
.venv/bin/python -m bench.gpu_frames pack .gpu-carry/acdc-b --patients 51-100
du -sh .gpu-carry/*
