"""Where a traced dshost step's time goes, stream by stream, from its train.profile_steps
Chrome trace: per ProfilerStep, the step's span on the host, each GPU stream's busy time
(kernels, and copies by direction), the time no stream was busy, and dshost's named host
ranges (zero::*) summed by name.

    python3 bench/gpu/streams.py TITLE DSHOST_TRACE

Prints markdown. GPU work counts for the step whose host span it starts in.
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
    print(f"### {title}\n")
    for step in steps:
        begin, end = step["ts"], step["ts"] + step["dur"]
        inside = [e for e in events if begin <= e["ts"] < end]
        busy = collections.defaultdict(float)
        for e in inside:
            if e["cat"] in GPU:
                busy[(e.get("args", {}).get("stream", e.get("tid")), what(e))] += e["dur"]
        scopes = collections.defaultdict(float)
        for e in inside:
            if e["name"].startswith("zero::"):
                scopes[e["name"]] += e["dur"]
        gpu = [(e["ts"], e["ts"] + e["dur"]) for e in inside if e["cat"] in GPU]
        print(f"{step['name']}: {step['dur'] / 1e3:.1f} ms on the host; some stream busy "
              f"{busy_union(gpu) / 1e3:.1f} ms\n")
        print("| stream | work | ms |\n|---|---|---|")
        for (stream, kind), us in sorted(busy.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            print(f"| {stream} | {kind} | {us / 1e3:.1f} |")
        print("\n| host range | ms |\n|---|---|")
        for name, us in sorted(scopes.items()):
            print(f"| {name} | {us / 1e3:.1f} |")
        print()


if __name__ == "__main__":
    main(*sys.argv[1:3])
