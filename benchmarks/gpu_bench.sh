#!/usr/bin/env bash
# GPU figures for JAX and PyTorch: ResNet50, batch 64 at 224×224, CAM / compiled forward;
# the CAM event's blocking time / model.predict (demo, MobileNetV2 96 px, ResNet50 224 px).
#
# The GPU machine (Python 3.12) has JAX, PyTorch, TensorBoard, Pillow, matplotlib, h5py,
# rich and absl-py, but neither TensorFlow nor Keras, and no network. So, in two steps:
#   here:    benchmarks/gpu_bench.sh prepare   # keras, namex, optree wheels into .whl/
#   device:  benchmarks/gpu_bench.sh run       # installs them offline, runs both backends
# (the device tool's `carry` must name .whl). One run takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    rm -rf .whl
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
    du -sh .whl
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    out="${OUT:-.}"
    for backend in jax torch; do
        KERAS_BACKEND=$backend python3 benchmarks/bench_cam.py --cam-only \
            --batch 64 --size 224 --runs 5 --score-cam-channels 16 | tee "$out/gpu_$backend.txt"
    done
    # The CAM event's blocking time next to model.predict (16 probe images), per backend.
    KERAS_BACKEND=jax python3 benchmarks/bench_cam.py --event-vs-predict --backends jax torch \
        --log-dir /tmp/bench | tee "$out/gpu_event_vs_predict.txt"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
