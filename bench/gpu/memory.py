"""Where a training step's GPU memory goes, dshost beside PyTorch, from two Chrome traces
with allocations in them: dshost's train.profile_steps output and torch.profiler's
(profile_memory=True) export_chrome_trace of the peer.

    python3 bench/gpu/memory.py TITLE DSHOST_TRACE PYTORCH_TRACE

Prints markdown: for every traced step, the GPU's allocated bytes at its start and at its
peak and the operator the peak falls in; then, for the last step of each trace, the net
bytes allocated between the step's start and its peak by the outermost operator around
each allocation on its thread (backward's under the autograd node that ran). Saved
activations show as the forward operators that made them; a temporary freed after its
operator returned counts there and again, negative, outside operators.
"""
import bisect
import collections
import json
import sys

CUDA = 1  # c10::DeviceType::CUDA, the "Device Type" of GPU allocations
GIB = 1 << 30


def outermost_ops(events):
    """Per thread: the operators no other operator on that thread contains, sorted by start."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "cpu_op":
            by_thread[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    tops = {}
    for tid, ops in by_thread.items():
        ops.sort(key=lambda o: (o[0], -o[1]))
        kept = []
        for op in ops:
            if not kept or op[0] >= kept[-1][1]:
                kept.append(op)
        tops[tid] = kept
    return tops


def label(ops, tid, ts):
    kept = ops.get(tid, [])
    i = bisect.bisect_right(kept, (ts, float("inf"), "")) - 1
    if i >= 0 and kept[i][0] <= ts < kept[i][1]:
        return kept[i][2].replace("autograd::engine::evaluate_function: ", "backward: ")
    return "(outside operators)"


def step_memory(allocations, step, ops):
    """The GPU's memory over one ProfilerStep range, from the trace's GPU allocations in
    time order: level at its start, rise to its peak, the operator at the peak and the net
    bytes by operator up to it."""
    begin, end = step["ts"], step["ts"] + step["dur"]
    allocations = allocations[bisect.bisect_left(allocations, begin, key=lambda e: e["ts"]):
                              bisect.bisect_left(allocations, end, key=lambda e: e["ts"])]
    if not allocations:
        return None
    level, peak, peak_at = 0, 0, 0
    for i, e in enumerate(allocations):
        level += e["args"]["Bytes"]
        if level > peak:
            peak, peak_at = level, i
    net = collections.Counter()
    for e in allocations[:peak_at + 1]:
        net[label(ops, e["tid"], e["ts"])] += e["args"]["Bytes"]
    at_peak, first = allocations[peak_at], allocations[0]["args"]
    return {"step": step["name"], "start": first["Total Allocated"] - first["Bytes"], "rise": peak,
            "where": label(ops, at_peak["tid"], at_peak["ts"]), "net": net, "ms": (at_peak["ts"] - begin) / 1e3}


def steps_memory(path):
    """step_memory for each ProfilerStep of a trace, in order."""
    events = json.load(open(path))["traceEvents"]
    steps = sorted((e for e in events if e["name"].startswith("ProfilerStep#") and e.get("ph") == "X"
                    and e.get("cat") in ("user_annotation", "cpu_op")), key=lambda e: e["ts"])
    allocations = sorted((e for e in events if e["name"] == "[memory]" and e["args"].get("Device Type") == CUDA),
                         key=lambda e: e["ts"])
    ops = outermost_ops(events)
    return [m for m in (step_memory(allocations, s, ops) for s in steps) if m]


def main():
    title, ours, theirs = sys.argv[1], steps_memory(sys.argv[2]), steps_memory(sys.argv[3])
    gib = lambda b: f"{b / GIB:.2f}"
    print(f"### {title}\n")
    print("GiB allocated at each traced step's start and at its peak:\n")
    print("| side | step | start | peak | peak in (ms into the step) |\n|---|---|---|---|---|")
    for side, steps in (("dshost", ours), ("PyTorch", theirs)):
        for m in steps:
            print(f"| {side} | {m['step']} | {gib(m['start'])} | {gib(m['start'] + m['rise'])} | {m['where']} ({m['ms']:.0f}) |")
    last_ours, last_theirs = ours[-1], theirs[-1]
    print(f"\nNet GiB allocated from the start of the last traced step ({last_ours['step']} / "
          f"{last_theirs['step']}) to its peak, by outermost operator:\n")
    print("| operator | dshost | PyTorch |\n|---|---|---|")
    names = set(last_ours["net"]) | set(last_theirs["net"])
    for name in sorted(names, key=lambda n: -max(abs(last_ours["net"][n]), abs(last_theirs["net"][n])))[:20]:
        print(f"| {name} | {gib(last_ours['net'][name])} | {gib(last_theirs['net'][name])} |")
    print()


if __name__ == "__main__":
    main()
