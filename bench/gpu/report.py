"""Markdown table of bench/gpu/run.sh rows: per configuration, dshost eager, dshost with
train.cuda_graph, the PyTorch peer, and the best dshost / peer ratio of samples/s; then,
for configurations run on N GPUs ("... xN") and on one ("... x1"), the scaling efficiency
of each side: samples/s on N over N times samples/s on one.

    python3 bench/gpu/report.py ROWS.jsonl...   (a later file's row replaces an earlier one)
"""
import json
import re
import sys

PEAK_BF16_TFLOPS = 989.4  # dense bf16, H100 and H200 (SXM) alike


def gpus(kind):
    """The GPUs a configuration ran on: N for "... xN", else 1."""
    m = re.search(r" x(\d+)$", kind)
    return int(m.group(1)) if m else 1


def best_rate(sides):
    return max((r.get("samples_per_second") or 0 for s, r in sides.items() if s != "pytorch"), default=0)


def scaling(by_kind):
    rows = []
    for kind, sides in by_kind.items():
        n = gpus(kind)
        one = by_kind.get(re.sub(r" x\d+$", " x1", kind), {})
        if n == 1 or not one:
            continue
        ours = best_rate(sides) / (n * best_rate(one)) if best_rate(one) else None
        peer = (sides.get("pytorch", {}).get("samples_per_second") or 0) / n
        peer_one = one.get("pytorch", {}).get("samples_per_second")
        cell = lambda e: f"{100 * e:.1f}%" if e else "-"
        rows.append(f"| {kind} | {cell(ours)} | {cell(peer / peer_one if peer_one else None)} |")
    if rows:
        print("\n| configuration | dshost scaling efficiency | PyTorch scaling efficiency |\n|---|---|---|")
        print("\n".join(rows))


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
        mem = " / ".join(f"{sides[s]['peak_device_bytes'] / 2**30:.1f}" if "peak_device_bytes" in sides.get(s, {})
                         else "-" for s in ("dshost" if "dshost" in sides else "graph", "pytorch"))
        flops = next((r.get("forward_flops_per_sample") for r in sides.values() if r.get("forward_flops_per_sample")), None)
        mfu = "-"
        if kind.startswith("gpt") and flops and best and peer:
            peak = PEAK_BF16_TFLOPS * gpus(kind) / 100
            mfu = f"{3 * flops * best / 1e12 / peak:.1f}% / {3 * flops * peer / 1e12 / peak:.1f}%"
        cell = lambda s: f"{rate[s]:.1f}" if rate.get(s) else "-"
        print(f"| {kind} | {cell('dshost')} | {cell('graph')} | {cell('pytorch')} | {ratio} | {mem} | {mfu} |")
    scaling(by_kind)


if __name__ == "__main__":
    main()
