"""gpt's c_fc with GELU at its three widths: the product with its bias alone, the product then
ATen's GELU (what dshost's bf16 gpt runs), and the product with GELU in cuBLASLt's epilogue
(torch._addmm_activation, the heuristic's first kernel for GELU_BIAS): whether cuBLASLt's GELU
epilogue kernels cost more than the plain bias epilogue's plus a GELU pass, as run 24's
GELU_AUX_BIAS / DGELU_BGRAD MLP suggested (bench/results/compile.md).

    python3 bench/gpu/gelu_epilogue.py

Prints markdown: per shape (8192 rows, width C in, 4C out, bf16), each variant's milliseconds
(median of 5 windows of 20 calls after a warm-up) and the epilogue's ratio to the unfused pair.
"""
import statistics

import torch
import torch.nn.functional as F

WIDTHS = {"gpt2-124m b8": 768, "gpt2-350m b8": 1024, "gpt-1.3b b8": 2048}


def milliseconds(call, windows=5, calls=20):
    for _ in range(3):
        call()
    times = []
    for _ in range(windows):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / calls)
    return statistics.median(times)


def main():
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| shape | product + bias | product + bias, then GELU | GELU in the epilogue | epilogue / unfused |")
    print("|---|---:|---:|---:|---:|")
    for name, width in WIDTHS.items():
        options = {"device": "cuda", "dtype": torch.bfloat16}
        x = torch.randn(8192, width, **options)
        w = torch.randn(4 * width, width, **options) * 0.02
        b = torch.randn(4 * width, **options) * 0.1
        plain = milliseconds(lambda: torch.addmm(b, x, w.t()))
        unfused = milliseconds(lambda: F.gelu(torch.addmm(b, x, w.t()), approximate="tanh"))
        fused = milliseconds(lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True))
        print(f"| {name} | {plain:.3f} | {unfused:.3f} | {fused:.3f} | {fused / unfused:.3f} |")


if __name__ == "__main__":
    main()
