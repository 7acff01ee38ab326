#!/usr/bin/env bash
# On the GPU machine (see scripts/gpu-check.sh for what it needs carried): checkpoints and
# monitoring on CUDA. Each strategy, bf16, trains 40 steps straight and 20 + 20 with a
# resume from the step-20 checkpoint; the resumed trajectory is compared with the straight
# one (and the straight one with a repeat of itself, which says how deterministic the GPU
# kernels are). Python's tensorboard (on this image) reads the event file. Logs to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-checkpoint-check}
mkdir -p "$out"
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
export LD_LIBRARY_PATH=$PWD/.devdeps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/machine.txt" 2>&1
cmake -S . -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$PWD/.devdeps/usr" > "$out/build.log" 2>&1 &&
  cmake --build /tmp/build >> "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
/tmp/build/tests/dshost_tests --gtest_filter='Crc32c.*:Safetensors.*:CheckpointSlices.*:Zoo/TorchvisionModel.*:Gpt.*' \
  > "$out/unit.log" 2>&1; tail -3 "$out/unit.log"
run() {  # output dir, then --set values
  local dir=$1; shift
  local sets=(--set launcher.nprocs=1 --set train.device=cuda --set "data.path=\"$PWD/.fmnist\""
              --set "run.output_dir=\"$dir\"" --set train.precision=bf16 --set train.log_every=1 --set train.cudnn_benchmark=false
              --set train.eval=false --set model.dropout=0.2)
  for s in "$@"; do sets+=(--set "$s"); done
  /tmp/build/dshost run configs/quickstart.toml "${sets[@]}" >> "$dir.log" 2>&1 || echo "FAILED: $dir $*"
}
for strategy in ddp zero2 zero3-offload; do
  base=$out/$strategy
  run "${base}_straight" strategy.plugin=$strategy train.max_steps=40
  run "${base}_repeat" strategy.plugin=$strategy train.max_steps=40
  run "${base}_resumed" strategy.plugin=$strategy train.max_steps=20 checkpoint.every_steps=20
  run "${base}_resumed" strategy.plugin=$strategy train.max_steps=40
  grep -h "resumed from" "${base}_resumed.log" | cut -c1-200
  python3 - "$base" <<'PY'
import json, sys
base = sys.argv[1]
def rows(kind):
    return [json.loads(l) for l in open(f"{base}_{kind}/quickstart/metrics.jsonl")]
a, b, c = rows("straight"), rows("repeat"), rows("resumed")
diff = lambda x, y: max(abs(p[k] - q[k]) for p, q in zip(x, y) for k in ("loss", "grad_norm"))
print(f"{base.split('/')[-1]}: {len(c)} steps; straight vs repeat {diff(a, b):.3g}, "
      f"straight vs resumed {diff(a, c):.3g}; identical columns: {[p['loss'] for p in a] == [p['loss'] for p in c]}")
PY
done
python3 - "$out/ddp_resumed/quickstart/tensorboard" <<'PY' 2>&1 | tail -5
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
import tensorboard
ea = EventAccumulator(sys.argv[1])
ea.Reload()
tags = ea.Tags()["scalars"]
loss = ea.Scalars("train/loss")
print(f"tensorboard {tensorboard.__version__}: tags {sorted(tags)}")
print(f"train/loss: {len(loss)} points, steps {loss[0].step}..{loss[-1].step}, last {loss[-1].value:.4f}")
PY
/tmp/build/dshost export "$out/ddp_resumed/quickstart/checkpoints" "$out/ddp.safetensors" --dtype bf16 2>&1 | tail -1
