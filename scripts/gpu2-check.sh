#!/usr/bin/env bash
# On a 2-GPU machine (NCCL over both): build, then (1) correctness: each strategy on 2 GPUs
# against 1 GPU with the same global batch, basic_cnn fp32 and a small gpt bf16; (2) dshost's
# own scaling from 1 to 2 GPUs (resnet50 on synthetic images, gpt 124M on text). Needs
# .devdeps/, .fmnist/ and .fortunes/ carried (see scripts/gpu-check.sh). Output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu2-check}
mkdir -p "$out"
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
export LD_LIBRARY_PATH=$PWD/.devdeps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/machine.txt"
nvidia-smi topo -m >> "$out/machine.txt" 2>&1
cmake -S . -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$PWD/.devdeps/usr" > "$out/build.log" 2>&1 &&
  cmake --build /tmp/build >> "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
run() {  # name, then --set values
  local name=$1 s; shift
  local sets=(--set train.device=cuda --set "data.path=\"$PWD/.fmnist\"" --set train.eval=false
              --set "run.output_dir=\"$out\"" --set "run.name=\"$name\"")
  for s in "$@"; do sets+=(--set "$s"); done
  /tmp/build/dshost run configs/quickstart.toml "${sets[@]}" > "$out/$name.log" 2>&1
  echo "$name exit $? $(grep -o 'summary: .*' "$out/$name.log" | cut -c1-200)"
}
diff_losses() {  # two run names
  python3 - "$out/$1/metrics.jsonl" "$out/$2/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:3])
print(f"  {len(a)} steps, loss {a[0]:.4f} -> {a[-1]:.4f}, max |1 GPU - 2 GPUs| = {max(abs(x - y) for x, y in zip(a, b)):.2e}")
PY
}
cnn=(train.max_steps=30 train.precision=fp32)
gpt=(model.plugin=gpt model.n_layer=4 model.n_head=4 model.n_embd=256 model.vocab_size=256
     model.block_size=256 data.dataset=text "data.path=\"$PWD/.fortunes\"" train.max_steps=30
     train.precision=bf16 scheduler.warmup_steps=5)
for s in ddp zero2 zero3-offload; do
  run cnn_${s}_1 strategy.plugin=$s launcher.nprocs=1 train.micro_batch_size=64 "${cnn[@]}"
  run cnn_${s}_2 strategy.plugin=$s launcher.nprocs=2 train.micro_batch_size=32 "${cnn[@]}"
  diff_losses cnn_${s}_1 cnn_${s}_2
  run gpt_${s}_1 strategy.plugin=$s launcher.nprocs=1 train.micro_batch_size=16 "${gpt[@]}"
  run gpt_${s}_2 strategy.plugin=$s launcher.nprocs=2 train.micro_batch_size=8 "${gpt[@]}"
  diff_losses gpt_${s}_1 gpt_${s}_2
done
img=(model.plugin=resnet50 data.dataset=synthetic model.num_classes=1000 train.precision=bf16
     train.max_steps=80 train.micro_batch_size=64)
big=(model.plugin=gpt model.preset=\"gpt2-124m\" model.vocab_size=256 data.dataset=text
     "data.path=\"$PWD/.fortunes\"" train.precision=bf16 train.max_steps=40 train.micro_batch_size=8)
for s in ddp zero2 zero3-offload; do
  for n in 1 2; do
    run resnet50_${s}_$n strategy.plugin=$s launcher.nprocs=$n "${img[@]}"
    run gpt124m_${s}_$n strategy.plugin=$s launcher.nprocs=$n "${big[@]}"
  done
done
