#!/usr/bin/env bash
# dshost against PyTorch on one GPU, side by side in one run (issue 7). On the GPU machine
# (../shared/gpu/README.md), from the repository root with .devdeps/ and .fmnist/ carried:
#
#   bench/gpu/run.sh GROUP...     groups: tests (GPU_TESTS: a ctest regex) tests-no-tf32 images images-graph images-zero2 gpt
#                                 gpt-1.3b gpt-zero2 offload offload-split
#                                 scaling (1 GPU and all of them, against DDP / FSDP2 through torchrun)
#                                 guide (the guide's 8-GPU table, against DDP / FSDP2 through torchrun)
#                                 profile profile-zero2 profile-zero2-bf16 profile-vgg16-zero2 profile-offload profile-offload-dpu profile-offload-split (kernel time by
#                                 family and host phases, $OUT/profiles.md) streams-offload
#                                 (zero3-offload's traced steps, where the host waits: $OUT/streams.md)
#                                 memory (gpt 1.3B's step's GPU memory by operator: $OUT/memory.md)
#                                 largest-ddp largest-zero3 largest-zero3-bf16 largest-zero3-split (the largest gpt
#                                 that trains, $OUT/largest.txt)
#                                 conv-relu (vgg16's convolutions: eager against cuDNN's fused conv + bias + relu)
#                                 conv-alignment (efficientnet_b0's depthwise and 1x1 convolutions by their
#                                 weight's alignment: $OUT/conv_alignment.md)
#                                 attention-backends (causal attention at gpt's shapes under each SDPA backend
#                                 against the one PyTorch picks: $OUT/attention_backends.md)
#                                 gelu-epilogue (gpt's c_fc with GELU unfused and in cuBLASLt's epilogue:
#                                 $OUT/gelu_epilogue.md)
#                                 kernels (gpt's layer norm, cross-entropy and fp8 cast kernels alone at
#                                 its b8 shapes, mobilenet_v2's batch norms at b32, time and bytes a
#                                 second: $OUT/kernels.txt; a row each,
#                                 launches a second, so before_after.sh compares them; KERNELS: a Google
#                                 Benchmark filter, e.g. KERNELS=LayerNorm)
#                                 real-data (resnet50 and mobilenet_v2 from a folder of JPEGs decoded on the CPU
#                                 and on the GPU, against the DataLoader)
#                                 cpu-adam (the fused CPU AdamW against torch's, and the host's
#                                 memory bandwidth: $OUT/cpu_adam.txt)
#                                 compile (issue 28's table: dshost's fastest strategy, and ddp for gpt, beside
#                                 PyTorch eager and torch.compile; COMPILE_CASES="gpt2-124m:8 resnet50:64 ..." narrows,
#                                 COMPILE_DDP=0 leaves ddp out; COMPILE_OPTIMIZER=1 adds torch.compile with
#                                 its clipping and optimizer step compiled too;
#                                 $OUT/compile.md; gpt also in fp8) profile-compile (the same traced, against torch.compile)
#                                 gaps (where the GPU waits between kernels in traced steps: dshost eager and
#                                 replaying its graph, torch.compile's beside them: $OUT/gaps.md;
#                                 GAPS_CASES="gpt-1.3b:8 mobilenet_v2:32 ..." picks gpt presets and image models;
#                                 LAUNCHES=batch_norm adds the replayed graph's launches of those
#                                 kernels by launch shape, bench/gpu/launches.py)
#                                 fp8-learning (gpt2-124m on a real text in bf16 and in fp8, 2,000 steps from one
#                                 seed: $OUT/fp8_learning.md and both curves; .text/gcide.dict.dz carried)
#                                 gpt-1.3b-graph (gpt-1.3b b8 in bf16 and fp8, with and without train.cuda_graph)
#                                 fp8-small (gpu.GptFp8's small gpt in fp32, bf16 and fp8 from three seeds:
#                                 $OUT/fp8_small.md: the last 50 steps' mean loss, and steps 1, 10 and 50's;
#                                 FP8_SMALL_SEEDS="1 2 ...", FP8_SMALL_PRECISIONS="bf16 ..." narrow or widen;
#                                 FP8_SMALL_SETS="model.fp8_scaling=\"current\" ..." adds to each run)
#                                 fp8-scaling (gpt's fp8 under model.fp8_scaling current and delayed, in turn:
#                                 $OUT/fp8_scaling.md) fp8-output (gpt's fp8 with model.fp8_output false
#                                 and true, in turn: $OUT/fp8_output.md)
#                                 finetune (configs/mobilenet-finetune.toml for an epoch, whole and with
#                                 the features frozen: $OUT/finetune.txt)
#
# Builds dshost against the image's LibTorch, then per group runs each configuration with
# dshost (eager, and with train.cuda_graph where the strategy allows it) and with its PyTorch
# peer (bench/gpu/peer.py), appending one JSON row per run to $OUT/rows.jsonl;
# bench/gpu/report.py turns rows into bench/results/gpu_perf.md. dshost's samples/s is the
# median over its report windows after the first two (cuDNN autotuning, graph capture); the
# peer times its steps after a warm-up. The build's log stays beside the build (BUILD.log),
# copied to $OUT only when the build fails (its warnings, where there are any, come back in
# $OUT/build_warnings.txt): the device hands back a few files a call.
# IMAGE_CASES="vgg16:8 ..." narrows the image groups;
# GPT_ZERO2_CASES="gpt2-124m:60 ..." narrows gpt-zero2; NO_PEERS=1 runs dshost alone; BUILD
# names the build directory (/tmp/build).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/gpu-bench}
mkdir -p "$out"
rows=$out/rows.jsonl
logs=/tmp/gpu-bench-logs  # each run's log; a failed run's comes back in $out
mkdir -p "$logs"
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
export LD_LIBRARY_PATH=$PWD/.devdeps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0
build=${BUILD:-/tmp/build}
# What the image models train on where the data is not the point: synthetic images of
# ImageNet's 1,000 classes, as the peer's torchvision models have.
synthetic_images=(data.dataset=\"synthetic\" model.num_classes=1000 data.synthetic_classes=1000)

machine() {
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  date -u +%F
  lscpu | grep -E "^(Model name|Socket|NUMA)" || true
}

build_dshost() {
  local targets=(dshost)
  [[ " $* " == *" tests"* ]] && targets+=(dshost_tests)
  [[ " $* " == *" cpu-adam"* ]] && targets+=(dshost_cpu_adam_bench)
  [[ " $* " == *" real-data"* ]] && targets+=(dshost_loader_bench)
  [[ " $* " == *" kernels"* ]] && targets+=(dshost_gpu_kernels_bench)
  local start=$SECONDS
  # Warnings are errors where CI builds (Debian 12's GCC 12); this image's g++ 13 warns
  # about more, so they are counted here instead (WERROR=ON to stop at them).
  { cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSHOST_WERROR=${WERROR:-OFF} \
      -DCMAKE_PREFIX_PATH="$torch_prefix;$PWD/.devdeps/usr" &&
    cmake --build $build --target "${targets[@]}" dshost_plugins; } > "$build.log" 2>&1 ||
    { cp "$build.log" "$out/build.log"; tail -40 "$build.log"; exit 1; }
  local warnings
  warnings=$(grep -c 'warning:' "$build.log")
  echo "built in $((SECONDS - start)) s, $warnings compiler warnings"
  if ((warnings > 0)); then grep -B8 -A2 'warning:' "$build.log" | head -120 > "$out/build_warnings.txt"; fi
}

# dshost_run NAME KIND [--set values]: one dshost run (stopped after RUN_TIMEOUT seconds, 300), its row appended.
dshost_run() {
  local name=$1 kind=$2; shift 2
  local sets=(--set launcher.nprocs=1 --set train.device=\"cuda\" --set train.precision=\"bf16\"
              --set train.eval=false --set train.log_every=10 --set "run.output_dir=\"$logs/runs\""
              --set "run.name=\"$name\"")
  for s in "$@"; do sets+=(--set "$s"); done
  timeout ${RUN_TIMEOUT:-300} $build/dshost run configs/quickstart.toml "${sets[@]}" > "$logs/$name.log" 2>&1
  local code=$?
  [[ $code == 0 ]] || tail -30 "$logs/$name.log" > "$out/$name.log"
  python3 - "$logs/runs/$name" "$name" "$kind" "$code" >> "$rows" <<'PY'
import json, statistics, sys
run, name, kind, code = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
row = {"name": name, "side": "dshost", "kind": kind, "exit": code}
try:
    s = json.load(open(f"{run}/summary.json"))
    rates, seen = [], set()
    for line in open(f"{run}/metrics.jsonl"):
        r = json.loads(line)
        if "samples_per_second" in r and r["samples_per_second"] not in seen:
            seen.add(r["samples_per_second"]); rates.append(r["samples_per_second"])
    steady = rates[2:] or rates
    row.update(samples_per_second=statistics.median(steady), peak_device_bytes=s["peak_device_memory_bytes"],
               peak_host_bytes=s["peak_host_memory_bytes"], parameters=s["parameters"],
               forward_flops_per_sample=s.get("forward_flops_per_sample"), final_loss=s["final_train_loss"],
               summary_steady_samples_per_second=s.get("steady_samples_per_second"), summary_mfu=s.get("mfu"))
except Exception as e:  # a failed run is a row too, with its exit code
    row["error"] = repr(e)
print(json.dumps(row))
PY
  echo "$name: exit $code $(tail -c 300 "$rows" | tail -1 | cut -c1-200)"
}

# peer_run NAME KIND [peer.py arguments]; with peer_gpus=N set, under torchrun on N GPUs.
peer_run() {
  [[ -n ${NO_PEERS:-} ]] && return
  local name=$1 kind=$2; shift 2
  local json python=(python3)
  [[ -n ${peer_gpus:-} ]] && python=(python3 -m torch.distributed.run --standalone --nproc_per_node "$peer_gpus")
  json=$("${python[@]}" bench/gpu/peer.py "$@" 2> "$logs/$name.log" | tail -1)
  [[ -n "$json" ]] || { json='{"error": "failed"}'; tail -30 "$logs/$name.log" > "$out/$name.log"; }
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(name=sys.argv[2], side="pytorch", kind=sys.argv[3]); print(json.dumps(r))' \
    "$json" "$name" "$kind" >> "$rows"
  echo "$name: $(tail -1 "$rows" | cut -c1-200)"
}

images() {  # [graph | zero2]: dshost with train.cuda_graph only, or zero2 (for the largest models)
  local only=${1:-} default="mobilenet_v2:32 mobilenet_v2:64 efficientnet_b0:16 efficientnet_b0:32
                             vgg16:8 vgg16:32 resnet50:64"
  [[ $only == zero2 ]] && default="vgg16:8 vgg16:32 resnet50:64"
  local cases=(${IMAGE_CASES:-$default})
  local zoo=("${synthetic_images[@]}" train.max_steps=60)
  for case in "${cases[@]}"; do
    local model=${case%:*} batch=${case#*:}
    local common=(model.plugin=\"$model\" train.micro_batch_size=$batch "${zoo[@]}")
    if [[ $only == zero2 ]]; then
      dshost_run "${model}_b${batch}_zero2_dshost" "$model b$batch zero2" "${common[@]}" strategy.plugin=\"zero2\"
      dshost_run "${model}_b${batch}_zero2_bf16_dshost_graph" "$model b$batch zero2, bf16 gradients" "${common[@]}" \
        strategy.plugin=\"zero2\" strategy.grad_accum_dtype=\"bf16\" train.cuda_graph=true
      peer_run "${model}_b${batch}_zero2_torch" "$model b$batch zero2" --model "$model" --batch "$batch"
      continue
    fi
    dshost_run "${model}_b${batch}_dshost_graph" "$model b$batch" "${common[@]}" train.cuda_graph=true
    [[ -n $only ]] && continue
    dshost_run "${model}_b${batch}_dshost" "$model b$batch" "${common[@]}"
    peer_run "${model}_b${batch}_torch" "$model b$batch" --model "$model" --batch "$batch"
  done
}

# Real JPEGs (issue 25): an ImageNet-like folder of 3,000 photo-sized JPEGs, resnet50 and
# mobilenet_v2 at b64 trained from it by dshost (its input pipeline, decoding on the CPU's
# workers and with nvJPEG on the GPU; on cores - 1 workers, then on 4) and by PyTorch
# (torchvision's ImageFolder in a DataLoader of cores - 1 workers), dshost also from its
# synthetic data; then each input pipeline alone (bench/image_folder/run.sh's comparison).
# REAL_DATA_MODELS narrows the models, REAL_DATA_LOADERS=0 leaves out the pipelines alone.
real_data() {
  local folder=/tmp/imagenet_like workers=$(( $(nproc) - 1 ))
  [[ -d $folder ]] || DSHOST_TEST_FASHION_MNIST=$PWD/.fmnist python3 bench/image_folder/make_folder.py $folder 3000 100
  for model in ${REAL_DATA_MODELS:-resnet50 mobilenet_v2}; do
    local common=(model.plugin=\"$model\" model.num_classes=1000 train.micro_batch_size=64 train.max_steps=100)
    local folder_sets=(data.dataset=\"image_folder\" data.path=\"$folder\")
    for graph in false true; do
      local suffix=${graph/false/}; suffix=${suffix/true/_graph}
      for decode in cpu gpu; do
        dshost_run "${model}_b64_folder_${decode}_dshost$suffix" "$model b64 jpeg folder, $workers workers, $decode decode" \
          "${common[@]}" "${folder_sets[@]}" train.cuda_graph=$graph data.workers=$workers data.decode=\"$decode\"
      done
      dshost_run "${model}_b64_synthetic_dshost$suffix" "$model b64 synthetic" "${common[@]}" train.cuda_graph=$graph \
        "${synthetic_images[@]}"
    done
    for decode in cpu gpu; do
      dshost_run "${model}_b64_folder_${decode}_4_workers_dshost_graph" "$model b64 jpeg folder, 4 workers, $decode decode" \
        "${common[@]}" "${folder_sets[@]}" train.cuda_graph=true data.workers=4 data.decode=\"$decode\"
    done
    peer_run "${model}_b64_folder_torch" "$model b64 jpeg folder, $workers workers" --model "$model" --batch 64 \
      --steps 100 --image-folder $folder --workers $workers
  done
  [[ ${REAL_DATA_LOADERS:-1} == 0 ]] || bench/image_folder/run.sh $folder $build/tests/bench/dshost_loader_bench >> "$rows"
}

tokens_file() {
  [[ -f /tmp/tokens.bin ]] ||
    python3 -c 'import numpy as np; np.random.default_rng(0).integers(0, 50257, 1 << 22, dtype=np.uint16).tofile("/tmp/tokens.bin")'
}

# gpt_cases NAME PRESET BATCH STEPS STRATEGY [--set values]
gpt_cases() {
  local name=$1 preset=$2 batch=$3 steps=$4 strategy=$5; shift 5
  tokens_file
  dshost_run "$name" "gpt $preset b$batch $strategy${kind_suffix:-}" model.plugin=\"gpt\" model.preset=\"$preset\" \
    model.vocab_size=50304 data.dataset=\"tokens\" data.path=\"/tmp/tokens.bin\" \
    train.micro_batch_size=$batch train.max_steps=$steps strategy.plugin=\"$strategy\" "$@"
}

gpt() {
  for case in gpt2-124m:8 gpt2-350m:8; do
    local preset=${case%:*} batch=${case#*:}
    gpt_cases "${preset}_b${batch}_dshost" "$preset" "$batch" 60 ddp
    gpt_cases "${preset}_b${batch}_dshost_graph" "$preset" "$batch" 60 ddp train.cuda_graph=true
    peer_run "${preset}_b${batch}_torch" "gpt $preset b$batch ddp" --model gpt --preset "$preset" --batch "$batch"
  done
}

gpt13() {
  gpt_cases gpt-1.3b_b8_dshost gpt-1.3b 8 40 ddp
  peer_run gpt-1.3b_b8_torch "gpt gpt-1.3b b8 ddp" --model gpt --preset gpt-1.3b --batch 8 --steps 20
}

# zero2 at world size 1: bf16 parameters (layer norms in bf16 too) over fp32 masters, against
# the same PyTorch eager peer as ddp's rows; with grad_accum_dtype = bf16 the gradients stay
# in the shard backward adds into, which also lets train.cuda_graph capture (not at 1.3B,
# GPU-bound).
gpt_zero2() {
  for case in ${GPT_ZERO2_CASES:-gpt2-124m:60 gpt2-350m:60 gpt-1.3b:40}; do
    local preset=${case%:*} steps=${case#*:}
    gpt_cases "${preset}_b8_zero2_dshost" "$preset" 8 "$steps" zero2
    kind_suffix=", bf16 gradients" gpt_cases "${preset}_b8_zero2_bf16_dshost" "$preset" 8 "$steps" zero2 \
      strategy.grad_accum_dtype=\"bf16\"
    [[ $preset == gpt-1.3b ]] ||
      kind_suffix=", bf16 gradients" gpt_cases "${preset}_b8_zero2_bf16_dshost_graph" "$preset" 8 "$steps" \
        zero2 strategy.grad_accum_dtype=\"bf16\" train.cuda_graph=true
    peer_run "${preset}_b8_zero2_torch" "gpt $preset b8 zero2" --model gpt --preset "$preset" --batch 8 \
      --steps $((steps / 2))
  done
}

# dshost's fastest configuration beside PyTorch eager and torch.compile at the same settings
# (mode default for gpt and resnet50, reduce-overhead for the small image models); gpt also
# under ddp, which should match zero2 at one rank, and in fp8; dshost replays its CUDA graph
# throughout.
compile_table() {
  local default="gpt2-124m:8 gpt2-124m:16 gpt2-350m:8 gpt-1.3b:8 mobilenet_v2:32 efficientnet_b0:32 resnet50:64"
  for case in ${COMPILE_CASES:-$default}; do
    local model=${case%:*} batch=${case#*:} name=${case/:/_b} mode=reduce-overhead steps=60
    local graph=(train.cuda_graph=true) peer=(--batch "$batch")
    if [[ $model == gpt* ]]; then
      [[ $model == gpt-1.3b ]] && steps=40
      gpt_cases "${name}_zero2_dshost" "$model" "$batch" $steps zero2 \
        strategy.grad_accum_dtype=\"bf16\" "${graph[@]}"
      [[ ${COMPILE_DDP:-1} == 1 ]] && gpt_cases "${name}_ddp_dshost" "$model" "$batch" $steps ddp "${graph[@]}"
      kind_suffix=", fp8" gpt_cases "${name}_fp8_dshost" "$model" "$batch" $steps zero2 \
        strategy.grad_accum_dtype=\"bf16\" train.precision=\"fp8\" "${graph[@]}"
      peer+=(--model gpt --preset "$model" --steps $((steps / 2))) mode=default
    else
      [[ $model == resnet50 ]] && mode=default
      dshost_run "${name}_zero2_dshost" "$model b$batch zero2" model.plugin=\"$model\" \
        train.micro_batch_size=$batch "${synthetic_images[@]}" train.max_steps=$steps strategy.plugin=\"zero2\" \
        strategy.grad_accum_dtype=\"bf16\" "${graph[@]}"
      peer+=(--model "$model")
    fi
    peer_run "${name}_torch" "$case eager" "${peer[@]}"
    peer_run "${name}_compile" "$case compile $mode" "${peer[@]}" --compile $mode
    [[ -n ${COMPILE_OPTIMIZER:-} ]] && peer_run "${name}_compile_step" "$case compile $mode, optimizer too" \
      "${peer[@]}" --compile $mode --compile-optimizer
  done
  python3 bench/gpu/compile_report.py "$rows" > "$out/compile.md"; cat "$out/compile.md"
}

# fp8 against bf16 for learning: gpt2-124m on the bytes of Debian's dict-gcide (GCIDE, 40 MB of
# English definitions), 2,000 steps (FP8_STEPS) of 8 x 1024 tokens, from one seed, under zero2
# with its graph; the test split's loss at the end. Both curves and summaries in $OUT/fp8_learning.tgz.
fp8_learning() {
  local text=/tmp/gcide.txt dir=$out/fp8_learning
  [[ -f $text ]] || zcat .text/gcide.dict.dz > $text
  mkdir -p "$dir"
  for precision in bf16 fp8; do
    dshost_run "fp8_learning_$precision" "gpt2-124m b8 gcide $precision" model.plugin=\"gpt\" \
      model.preset=\"gpt2-124m\" model.vocab_size=256 data.dataset=\"text\" data.path=\"$text\" \
      train.micro_batch_size=8 train.max_steps=${FP8_STEPS:-2000} strategy.plugin=\"zero2\" \
      strategy.grad_accum_dtype=\"bf16\" train.cuda_graph=true train.precision=\"$precision\" \
      optimizer.lr=6e-4 scheduler.warmup_steps=100 train.eval=true \
      $([[ $precision == fp8 ]] && echo "${FP8_OPTIONS:-}")
    cp "$logs/runs/fp8_learning_$precision/metrics.jsonl" "$dir/$precision.jsonl"
    cp "$logs/runs/fp8_learning_$precision/summary.json" "$dir/$precision.summary.json"
  done
  python3 bench/gpu/fp8_learning_report.py "$dir" > "$out/fp8_learning.md"; cat "$out/fp8_learning.md"
  # The device hands back a few files only: the curves and summaries as one.
  tar czf "$out/fp8_learning.tgz" -C "$out" fp8_learning && rm -r "$dir"
}

# The small gpt of the gpu test GptFp8 (2 layers of 128 on Debian's fortunes, 300 steps),
# in fp32, bf16 and fp8 from seeds 1, 2 and 3 (the run's seed: initialisation and data
# order) unless FP8_SMALL_* say otherwise: each run's mean loss over its last 50 steps, and its
# loss at steps 1, 10 and 50, where runs that round differently part.
fp8_small() {
  local fortunes=$PWD/.devdeps/usr/share/games/fortunes
  printf '%s\n' "| seed | precision | last 50 steps' mean loss | steps 1, 10, 50 |" "|---|---|---:|---|" \
    >> "$out/fp8_small.md"
  for seed in ${FP8_SMALL_SEEDS:-1 2 3}; do
    for precision in ${FP8_SMALL_PRECISIONS:-fp32 bf16 fp8}; do
      dshost_run "fp8_small_${precision}_$seed" "small gpt $precision seed $seed" model.plugin=\"gpt\" \
        model.n_layer=2 model.n_head=2 model.n_embd=128 model.vocab_size=256 model.block_size=64 \
        data.dataset=\"text\" data.path=\"$fortunes\" train.micro_batch_size=16 strategy.plugin=\"zero2\" \
        train.max_steps=300 optimizer.lr=0.003 scheduler.warmup_steps=10 run.seed=$seed \
        train.precision=\"$precision\" ${FP8_SMALL_SETS:-}
      python3 -c 'import json,sys; l=[json.loads(x)["loss"] for x in open(sys.argv[1])]; print(f"| {sys.argv[2]} | {sys.argv[3]} | {sum(l[-50:])/50:.4f} | {l[0]:.4f} {l[9]:.4f} {l[49]:.4f} |")' \
        "$logs/runs/fp8_small_${precision}_$seed/metrics.jsonl" "$seed" "$precision" >> "$out/fp8_small.md"
    done
  done
  cat "$out/fp8_small.md"
}

# gpt-1.3b b8 (which the other groups run without train.cuda_graph) with and without it, in
# bf16 and in fp8, zero2 with bf16 gradients, dshost alone: what the graph buys where the GPU
# is busiest.
graph_1_3b() {
  for precision in bf16 fp8; do
    for graph in false true; do
      kind_suffix=", $precision, graph $graph" gpt_cases "gpt-1.3b_b8_${precision}_graph_$graph" \
        gpt-1.3b 8 40 zero2 strategy.grad_accum_dtype=\"bf16\" train.precision=\"$precision\" \
        train.cuda_graph=$graph
    done
  done
}

# gpt in fp8 with a model option at two values (TOML, e.g. '"current"' '"delayed"') from one
# build, in turn, twice (FP8_CASES="gpt2-124m:8 ..." narrows): dshost alone, zero2 with bf16
# gradients and its graph (not at 1.3B), delayed scaling unless the option is fp8_scaling;
# $OUT/OPTION.md.
fp8_option_ab() {
  local option=$1 first=$2 second=$3
  for case in ${FP8_CASES:-gpt2-124m:8 gpt2-350m:8 gpt-1.3b:8}; do
    local preset=${case%:*} batch=${case#*:} steps=60 graph=(train.cuda_graph=true)
    [[ $preset == gpt-1.3b ]] && { steps=40; graph=(); }
    for round in 1 2; do
      for value in "$first" "$second"; do
        local plain=${value//\"/}
        kind_suffix=", fp8 $option $plain" gpt_cases "${preset}_b${batch}_fp8_${plain}_$round" \
          "$preset" "$batch" $steps zero2 strategy.grad_accum_dtype=\"bf16\" train.precision=\"fp8\" \
          model.$option="$value" "${graph[@]}"
      done
    done
  done
  python3 - "$rows" "${first//\"/}" "${second//\"/}" > "$out/$option.md" <<'PY'
import json, re, statistics, sys
rows, first, second = sys.argv[1:]
rates = {}
for r in map(json.loads, open(rows)):
    m = re.match(rf"(.+)_fp8_({first}|{second})_\d$", r["name"])
    if m and r.get("samples_per_second"):
        rates.setdefault(m[1], {}).setdefault(m[2], []).append(r["samples_per_second"])
print(f"| configuration | {first} seq/s | {second} seq/s | {second} / {first} |")
print("|---|---|---|---:|")
for case, by in rates.items():
    a, b = by.get(first, []), by.get(second, [])
    ratio = f"{statistics.mean(b) / statistics.mean(a):.3f}" if a and b else "-"
    show = lambda v: ", ".join(f"{x:.1f}" for x in v) or "-"
    print(f"| {case} | {show(a)} | {show(b)} | {ratio} |")
PY
  cat "$out/$option.md"
}

offload() {
  local steady=(strategy.offload_param_device=\"cpu\" train.log_every=5)  # windows 3 and 4 counted
  gpt_cases gpt-1.3b_b8_zero3_dshost gpt-1.3b 8 22 zero3-offload "${steady[@]}"
  kind_suffix=", delayed update" gpt_cases gpt-1.3b_b8_zero3_dpu_dshost gpt-1.3b 8 22 zero3-offload \
    "${steady[@]}" strategy.delayed_parameter_update=true
  local bf16=strategy.grad_accum_dtype=\"bf16\"
  kind_suffix=", bf16 gradients" gpt_cases gpt-1.3b_b8_zero3_bf16_dshost gpt-1.3b 8 22 zero3-offload \
    "${steady[@]}" "$bf16"
  kind_suffix=", delayed update, bf16 gradients" gpt_cases gpt-1.3b_b8_zero3_dpu_bf16_dshost gpt-1.3b 8 22 \
    zero3-offload "${steady[@]}" strategy.delayed_parameter_update=true "$bf16"
  peer_run gpt-1.3b_b8_fsdp2_offload "gpt gpt-1.3b b8 zero3-offload" --model gpt --preset gpt-1.3b \
    --batch 8 --warmup 2 --steps 3 --fsdp-offload
}

# zero3-offload with part of the optimizer on the GPU, in the memory activation
# checkpointing frees (each block's activations recomputed in backward, with the GPU time
# the CPU AdamW leaves over): OFFLOAD_RATIOS="..." (default 0.5), each against the FSDP2 peer
# at no more GPU memory; the first ratio also undelayed.
offload_split() {
  local split=(strategy.offload_param_device=\"cpu\" train.log_every=5 strategy.grad_accum_dtype=\"bf16\"
               model.activation_checkpointing=true)
  local ratios=(${OFFLOAD_RATIOS:-0.5})
  for ratio in "${ratios[@]}"; do
    kind_suffix=", delayed update, bf16 gradients, activation checkpointing, ratio $ratio" gpt_cases \
      "gpt-1.3b_b8_zero3_dpu_bf16_ckpt_r${ratio}_dshost" gpt-1.3b 8 22 zero3-offload "${split[@]}" \
      strategy.delayed_parameter_update=true strategy.offload_optimizer_ratio="$ratio"
  done
  kind_suffix=", bf16 gradients, activation checkpointing, ratio ${ratios[0]}" gpt_cases \
    "gpt-1.3b_b8_zero3_bf16_ckpt_r${ratios[0]}_dshost" gpt-1.3b 8 22 zero3-offload "${split[@]}" \
    strategy.offload_optimizer_ratio="${ratios[0]}"
  peer_run gpt-1.3b_b8_fsdp2_offload "gpt gpt-1.3b b8 zero3-offload" --model gpt --preset gpt-1.3b \
    --batch 8 --warmup 2 --steps 3 --fsdp-offload
}

# Strategy $1 (ddp, zero2, zero3) as dshost's --set values, and PyTorch's counterpart for
# peer.py --dist: DDP for ddp, FSDP2 with reshard_after_forward False for zero2 and True for
# zero3, which is dshost's zero3-offload with nothing offloaded.
dshost_strategy() {
  if [[ $1 == zero3 ]]; then echo strategy.plugin=\"zero3-offload\" strategy.offload_optimizer_device=\"none\"
  else echo strategy.plugin=\"$1\"; fi
}
torch_dist() {
  case $1 in ddp) echo ddp ;; zero2) echo fsdp ;; zero3) echo fsdp-reshard ;; esac
}

# Scaling over this host's GPUs (issues 9 and 10): ddp, zero2 and zero3 (zero3-offload with
# nothing offloaded) on 1 GPU and on SCALING_GPUS (default: all), each beside PyTorch on the
# same GPUs through torchrun: DDP for ddp, FSDP2 with reshard_after_forward False for zero2
# and True for zero3. resnet50 b64 and gpt2-124m b8 per GPU, bf16; samples/s of all GPUs.
scaling() {
  local all; all=$(nvidia-smi -L | wc -l)
  local images=(model.plugin=\"resnet50\" train.micro_batch_size=64 "${synthetic_images[@]}" train.max_steps=60)
  for n in $(printf '%s\n' 1 "${SCALING_GPUS:-$all}" | sort -un); do
    for strategy in ddp zero2 zero3; do
      local plugin=$strategy label=" x$n" peer; peer=$(torch_dist $strategy)
      local extra=(launcher.nprocs=$n $(dshost_strategy $strategy))
      [[ $strategy == zero3 ]] && plugin=zero3-offload label=", nothing offloaded x$n"
      dshost_run "resnet50_b64_${strategy}_x${n}_dshost" "resnet50 b64 $strategy x$n" "${images[@]}" "${extra[@]}"
      peer_gpus=$n peer_run "resnet50_b64_${strategy}_x${n}_torch" "resnet50 b64 $strategy x$n" \
        --model resnet50 --batch 64 --dist $peer
      kind_suffix=$label gpt_cases "gpt2-124m_b8_${strategy}_x${n}_dshost" gpt2-124m 8 60 "$plugin" "${extra[@]}"
      peer_gpus=$n peer_run "gpt2-124m_b8_${strategy}_x${n}_torch" "gpt gpt2-124m b8 $plugin$label" \
        --model gpt --preset gpt2-124m --batch 8 --dist $peer
    done
  done
}

# The guide's benchmark table (issue 10) on all of this host's GPUs (GUIDE_GPUS to narrow),
# each row beside PyTorch at the same settings under torchrun: mobilenet_v2 ddp b32 and
# zero2 b64, efficientnet_b0 ddp b16 and zero2 b32, the ensemble (mobilenet_v2,
# efficientnet_b0, resnet50; logits averaged) under ZeRO-3 at b8, per GPU, bf16. ZeRO-3 is
# zero3-offload with nothing offloaded beside FSDP2 with reshard_after_forward True.
guide() {
  local n=${GUIDE_GPUS:-$(nvidia-smi -L | wc -l)}
  local zoo=("${synthetic_images[@]}" train.max_steps=60 launcher.nprocs=$n)
  local row model batch strategy
  for row in mobilenet_v2:32:ddp mobilenet_v2:64:zero2 efficientnet_b0:16:ddp efficientnet_b0:32:zero2 \
             ensemble:8:zero3; do
    IFS=: read -r model batch strategy <<< "$row"
    local sets=(model.plugin=\"$model\" train.micro_batch_size=$batch $(dshost_strategy $strategy))
    local peer=$model dist; dist=$(torch_dist $strategy)
    if [[ $model == ensemble ]]; then
      sets+=(model.members=\"mobilenet_v2,efficientnet_b0,resnet50\")
      peer=ensemble:mobilenet_v2,efficientnet_b0,resnet50
    fi
    local kind="guide: $model b$batch $strategy x$n"
    dshost_run "guide_${model}_b${batch}_${strategy}_x${n}_dshost" "$kind" "${zoo[@]}" "${sets[@]}"
    peer_gpus=$n peer_run "guide_${model}_b${batch}_${strategy}_x${n}_torch" "$kind" --model "$peer" \
      --batch "$batch" --dist $dist
  done
}

# Two steps traced on each side after warm-up; bench/gpu/kernels.py sums their kernels.
profile() {
  local steps=(train.max_steps=26 train.profile_steps=2 train.profile_after=20)
  gpt_cases gpt2-124m_b8_profile gpt2-124m 8 26 ddp "${steps[@]}"
  peer_run gpt2-124m_b8_profile_torch "profile gpt2-124m" --model gpt --preset gpt2-124m --batch 8 \
    --warmup 15 --steps 5 --profile "$logs/gpt2-124m_torch.json"
  gpt_cases gpt-1.3b_b8_profile gpt-1.3b 8 26 ddp "${steps[@]}"
  peer_run gpt-1.3b_b8_profile_torch "profile gpt-1.3b" --model gpt --preset gpt-1.3b --batch 8 \
    --warmup 10 --steps 3 --profile "$logs/gpt-1.3b_torch.json"
  dshost_run vgg16_b32_profile "profile vgg16" model.plugin=\"vgg16\" train.micro_batch_size=32 \
    "${synthetic_images[@]}" "${steps[@]}"
  peer_run vgg16_b32_profile_torch "profile vgg16" --model vgg16 --batch 32 --steps 5 \
    --profile "$logs/vgg16_torch.json"
  for name in gpt2-124m gpt-1.3b vgg16; do
    local ours=$logs/runs/${name}_b8_profile/profile/rank0.pt.trace.json
    [[ $name == vgg16 ]] && ours=$logs/runs/vgg16_b32_profile/profile/rank0.pt.trace.json
    python3 bench/gpu/kernels.py "$name" "$ours" "$logs/${name}_torch.json" >> "$out/profiles.md" 2>&1
  done
}

# The compile group's configurations traced on both sides: dshost's zero2 with bf16 gradients
# (eager; PROFILE_SETS='train.cuda_graph=true' traces its replayed graph, whose kernels torch
# 2.11's profiler records too) against torch.compile in the compile group's mode
# (Inductor's kernels, named triton_*, by what they fuse); $OUT/profiles.md. PROFILE_SETS adds
# --set values to dshost's side ('train.precision="fp8"').
profile_compile() {
  for case in ${COMPILE_CASES:-gpt2-124m:16 gpt2-350m:8 mobilenet_v2:32 efficientnet_b0:32}; do
    local model=${case%:*} batch=${case#*:} name=${case/:/_b}_compile_profile mode=reduce-overhead
    local sets=(strategy.plugin=\"zero2\" strategy.grad_accum_dtype=\"bf16\" train.micro_batch_size=$batch
                train.max_steps=26 train.profile_steps=2 train.profile_after=20 ${PROFILE_SETS:-})
    if [[ $model == gpt* ]]; then
      mode=default
      tokens_file
      dshost_run "$name" "profile $case" model.plugin=\"gpt\" model.preset=\"$model\" model.vocab_size=50304 \
        data.dataset=\"tokens\" data.path=\"/tmp/tokens.bin\" "${sets[@]}"
      peer_run "${name}_torch" "profile $case" --model gpt --preset "$model" --batch "$batch" --steps 5 \
        --compile $mode --profile "$logs/${name}_torch.json"
    else
      dshost_run "$name" "profile $case" model.plugin=\"$model\" "${synthetic_images[@]}" "${sets[@]}"
      peer_run "${name}_torch" "profile $case" --model "$model" --batch "$batch" --steps 5 \
        --compile $mode --profile "$logs/${name}_torch.json"
    fi
    python3 bench/gpu/kernels.py "$case zero2, bf16 gradients ${PROFILE_SETS:-} / torch.compile ($mode)" \
      "$logs/runs/$name/profile/rank0.pt.trace.json" "$logs/${name}_torch.json" >> "$out/profiles.md" 2>&1
  done
}

# Where the GPU waits between kernels, two steps traced: dshost under zero2 with bf16
# gradients, eager and replaying its CUDA graph (whose kernels the trace shows too), then
# torch.compile's step (default mode for gpt, reduce-overhead for the image models, as the
# compile group): bench/gpu/gaps.py's idle spans of each.
gaps() {
  for case in ${GAPS_CASES:-gpt-1.3b:8 gpt2-124m:8}; do
    local model=${case%:*} batch=${case#*:}
    local mode=reduce-overhead peer=(--model "$model")
    [[ $model == gpt* ]] && mode=default peer=(--model gpt --preset "$model")
    for graph in false true; do
      local name=${model}_b${batch}_gaps_graph_$graph
      local sets=(strategy.grad_accum_dtype=\"bf16\" train.cuda_graph=$graph train.profile_steps=2
                  train.profile_after=20)
      if [[ $model == gpt* ]]; then
        kind_suffix=", graph $graph, traced" gpt_cases "$name" "$model" "$batch" 26 zero2 "${sets[@]}"
      else
        dshost_run "$name" "$model b$batch zero2, graph $graph, traced" model.plugin=\"$model\" \
          train.micro_batch_size=$batch "${synthetic_images[@]}" train.max_steps=26 strategy.plugin=\"zero2\" "${sets[@]}"
      fi
      gaps_of "$case zero2, bf16 gradients, graph $graph" "$logs/runs/$name/profile/rank0.pt.trace.json"
      [[ -n ${LAUNCHES:-} && $graph == true ]] &&
        python3 bench/gpu/launches.py "$logs/runs/$name/profile/rank0.pt.trace.json" "$LAUNCHES" >> "$out/gaps.md" 2>&1
    done
    [[ -n ${NO_PEERS:-} ]] && continue
    peer_run "${model}_b${batch}_gaps_torch" "$case compile $mode, traced" "${peer[@]}" --batch "$batch" \
      --steps 5 --compile $mode --profile "$logs/${model}_b${batch}_gaps_torch.json"
    gaps_of "$case torch.compile ($mode)" "$logs/${model}_b${batch}_gaps_torch.json"
  done
  cat "$out/gaps.md"
}

gaps_of() {  # TITLE TRACE: appends gaps.py's markdown for the trace to $out/gaps.md
  { echo "### $1"; echo; python3 bench/gpu/gaps.py "$2"; echo; } >> "$out/gaps.md" 2>&1
}

# vgg16 b32 under zero2 with bf16 gradients (eager) against
# PyTorch eager: kernel time by family.
profile_vgg16_zero2() {
  dshost_run vgg16_b32_zero2_profile "profile vgg16 zero2" model.plugin=\"vgg16\" train.micro_batch_size=32 \
    "${synthetic_images[@]}" strategy.plugin=\"zero2\" \
    strategy.grad_accum_dtype=\"bf16\" train.max_steps=26 train.profile_steps=2 train.profile_after=20
  peer_run vgg16_b32_zero2_profile_torch "profile vgg16 zero2" --model vgg16 --batch 32 --steps 5 \
    --profile "$logs/vgg16_zero2_torch.json"
  python3 bench/gpu/kernels.py "vgg16 b32 zero2, bf16 gradients / PyTorch eager" \
    "$logs/runs/vgg16_b32_zero2_profile/profile/rank0.pt.trace.json" "$logs/vgg16_zero2_torch.json" >> "$out/profiles.md" 2>&1
}

# configs/mobilenet-finetune.toml for one epoch on one GPU with CUDA graphs, from
# FINETUNE_WEIGHTS (torchvision's ImageNet mobilenet_v2 where you have it), else a seeded random
# torchvision mobilenet_v2 in torch.save's legacy format: every parameter trained, then the
# features frozen (model.freeze). Steady samples/s, test accuracy, peak GPU memory: $OUT/finetune.txt.
finetune() {
  local weights=${FINETUNE_WEIGHTS:-$logs/mobilenet_v2.legacy.pth}
  [[ -n ${FINETUNE_WEIGHTS:-} ]] || python3 tests/torchvision_weights.py mobilenet_v2 1000 "$weights"
  for freeze in "" "features.*"; do
    local name=mobilenet_v2_finetune${freeze:+_frozen}
    timeout 300 $build/dshost run configs/mobilenet-finetune.toml --set launcher.nprocs=1 \
      --set "model.init_from=\"$weights\"" --set "model.freeze=\"$freeze\"" --set train.epochs=1 \
      --set train.cuda_graph=true --set "data.path=\"$PWD/.fmnist\"" \
      --set "run.output_dir=\"$logs/runs\"" --set "run.name=\"$name\"" > "$logs/$name.log" 2>&1
    local code=$?
    [[ $code == 0 ]] || tail -30 "$logs/$name.log" > "$out/$name.log"
    python3 - "$logs/runs/$name/summary.json" "$name" "$code" "$weights" >> "$out/finetune.txt" <<'PY'
import json, sys
path, name, code, weights = sys.argv[1:]
try:
    s = json.load(open(path))
    print(f"{name}: from {weights}: steady {s['steady_samples_per_second']:.0f} samples/s, "
          f"test accuracy {s['test_accuracy']:.4f}, peak GPU {s['peak_device_memory_bytes'] / 2**20:.0f} MiB, "
          f"parameter/gradient/optimizer bytes {s['memory_per_rank_bytes']}")
except Exception as e:
    print(f"{name}: exit {code}: {e!r}")
PY
  done
  cat "$out/finetune.txt"
}

# gpt 1.3B under zero2 at one rank against PyTorch eager: kernel time by family. [--set values]
profile_zero2() {
  gpt_cases gpt-1.3b_b8_zero2_profile gpt-1.3b 8 26 zero2 train.profile_steps=2 train.profile_after=20 "$@"
  peer_run gpt-1.3b_b8_zero2_profile_torch "profile gpt-1.3b zero2" --model gpt --preset gpt-1.3b --batch 8 \
    --warmup 10 --steps 3 --profile "$logs/gpt-1.3b_zero2_torch.json"
  python3 bench/gpu/kernels.py "gpt-1.3b zero2 / PyTorch eager" \
    "$logs/runs/gpt-1.3b_b8_zero2_profile/profile/rank0.pt.trace.json" "$logs/gpt-1.3b_zero2_torch.json" \
    >> "$out/profiles.md" 2>&1
}

profile_offload() {  # [--set values for dshost]
  gpt_cases gpt-1.3b_b8_zero3_profile gpt-1.3b 8 7 zero3-offload strategy.offload_param_device=\"cpu\" \
    train.profile_steps=2 train.profile_after=4 "$@"
  peer_run gpt-1.3b_b8_fsdp2_profile "profile offload" --model gpt --preset gpt-1.3b --batch 8 --warmup 2 \
    --steps 2 --fsdp-offload --profile "$logs/fsdp2.json"
  python3 bench/gpu/kernels.py "gpt-1.3b zero3-offload / FSDP2 offload" \
    "$logs/runs/gpt-1.3b_b8_zero3_profile/profile/rank0.pt.trace.json" "$logs/fsdp2.json" >> "$out/profiles.md" 2>&1
}

# zero3-offload's traced steps: GPU busy time and where the host waits (bench/gpu/streams.py).
streams_offload() {
  for dpu in false true; do
    local name=gpt-1.3b_b8_zero3_streams_$dpu
    gpt_cases "$name" gpt-1.3b 8 7 zero3-offload strategy.offload_param_device=\"cpu\" \
      strategy.delayed_parameter_update=$dpu train.profile_steps=2 train.profile_after=4
    python3 bench/gpu/streams.py "zero3-offload gpt-1.3b b8, delayed_parameter_update = $dpu" \
      "$logs/runs/$name/profile/rank0.pt.trace.json" >> "$out/streams.md" 2>&1
  done
}

# Where a step's GPU memory goes (bench/gpu/memory.py): gpt 1.3B under ddp against PyTorch
# eager (one traced step after warm-up), and zero3-offload against FSDP2 with CPU offload
# (dshost's steps from the first: its run's peak came before the steady ones).
memory() {
  gpt_cases gpt-1.3b_b8_memory gpt-1.3b 8 6 ddp train.profile_steps=1 train.profile_after=4
  peer_run gpt-1.3b_b8_memory_torch "memory gpt-1.3b" --model gpt --preset gpt-1.3b --batch 8 \
    --warmup 3 --steps 2 --profile "$logs/gpt-1.3b_memory_torch.json"
  gpt_cases gpt-1.3b_b8_zero3_memory gpt-1.3b 8 5 zero3-offload strategy.offload_param_device=\"cpu\" \
    train.profile_steps=5 train.profile_after=0
  peer_run gpt-1.3b_b8_fsdp2_memory "memory offload" --model gpt --preset gpt-1.3b --batch 8 --warmup 2 \
    --steps 1 --fsdp-offload --profile "$logs/fsdp2_memory.json"
  python3 bench/gpu/memory.py "gpt-1.3b b8: ddp / PyTorch eager" \
    "$logs/runs/gpt-1.3b_b8_memory/profile/rank0.pt.trace.json" "$logs/gpt-1.3b_memory_torch.json" >> "$out/memory.md" 2>&1
  python3 bench/gpu/memory.py "gpt-1.3b b8: zero3-offload / FSDP2 offload" \
    "$logs/runs/gpt-1.3b_b8_zero3_memory/profile/rank0.pt.trace.json" "$logs/fsdp2_memory.json" >> "$out/memory.md" 2>&1
}

# The largest gpt each strategy trains on this GPU: GPT-3 6.7B's width (4096, 32 heads),
# one sequence of 1024 per step, 2 steps; layers tried from the top down until a run
# finishes with a finite loss. The first size that trains is the answer (sizes step by 2
# layers, 201M parameters). $OUT/largest.txt lists every try. Arguments: a tag for the
# run names, the strategy, its --set values (space-separated, may be ""), then the layers;
# LARGEST_LAYERS="..." replaces the layers (to spread a search over several calls).
largest() {
  local tag=$1 strategy=$2 also=($3)
  shift 3
  local extra=()
  # Pageable offloaded buffers: pinned ones round up to a power of two (see check_host_memory).
  [[ $strategy == zero3-offload ]] && extra=(strategy.offload_param_device=\"cpu\" strategy.pin_memory=false)
  extra+=("${also[@]}")
  for layers in ${LARGEST_LAYERS:-$@}; do
    local name=largest_${tag}_${layers}
    gpt_cases "$name" custom 1 2 "$strategy" model.n_layer="$layers" model.n_head=32 model.n_embd=4096 \
      train.log_every=1 "${extra[@]}"
    local row; row=$(tail -1 "$rows")
    echo "$tag $layers layers: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r.get("parameters"), "parameters, exit", r["exit"], "loss", r.get("final_loss"))' "$row")" >> "$out/largest.txt"
    grep -q '"exit": 0' <<< "$row" && return
    tail -2 "$logs/$name.log" >> "$out/largest.txt"
  done
}

# gpt's CUDA kernels alone (tests/bench/gpu_kernels_bench.cc).
kernels() {
  $build/tests/bench/dshost_gpu_kernels_bench --benchmark_filter="${KERNELS:-.}" \
    --benchmark_out="$logs/kernels.json" --benchmark_out_format=json > "$out/kernels.txt" 2>&1
  python3 - "$logs/kernels.json" >> "$rows" <<'PY'
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("per_launch"):  # seconds a launch
        print(json.dumps({"name": b["name"], "samples_per_second": 1 / b["per_launch"],
                          "bytes_per_second": b.get("bytes_per_second")}))
PY
  cat "$out/kernels.txt"
}

machine > "$out/machine.txt" 2>&1
# What the image lacks comes in .devdeps/ (bench/gpu/stage.sh): without it the build would
# fail minutes in, at cmake's first missing package.
[[ -f .devdeps/usr/include/stb/stb_image.h && -d .devdeps/usr/include/gloo ]] || {
  echo "run.sh: .devdeps/ lacks stb or gloo: stage it with bench/gpu/stage.sh and carry it" >&2; exit 1; }
build_dshost "$@"
for group in "$@"; do
  case $group in
    real-data) real_data ;;
    tests) DSHOST_TEST_PYTHON=$(command -v python3) DSHOST_TEST_FASHION_MNIST=$PWD/.fmnist \
             DSHOST_TEST_FORTUNES=$PWD/.devdeps/usr/share/games/fortunes ctest --test-dir $build -L gpu -R "${GPU_TESTS:-.}" --output-on-failure \
             > "$out/gpu_tests.log" 2>&1; tail -5 "$out/gpu_tests.log" ;;
    tests-no-tf32) NVIDIA_TF32_OVERRIDE=0 DSHOST_TEST_FASHION_MNIST=$PWD/.fmnist \
             DSHOST_TEST_FORTUNES=$PWD/.devdeps/usr/share/games/fortunes ctest --test-dir $build \
             -L gpu --output-on-failure > "$out/gpu_tests_no_tf32.log" 2>&1; tail -5 "$out/gpu_tests_no_tf32.log" ;;
    cpu-adam) { python3 bench/gpu/host_bandwidth.py && $build/tests/bench/dshost_cpu_adam_bench; } \
                > "$out/cpu_adam.txt" 2>&1; tail -12 "$out/cpu_adam.txt" ;;
    images) images ;;
    images-graph) images graph ;;
    images-zero2) images zero2 ;;
    gpt) gpt ;;
    gpt-1.3b) gpt13 ;;
    gpt-zero2) gpt_zero2 ;;
    offload) offload ;;
    offload-split) offload_split ;;
    scaling) scaling ;;
    guide) guide ;;
    finetune) finetune ;;
    compile) compile_table ;;
    profile-compile) profile_compile ;;
    gaps) gaps ;;
    fp8-learning) fp8_learning ;;
    fp8-small) fp8_small ;;
    fp8-scaling) fp8_option_ab fp8_scaling '"current"' '"delayed"' ;;
    fp8-output) fp8_option_ab fp8_output false true ;;
    gpt-1.3b-graph) graph_1_3b ;;
    profile) profile ;;
    profile-zero2) profile_zero2 ;;
    profile-zero2-bf16) profile_zero2 strategy.grad_accum_dtype=\"bf16\" ;;
    profile-vgg16-zero2) profile_vgg16_zero2 ;;
    profile-offload) profile_offload ;;
    profile-offload-dpu) profile_offload strategy.delayed_parameter_update=true ;;
    profile-offload-split) profile_offload strategy.delayed_parameter_update=true strategy.grad_accum_dtype=\"bf16\" \
                             model.activation_checkpointing=true strategy.offload_optimizer_ratio=0.5 ;;
    conv-relu) python3 bench/gpu/conv_relu.py 8 32 > "$out/conv_relu.txt" 2>&1; cat "$out/conv_relu.txt" ;;
    conv-alignment) python3 bench/gpu/conv_alignment.py > "$out/conv_alignment.md" 2>&1; cat "$out/conv_alignment.md" ;;
    attention-backends) python3 bench/gpu/attention_backends.py > "$out/attention_backends.md" 2>&1
                        cat "$out/attention_backends.md" ;;
    kernels) kernels ;;
    gelu-epilogue) python3 bench/gpu/gelu_epilogue.py > "$out/gelu_epilogue.md" 2>&1
                   cat "$out/gelu_epilogue.md" ;;
    streams-offload) streams_offload ;;
    memory) memory ;;
    largest-ddp) largest ddp ddp "" 24 22 20 18 16 ;;
    largest-zero3) largest zero3-offload zero3-offload "" 26 24 22 ;;
    largest-zero3-bf16) largest zero3-offload_bf16 zero3-offload 'strategy.grad_accum_dtype="bf16"' 30 28 26 ;;
    # 38% of the optimizer on the GPU (offload_optimizer_ratio): 16 bytes an element of state
    # there and 16 in the host, so both memories hold the model.
    largest-zero3-split) largest zero3-offload_bf16_ratio0.62 zero3-offload \
                           'strategy.grad_accum_dtype="bf16" strategy.offload_optimizer_ratio=0.62' 56 54 52 50 48 ;;
    *) echo "unknown group $group"; exit 2 ;;
  esac
done
