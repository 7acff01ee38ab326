#!/usr/bin/env bash
# Folds every file under a folder ($OUT unless one is given) into one, all.txt there, each
# after a line "=== its path": the device hands back about eight files a call, so a call
# that ran several groups ends with this.
#
#   bench/gpu/bundle.sh [FOLDER]
set -euo pipefail
dir=${1:-$OUT}
folded=$(mktemp)
(cd "$dir" && find . -type f ! -path ./all.txt | sort | while read -r f; do
  echo "=== $f"
  cat "$f"
done) > "$folded"
rm -rf "${dir:?}"/*
mv "$folded" "$dir/all.txt"
