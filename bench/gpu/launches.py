"""The launches of the kernels whose name holds PATTERN in a traced run (a Chrome trace, dshost's
train.profile_steps output or the peer's), by launch shape: how many a step, their time each and
a step, the costliest shapes first. Where a family's time goes by layer size (many small
launches bound by latency, or a few large ones bound by bandwidth) shows here, as it does not in
kernels.py's totals.

    python3 bench/gpu/launches.py TRACE PATTERN [STEPS]

STEPS (2) is how many steps the trace holds; prints markdown.
"""
import collections
import json
import sys

from gaps import short


def main():
    trace, pattern = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    events = json.load(open(trace))["traceEvents"]
    shapes = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "kernel" and pattern in e["name"]:
            args = e.get("args", {})
            key = (short(e["name"], 60), tuple(args.get("grid", ())), tuple(args.get("block", ())))
            shapes[key].append(e["dur"])
    total = sum(sum(d) for d in shapes.values())
    launches = sum(len(d) for d in shapes.values())
    print(f"Kernels holding `{pattern}`: {launches / steps:.0f} launches and "
          f"{total / steps / 1000:.3f} ms a step\n")
    print("| kernel | grid | block | a step | us each | ms a step |\n|---|---|---|---:|---:|---:|")
    for (name, grid, block), durations in sorted(shapes.items(), key=lambda kv: -sum(kv[1])):
        print(f"| `{name}` | {'x'.join(map(str, grid))} | {'x'.join(map(str, block))} | "
              f"{len(durations) / steps:.0f} | {sum(durations) / len(durations):.1f} | "
              f"{sum(durations) / steps / 1000:.3f} |")


if __name__ == "__main__":
    main()
