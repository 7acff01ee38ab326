"""Issue 28's table from bench/gpu/run.sh's compile group: per configuration, samples/s
(sequences for gpt) of PyTorch eager, torch.compile (and, where run, torch.compile with its
optimizer step compiled too) and dshost (zero2; for gpt also ddp and zero2 in fp8), dshost's
ratios to the peers and of ddp to zero2, and gpt's tokens/s.

    python3 bench/gpu/compile_report.py ROWS.jsonl   (a later row replaces an earlier one)
"""
import json
import sys

SIDES = (("_zero2_dshost", "zero2"), ("_ddp_dshost", "ddp"), ("_fp8_dshost", "fp8"), ("_torch", "eager"),
         ("_compile", "compile"), ("_compile_step", "compile_step"))


def main():
    table = {}
    for line in open(sys.argv[1]):
        r = json.loads(line)
        for suffix, side in SIDES:
            if r["name"].endswith(suffix):
                table.setdefault(r["name"][: -len(suffix)], {})[side] = r
                break
    print("| configuration | PyTorch eager | torch.compile (mode) | torch.compile, optimizer too | dshost zero2 "
          "| dshost ddp | dshost fp8 | zero2 / compile | fp8 / compile | zero2 / compile, optimizer too "
          "| zero2 / eager | ddp / zero2 | zero2 tokens/s | fp8 tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for config, sides in table.items():
        rate = {side: r.get("samples_per_second") for side, r in sides.items()}
        cell = lambda side: f"{rate[side]:.1f}" if rate.get(side) else "-"
        ratio = lambda a, b: f"**{rate[a] / rate[b]:.2f}**" if rate.get(a) and rate.get(b) else "-"
        mode = sides.get("compile", {}).get("kind", "").split(" ")[-1]
        tokens = lambda side: f"{rate[side] * 1024:,.0f}" if config.startswith("gpt") and rate.get(side) else "-"
        print(f"| {config} | {cell('eager')} | {cell('compile')} ({mode}) | {cell('compile_step')} | {cell('zero2')} "
              f"| {cell('ddp')} | {cell('fp8')} | {ratio('zero2', 'compile')} | {ratio('fp8', 'compile')} "
              f"| {ratio('zero2', 'compile_step')} | {ratio('zero2', 'eager')} | {ratio('ddp', 'zero2')} "
              f"| {tokens('zero2')} | {tokens('fp8')} |")


if __name__ == "__main__":
    main()
