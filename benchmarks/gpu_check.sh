#!/usr/bin/env bash
# One prepared GPU check: every GPU number BENCHMARKS.md still lacks, in one short run (about 5 minutes on one H200).
#
# How to run it on a lent device (device tool `run`), from the repository root of a copy of the working tree:
#     command: bash benchmarks/gpu_check.sh
#     carry:   [".whl"]          (the wheels of diffusers, importlib_metadata and mlxtend, which the device lacks)
#     timeout_s: 400   (the sections' caps add up to 300 s; typically it needs far less)
# The markdown it prints is also written to $OUT/gpu_check.md, which comes back with the result.
# On a CPU, check that it still runs with tiny models and sizes (tests/test_gpu_check.py does this):
#     bash benchmarks/gpu_check.sh --toy          # or MGD3_GPU_CHECK_TOY=1 bash benchmarks/gpu_check.sh
#
# Sections and their time caps in seconds (a section that fails or runs out of time prints why, and the script moves
# on; each section also stops starting new measurements about 15 s before its cap):
#   0. header    60  device, versions, whether `import mgd3` works (a fresh machine takes over 20 s to import)
#   1. sampler  100  DiT-XL/2-architecture mode-guided sampling, bf16, batch 1 / 64 / 128 / 256, images/s, projected
#                    time for ImageNet-1K IPC 50 and IPC 10, VAE decode share
#   2. vae       45  SD-VAE-architecture encoding at 256 px, fp32 and bf16, images/s, projected ImageNet-1K train time
#   3. kmeans    60  torch k-means at ImageNet-1K class shape (1,300 x 4,096; k = 10, 50): one class, 100 classes
#                    batched, projected 1,000 classes, beside scikit-learn on one class on the machine's CPU
#   4. train     75  evaluation trainer at 224 px (ResNetAP-10, then ResNet-18 if time is left): mgd3's on-device
#                    augmentation vs the IDC-style ImageFolder + PIL + DataLoader pipeline
# Every model is built from its config with random weights; nothing is downloaded.
set -u
cd "$(dirname "$0")/.."
TOY=${MGD3_GPU_CHECK_TOY:-0}
for arg in "$@"; do
  case "$arg" in
    --toy) TOY=1 ;;
    *) echo "unknown argument $arg; use --toy (or no argument)" >&2; exit 2 ;;
  esac
done
export PYTHONUNBUFFERED=1 MGD3_GPU_CHECK_TOY=$TOY

if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
       --target /tmp/site .whl/*.whl; then
    export PYTHONPATH=/tmp/site:$PWD
  else
    echo "installing the wheels in .whl/ failed; continuing with what is installed" >&2
    export PYTHONPATH=$PWD
  fi
else
  export PYTHONPATH=$PWD
fi

section() {  # section NAME CAP_SECONDS [extra args]
  local name=$1 cap=$2 rc start=$SECONDS; shift 2
  echo "[gpu_check] section $name: start (cap ${cap} s)" >&2
  # shellcheck disable=SC2086  # $name may hold several sections (toy mode)
  timeout -k 5 "$cap" python3 benchmarks/gpu_check.py $name --budget $((cap > 30 ? cap - 15 : cap / 2)) "$@"
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo; echo "**Section $name stopped at its ${cap} s cap**; the rows above are what it finished."; echo
  elif [ $rc -ne 0 ]; then
    echo; echo "**Section $name failed (exit code $rc)**; its error is printed above."; echo
  fi
  echo "[gpu_check] section $name: $((SECONDS - start)) s, exit code $rc" >&2
}

main() {
  local start=$SECONDS
  if [ "$TOY" = 1 ]; then   # one process for all sections, so that the CPU test pays for the imports once
    section "header sampler vae kmeans train" 240
  else
    section header 60   # a fresh machine compiles and imports mgd3 + diffusers here (measured: over 20 s)
    section sampler 100
    section vae 45
    section kmeans 60
    section train 75
  fi
  echo "Whole check: $((SECONDS - start)) s."
}

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/gpu_check.md"
else
  main
fi
