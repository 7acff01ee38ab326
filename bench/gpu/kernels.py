"""GPU time per training step by kernel family, dshost beside PyTorch, from two Chrome traces:
dshost's train.profile_steps output and torch.profiler's export_chrome_trace of the peer.

    python3 bench/gpu/kernels.py TITLE DSHOST_TRACE PYTORCH_TRACE

Prints markdown: per step, each family's kernel milliseconds on both sides, the GPU's busy
time against the step's range on the GPU (what is left is the GPU waiting for the host), and
the kernels that differ most. Kernels count when they start inside a ProfilerStep range on
the GPU, as torch.profiler and dshost both mark them.
"""
import collections
import json
import re
import sys

# First match wins: the order puts specific names before generic ones.
FAMILIES = [
    ("fp8 casts (dshost)", r"amax_kernel|cast_kernel<"),
    ("attention", r"flash|fmha|attention|efficient_attention"),
    ("batch norm", r"batch_norm|bn_"),
    ("convolution (cuDNN)", r"conv|fprop|dgrad|wgrad|implicit|winograd|fft|depthwise|cudnn"),
    ("matmul", r"gemm|cutlass|xmma|nvjet|cublas|wgmma|sm90_|sm80_"),
    ("layer norm", r"layer_norm|LayerNorm"),
    ("softmax / cross entropy", r"softmax|nll_loss|cross_entropy"),
    ("optimizer", r"adam"),
    ("reductions (norms, sums)", r"reduce|norm"),
    ("copies and casts", r"copy|Memcpy|memcpy|cast"),
    ("fills", r"fill|Memset|memset|zero"),
    ("activations", r"gelu|relu|silu|sigmoid|hardtanh|threshold"),
    ("pooling", r"pool"),
    ("embedding / index", r"embedding|index|gather|scatter"),
    ("elementwise", r"elementwise|vectorized|unrolled|Functor"),
]
DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


def family(name):
    for label, pattern in FAMILIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


def read(path):
    """Kernels that start inside the GPU's ProfilerStep ranges, per step."""
    events = json.load(open(path))["traceEvents"]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events
               if e.get("cat") == "gpu_user_annotation" and e.get("name", "").startswith("ProfilerStep#")]
    kernels = [e for e in events if e.get("cat") in DEVICE_CATEGORIES and e.get("ph") == "X"
               and any(begin <= e["ts"] < end for begin, end in windows)]
    if not windows or not kernels:
        sys.exit(f"{path}: no ProfilerStep ranges on the GPU, or no kernels in them")
    steps = len(windows)
    by_family, by_name = collections.Counter(), collections.Counter()
    family_of = {}
    for e in kernels:
        by_family[family(e["name"])] += e["dur"] / steps / 1e3
        by_name[e["name"][:90]] += e["dur"] / steps / 1e3
        family_of[e["name"][:90]] = family(e["name"])
    span = sum(end - begin for begin, end in windows) / steps / 1e3
    phases = collections.Counter()  # ranges a strategy marks on the host (zero::...)
    for e in events:
        if e.get("cat") == "user_annotation" and "::" in e.get("name", ""):
            phases[e["name"]] += e["dur"] / steps / 1e3
    return {"steps": steps, "busy": sum(by_family.values()), "span": span, "families": by_family,
            "names": by_name, "family_of": family_of, "phases": phases}


def main():
    title, ours, theirs = sys.argv[1], read(sys.argv[2]), read(sys.argv[3])
    print(f"### {title}: GPU milliseconds per step ({ours['steps']} dshost and {theirs['steps']} PyTorch steps traced)\n")
    print("| kernel family | dshost | PyTorch | difference |")
    print("|---|---|---|---|")
    labels = sorted(set(ours["families"]) | set(theirs["families"]),
                    key=lambda f: -(ours["families"][f] + theirs["families"][f]))
    for f in labels:
        a, b = ours["families"][f], theirs["families"][f]
        print(f"| {f} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
    print(f"| **kernels, all** | **{ours['busy']:.2f}** | **{theirs['busy']:.2f}** | {ours['busy'] - theirs['busy']:+.2f} |")
    print(f"| the step's range on the GPU | {ours['span']:.2f} | {theirs['span']:.2f} | "
          f"{ours['span'] - theirs['span']:+.2f} |")
    print(f"| GPU idle in that span | {ours['span'] - ours['busy']:.2f} | {theirs['span'] - theirs['busy']:.2f} | |")
    if ours["phases"]:
        print("\ndshost's host-side phases, ms per step: " +
              ", ".join(f"{name} {ms:.1f}" for name, ms in ours["phases"].most_common()))
    print("\nKernels whose time differs most (ms per step, dshost - PyTorch):\n")
    names = set(ours["names"]) | set(theirs["names"])
    for n in sorted(names, key=lambda n: -abs(ours["names"][n] - theirs["names"][n]))[:12]:
        print(f"- {ours['names'][n] - theirs['names'][n]:+.3f} ({ours['names'][n]:.3f} / {theirs['names'][n]:.3f}) `{n}`")
    for f in labels:
        if abs(ours["families"][f] - theirs["families"][f]) >= 0.3:
            print(f"\nThe largest kernels of {f}, ms per step:")
            for side, label in ((ours, "dshost"), (theirs, "PyTorch")):
                top = sorted((n for n in side["names"] if side["family_of"][n] == f),
                             key=lambda n: -side["names"][n])[:6]
                print(f"\n{label}:\n" + "\n".join(f"- {side['names'][n]:.3f} `{n}`" for n in top))
    print()


if __name__ == "__main__":
    main()
