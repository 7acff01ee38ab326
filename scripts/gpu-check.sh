#!/usr/bin/env bash
# On the GPU machine (see ../shared/gpu/README.md): build against the image's LibTorch 2.x
# with CUDA and NCCL, run the unit tests, then train the quickstart on the GPU (world size 1,
# fp32 and bf16). Needs .devdeps/ (../shared/gpu/stage-deps.sh libgloo-dev libstb-dev libstb0 libjpeg62-turbo-dev libjpeg62-turbo: the pip LibTorch
# ships no gloo headers, which c10d's ProcessGroupGloo.hpp includes) and the Fashion-MNIST files
# in .fmnist/, and Debian's fortunes text in .fortunes/ (for gpt), all carried with the
# checkout. Logs go to $OUT (or /tmp/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
export LD_LIBRARY_PATH=$PWD/.devdeps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} > "$out/machine.txt" 2>&1
cmake -S . -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$PWD/.devdeps/usr" > "$out/build.log" 2>&1 &&
  cmake --build /tmp/build >> "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
grep "dshost: LibTorch" "$out/build.log"
# Unit tests that read no data from Debian's dataset path (it is not on this image).
/tmp/build/tests/dshost_tests --gtest_filter='Loader.*:LocalLauncher.*:Sampler.*:Schedule.*:Zoo/TorchvisionModel.*:Gpt.*:PluginsCheck.*:-Loader.APluginWhoseCreateFails*' \
  > "$out/unit.log" 2>&1; tail -3 "$out/unit.log"
# Every strategy on the GPU (NCCL at world size 1), fp32 and bf16: the quickstart.
run() {  # name, then --set values
  local name=$1; shift
  local sets=(--set launcher.nprocs=1 --set train.device=cuda --set "data.path=\"$PWD/.fmnist\""
              --set "run.output_dir=\"$out\"" --set "run.name=\"$name\"")
  for s in "$@"; do sets+=(--set "$s"); done
  /tmp/build/dshost run configs/quickstart.toml "${sets[@]}" > "$out/$name.log" 2>&1
  echo "$name exit $?"; grep -E "summary:|error" "$out/$name.log" | cut -c1-400
}
for strategy in ddp zero2 zero3-offload; do
  for precision in fp32 bf16; do
    run "${strategy}_$precision" strategy.plugin=$strategy train.precision=$precision
  done
done
# GPU memory of a 103M-parameter basic CNN (fc1 256*7*7 -> 8192), 50 steps, bf16.
big=(train.precision=bf16 train.max_steps=50 train.eval=false model.width=128 model.hidden=8192)
run big_ddp strategy.plugin=ddp "${big[@]}"
run big_zero2 strategy.plugin=zero2 "${big[@]}"
run big_zero3-offload_param-gpu strategy.plugin=zero3-offload "${big[@]}"
run big_zero3-offload strategy.plugin=zero3-offload strategy.offload_param_device=cpu "${big[@]}"
# The zoo and gpt on the GPU (first throughput figures; the side-by-side benchmark is
# issue 7's): synthetic ImageNet-shaped images, and gpt on the fortunes text.
zoo=(train.precision=bf16 train.max_steps=60 train.eval=false data.dataset=synthetic
     model.num_classes=1000 data.synthetic_classes=1000)
run resnet50_b64 model.plugin=resnet50 train.micro_batch_size=64 "${zoo[@]}"
run mobilenet_v2_b64 model.plugin=mobilenet_v2 train.micro_batch_size=64 "${zoo[@]}"
gpt=(model.plugin=gpt model.vocab_size=256 data.dataset=text "data.path=\"$PWD/.fortunes\""
     train.precision=bf16 train.max_steps=40 train.eval=false train.micro_batch_size=8)
run gpt124m_ddp strategy.plugin=ddp model.preset=\"gpt2-124m\" "${gpt[@]}"
run gpt124m_zero3 strategy.plugin=zero3-offload model.preset=\"gpt2-124m\" "${gpt[@]}"
run gpt1.3b_zero3 strategy.plugin=zero3-offload strategy.offload_param_device=cpu \
  model.preset=\"gpt-1.3b\" "${gpt[@]}" train.max_steps=6
