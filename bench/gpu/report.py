"""Markdown table of bench/gpu/run.sh rows: per configuration, dshost eager, dshost with
train.cuda_graph, the PyTorch peer, and the best dshost / peer ratio of samples/s.

    python3 bench/gpu/report.py ROWS.jsonl...   (a later file's row replaces an earlier one)
"""
import json
import sys

PEAK_BF16_TFLOPS = 989.4  # dense bf16, H100 and H200 (SXM) alike


def main():
    by_kind = {}
    for path in sys.argv[1:]:
        for line in open(path):
            r = json.loads(line)
            side = "graph" if r["name"].endswith("_graph") else r["side"]
            by_kind.setdefault(r["kind"], {})[side] = r
    for kind, sides in by_kind.items():  # a variant ("..., delayed update") beside its base's peer
        base = by_kind.get(kind.split(", ")[0], {})
        if "pytorch" not in sides and "pytorch" in base:
            sides["pytorch"] = base["pytorch"]
    print("| configuration | dshost | dshost, cuda_graph | PyTorch | ratio | peak GPU GiB dshost / PyTorch | MFU dshost / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for kind, sides in by_kind.items():
        rate = {s: r.get("samples_per_second") for s, r in sides.items()}
        best = max((v for s, v in rate.items() if s != "pytorch" and v), default=None)
        peer = rate.get("pytorch")
        ratio = f"**{best / peer:.2f}**" if best and peer else "-"
        mem = " / ".join(f"{sides[s]['peak_device_bytes'] / 2**30:.1f}" if s in sides else "-"
                         for s in ("dshost" if "dshost" in sides else "graph", "pytorch"))
        flops = next((r.get("forward_flops_per_sample") for r in sides.values() if r.get("forward_flops_per_sample")), None)
        mfu = "-"
        if kind.startswith("gpt") and flops and best and peer:
            mfu = f"{300 * flops * best / 1e12 / PEAK_BF16_TFLOPS:.1f}% / {300 * flops * peer / 1e12 / PEAK_BF16_TFLOPS:.1f}%"
        cell = lambda s: f"{rate[s]:.1f}" if rate.get(s) else "-"
        print(f"| {kind} | {cell('dshost')} | {cell('graph')} | {cell('pytorch')} | {ratio} | {mem} | {mfu} |")


if __name__ == "__main__":
    main()
