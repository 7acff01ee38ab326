"""The host's memory bandwidth as one process sees it, by LibTorch's own threaded kernels:
what bounds the CPU side of zero3-offload (its fused AdamW moves 30 bytes per element).
GB/s = bytes read and written / best of three; 1 GiB fp32 tensors. Run: python3 host_bandwidth.py"""
import subprocess
import time

import torch

print(subprocess.run("lscpu | grep -E 'Model name|Socket|Core|Thread|NUMA|L3'; nproc", shell=True,
                     capture_output=True, text=True).stdout)
n = 1 << 28
a, b, c = torch.randn(n), torch.randn(n), torch.randn(n)
kernels = [("copy", lambda: b.copy_(a), 8), ("add_", lambda: b.add_(a), 12),
           ("addcmul_", lambda: c.addcmul_(a, b, value=0.1), 16)]
print("| threads | " + " | ".join(f"{name} GB/s" for name, _, _ in kernels) + " |")
print("|---" * (len(kernels) + 1) + "|")
for threads in [1, 2, 4, 8, 16]:
    torch.set_num_threads(threads)
    rates = []
    for _, run, bytes_per_element in kernels:
        run()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        rates.append(f"{bytes_per_element * n / best / 1e9:.1f}")
    print(f"| {threads} | " + " | ".join(rates) + " |", flush=True)
