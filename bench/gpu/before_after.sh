#!/usr/bin/env bash
# The same bench groups from two trees on one GPU: BEFORE_TREE (an earlier commit's sources,
# e.g. `git archive COMMIT | tar -x -C .before`, carried to the GPU machine) and this one,
# dshost alone (NO_PEERS), group by group, this tree first (BEFORE_FIRST=1: the other), ROUNDS
# times over (1), so that a drift of the GPU's speed falls on both sides. Rows land in
# $OUT/after and $OUT/before; $OUT/before_after.md compares each run's mean over the rounds.
#
#   bench/gpu/before_after.sh BEFORE_TREE GROUP...
set -uo pipefail
cd "$(dirname "$0")/../.."
before=$(realpath "$1"); shift
out=${OUT:-/tmp/gpu-bench}
cp bench/gpu/run.sh "$before/bench/gpu/run.sh"  # the same runs and options for both trees
for dep in .devdeps .fmnist; do [[ -e $dep && ! -e $before/$dep ]] && ln -s "$PWD/$dep" "$before/$dep"; done
# Both builds at once (run.sh with no group only builds).
BUILD=/tmp/build-after OUT=$out/after bench/gpu/run.sh &
BUILD=/tmp/build-before OUT=$out/before "$before/bench/gpu/run.sh" &
wait
run_after() { NO_PEERS=1 BUILD=/tmp/build-after OUT=$out/after bench/gpu/run.sh "$1"; }
run_before() { NO_PEERS=1 BUILD=/tmp/build-before OUT=$out/before "$before/bench/gpu/run.sh" "$1"; }
sides=(run_after run_before)
[[ -n ${BEFORE_FIRST:-} ]] && sides=(run_before run_after)
for round in $(seq "${ROUNDS:-1}"); do
  for group in "$@"; do
    for side in "${sides[@]}"; do
      rm -rf /tmp/gpu-bench-logs
      $side "$group"
    done
  done
done
python3 - "$out" > "$out/before_after.md" <<'PY'
import json, statistics, sys
out = sys.argv[1]
def rows(side):  # each run's rows over the rounds
    runs = {}
    for r in map(json.loads, open(f"{out}/{side}/rows.jsonl")):
        runs.setdefault(r["name"], []).append(r)
    return runs
def rate(rs):
    rates = [r["samples_per_second"] for r in rs if r.get("samples_per_second")]
    return statistics.mean(rates) if rates else None
def shown(rs):
    rates = [f'{r["samples_per_second"]:.1f}' for r in rs if r.get("samples_per_second")]
    return ", ".join(rates) or "-"
def mib(rs):
    return f'{rs[-1]["peak_device_bytes"] / 2**20:.0f}' if rs and rs[-1].get("peak_device_bytes") else "-"
before, after = rows("before"), rows("after")
print("| run | before samples/s | after samples/s | after / before (means) | peak GPU MiB before / after |")
print("|---|---:|---:|---:|---:|")
for name, a in after.items():
    b = before.get(name, [])
    ratio = f"{rate(a) / rate(b):.3f}" if rate(a) and rate(b) else "-"
    print(f"| {name} | {shown(b)} | {shown(a)} | {ratio} | {mib(b)} / {mib(a)} |")
PY
cat "$out/before_after.md"
