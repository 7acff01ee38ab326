#!/usr/bin/env bash
# Stages, on the development machine, what bench/gpu/run.sh needs carried to the GPU machine
# (../shared/gpu/README.md), all git-ignored through .git/info/exclude:
#   .devdeps/  the Debian packages the GPU image lacks (toml++, CLI11, nlohmann-json, dlpack,
#              gloo, stb, libjpeg-turbo, fortunes for GptFp8)
#   .fmnist/   Debian's Fashion-MNIST (the tests group)
#   .text/     dict-gcide's text (fp8-learning; scripts/setup.sh --bench installs it)
#   .before/   with a commit given: that commit's sources, for before_after.sh
# Then carry them: .devdeps, .fmnist and .text come to about 45 MB of the 64 MiB a run takes.
#
#   bench/gpu/stage.sh [COMMIT]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
../shared/gpu/stage-deps.sh libgloo-dev libstb-dev libstb0 libjpeg62-turbo-dev libjpeg62-turbo fortunes
for path in /.fmnist/ /.text/ /.before/; do
  grep -qx "$path" .git/info/exclude || echo "$path" >> .git/info/exclude
done
rm -rf .fmnist .text && mkdir -p .fmnist .text
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fmnist/
if [[ -f /usr/share/dictd/gcide.dict.dz ]]; then cp /usr/share/dictd/gcide.dict.dz .text/
else echo "stage: no dict-gcide (scripts/setup.sh --bench installs it): fp8-learning cannot run" >&2; fi
if [[ -n ${1:-} ]]; then
  rm -rf .before && mkdir .before && git archive "$1" | tar -x -C .before
  echo "staged .before from $(git rev-parse --short "$1")"
fi
du -sh .devdeps .fmnist .text ${1:+.before}
