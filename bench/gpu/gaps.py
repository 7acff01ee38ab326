"""Where the GPU waits in a traced run: the idle spans between kernels of a Chrome trace
(dshost's train.profile_steps output), the longest first, each with the kernels either side
and the host's ops across it.

    python3 bench/gpu/gaps.py TRACE [SHORTEST_US]

Prints markdown: the device's span and its idle time, the part of it in spans of at least
SHORTEST_US (20) microseconds (the rest is the few microseconds between back-to-back kernels),
those spans by the kernel after them, and the 15 longest.
"""
import collections
import json
import sys

DEVICE = {"kernel", "gpu_memcpy", "gpu_memset"}
HOST = {"cpu_op", "user_annotation"}


def short(name, width=70):
    return name if len(name) <= width else name[: width - 3] + "..."


def idle_spans(device):
    """(length, start, kernel before, kernel after) for each wait between kernels, in us."""
    spans, busy_until, last = [], device[0]["ts"], device[0]
    for e in device[1:]:
        if e["ts"] > busy_until:
            spans.append((e["ts"] - busy_until, busy_until, last, e))
        if e["ts"] + e["dur"] > busy_until:
            busy_until, last = e["ts"] + e["dur"], e
    return spans, busy_until - device[0]["ts"]


def host_ops_across(host, start, length):
    return sorted({short(h["name"], 50) for h in host
                   if h["ts"] < start + length and h["ts"] + h["dur"] > start})[:8]


def main():
    events = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("ph") == "X"]
    shortest = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    device = sorted((e for e in events if e.get("cat") in DEVICE), key=lambda e: e["ts"])
    host = [e for e in events if e.get("cat") in HOST]
    spans, span = idle_spans(device)
    long_spans = sorted((s for s in spans if s[0] >= shortest), key=lambda s: -s[0])
    idle, long_idle = sum(s[0] for s in spans), sum(s[0] for s in long_spans)
    print(f"Device span {span / 1000:.2f} ms, {len(device)} kernels, idle {idle / 1000:.2f} ms: "
          f"{long_idle / 1000:.2f} ms in {len(long_spans)} spans of at least {shortest:.0f} us, "
          f"{(idle - long_idle) / 1000:.2f} ms in shorter ones\n")
    by_next = collections.defaultdict(lambda: [0.0, 0])
    for length, _, _, after in long_spans:
        by_next[short(after["name"])][0] += length
        by_next[short(after["name"])][1] += 1
    print("| idle ms | spans | kernel after them |\n|---:|---:|---|")
    for name, (total, n) in sorted(by_next.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f"| {total / 1000:.3f} | {n} | `{name}` |")
    print("\nThe longest spans, the kernels either side, and the host's ops across them:\n")
    for length, start, before, after in long_spans[:15]:
        print(f"- {length / 1000:.3f} ms: `{short(before['name'], 50)}` -> `{short(after['name'], 50)}`; "
              f"host: {'; '.join(host_ops_across(host, start, length))}")


if __name__ == "__main__":
    main()
