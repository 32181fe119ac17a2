#!/usr/bin/env bash
# GPU benchmark, run on a lent GPU machine (torch and CUDA there; no nnunetv2, no network) from the repository root:
#   bash bench/gpu.sh PART        PART = a or b: the packed frames in .gpu-carry/acdc-PART
# It installs the carried wheels (.gpu-carry/wheels: nnunetv2 and the pure-Python packages it and HeartSeg need)
# into a scratch folder and measures nnU-Net's predictor and the batched one (bench/gpu.py), writing
# $OUT/gpu-PART.json. Prepare the carry on the development machine with bench/gpu_carry.sh; turn the JSON of
# both halves into docs/bench-gpu.md with `python -m bench.gpu_report`.
set -euo pipefail
part=${1:?usage: bench/gpu.sh a|b}
out=${OUT:-/tmp/heartseg-gpu-out}
site=/tmp/heartseg-site
mkdir -p "$out" "$site"
python3 -m pip install --quiet --no-deps --no-index --target "$site" .gpu-carry/wheels/*.whl
export PYTHONPATH="$site:$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
python3 -m bench.gpu --frames ".gpu-carry/acdc-$part" --out "$out/gpu-$part.json" "${@:2}"
