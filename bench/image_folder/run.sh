#!/usr/bin/env bash
# The input pipelines alone, without a model, on this machine's cores: dshost's
# (tests/bench/loader_bench.cc) against PyTorch's DataLoader over torchvision's ImageFolder
# (torch_loader.py), both with cores - 1 workers, on the same ImageNet-like JPEG folder
# (make_folder.py: 3,000 photo-sized JPEGs). Prints one JSON row per side, then the ratio.
#   bench/image_folder/run.sh [FOLDER] [DSHOST_LOADER_BENCH]
# (scripts/setup.sh --bench installs the peer; PYTHON=/usr/bin/python3 where python3 is another)
set -euo pipefail
cd "$(dirname "$0")/../.."
folder=${1:-/tmp/imagenet_like}
binary=${2:-build/tests/bench/dshost_loader_bench}
python=${PYTHON:-python3}  # one with torch and torchvision
workers=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
batches=${BATCHES:-100}
[[ -d $folder ]] || $python bench/image_folder/make_folder.py "$folder" 3000 100
dshost=$("$binary" "$folder" "$workers" "$batches")
torch=$($python bench/image_folder/torch_loader.py "$folder" "$workers" "$batches")
for row in "$dshost" "$torch"; do
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(name="loader_only_"+r["side"], kind="jpeg loader alone"); print(json.dumps(r))' "$row"
done
python3 -c 'import json,sys; d,t=(json.loads(a) for a in sys.argv[1:]); print(json.dumps({"name":"loader_only_ratio","kind":"jpeg loader alone","ratio":d["images_per_second"]/t["images_per_second"]}))' "$dshost" "$torch"
