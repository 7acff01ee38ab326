"""fp8 against bf16 for learning, from bench/gpu/run.sh's fp8-learning group: the training
loss of both runs at chosen steps, the mean over each run's last 100 steps and fp8's
difference from bf16 there, and each run's test loss and rate.

    python3 bench/gpu/fp8_learning_report.py DIR   (DIR holds {bf16,fp8}.jsonl and .summary.json)
"""
import json
import statistics
import sys


def curve(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r}


def main():
    folder = sys.argv[1]
    runs = {p: curve(f"{folder}/{p}.jsonl") for p in ("bf16", "fp8")}
    summaries = {p: json.load(open(f"{folder}/{p}.summary.json")) for p in runs}
    last = max(runs["bf16"])
    print("| step | bf16 loss | fp8 loss | fp8 / bf16 |")
    print("|---|---|---|---|")
    for step in sorted(s for s in runs["bf16"] if s in runs["fp8"] and (s % 250 == 0 or s in (10, 100))):
        b, f = runs["bf16"][step], runs["fp8"][step]
        print(f"| {step} | {b:.4f} | {f:.4f} | {f / b:.4f} |")
    tail = {p: statistics.mean(l for s, l in c.items() if s > last - 100) for p, c in runs.items()}
    print(f"\nMean training loss over the last 100 steps: bf16 {tail['bf16']:.4f}, fp8 {tail['fp8']:.4f}, "
          f"fp8 {100 * (tail['fp8'] / tail['bf16'] - 1):+.2f}% (goal: within 1%).")
    for p, s in summaries.items():
        print(f"- {p}: test loss {s.get('test_loss')}, {s.get('samples_per_second', 0):.1f} sequences/s "
              f"(steady {s.get('steady_samples_per_second')}), peak GPU memory "
              f"{s.get('peak_device_memory_bytes', 0) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
