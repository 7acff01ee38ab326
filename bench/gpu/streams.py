"""Where a traced dshost step's time goes, from its train.profile_steps Chrome trace: per
ProfilerStep, the step's span on the host, the time some GPU work ran (overlapping streams
counted once), GPU time by kind (kernels, copies by direction), and dshost's named host
ranges (zero::*) summed by name: a range long on the host is where the host waited.

    python3 bench/gpu/streams.py TITLE DSHOST_TRACE

Prints markdown. GPU work counts for the step whose span on the GPU (the profiler's
gpu_user_annotation, as bench/gpu/kernels.py counts) it starts in: the host runs ahead. The
profiler slows zero3-offload's step (1.3B: 0.4-0.6 s to 0.6-1 s), so read the host ranges
as where the host waits, not as the step's times.
"""
import collections
import json
import sys

GPU = {"kernel", "gpu_memcpy", "gpu_memset"}


def what(event):
    if event["cat"] != "gpu_memcpy":
        return event["cat"].replace("gpu_", "")
    name = event["name"]
    return "copy " + ("HtoD" if "HtoD" in name else "DtoH" if "DtoH" in name else "DtoD")


def busy_union(intervals):
    total, reach = 0.0, float("-inf")
    for begin, end in sorted(intervals):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


def main(title, path):
    events = [e for e in json.load(open(path))["traceEvents"] if e.get("ph") == "X"]
    steps = sorted((e for e in events if e["name"].startswith("ProfilerStep#") and e["cat"] != "gpu_user_annotation"),
                   key=lambda e: e["ts"])
    on_gpu = {e["name"]: e for e in events if e["cat"] == "gpu_user_annotation" and e["name"].startswith("ProfilerStep#")}
    print(f"### {title}\n")
    for step in steps:
        begin, end = step["ts"], step["ts"] + step["dur"]
        inside = [e for e in events if begin <= e["ts"] < end]
        gpu_step = on_gpu.get(step["name"], step)
        gpu = [e for e in events if e["cat"] in GPU and gpu_step["ts"] <= e["ts"] < gpu_step["ts"] + gpu_step["dur"]]
        busy = collections.defaultdict(float)
        for e in gpu:
            busy[what(e)] += e["dur"]
        scopes = collections.defaultdict(float)
        for e in inside:
            if e["name"].startswith("zero::"):
                scopes[e["name"]] += e["dur"]
        print(f"{step['name']}: {step['dur'] / 1e3:.1f} ms on the host, {gpu_step['dur'] / 1e3:.1f} ms "
              f"on the GPU, {busy_union([(e['ts'], e['ts'] + e['dur']) for e in gpu]) / 1e3:.1f} ms of it busy\n")
        print("| GPU work | ms |\n|---|---|")
        for kind, us in sorted(busy.items()):
            print(f"| {kind} | {us / 1e3:.1f} |")
        print("\n| host range | ms |\n|---|---|")
        for name, us in sorted(scopes.items()):
            print(f"| {name} | {us / 1e3:.1f} |")
        print()


if __name__ == "__main__":
    main(*sys.argv[1:3])
