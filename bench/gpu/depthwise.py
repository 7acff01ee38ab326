"""Which cuDNN kernels run efficientnet_b0's depthwise convolutions (bf16, channels-last,
batch 32, forward and backward), and how long they take, as the weight's address alignment
and strides vary: a weight inside a flat parameter buffer, as dshost's strategies lay them
out, need not start on a 16-byte boundary. Offsets of 8 and 4 bytes are timed; at 2 bytes
cuDNN faults with a misaligned address (torch 2.11, H200), which ends the process.

    python3 bench/gpu/depthwise.py > depthwise.md
"""
import torch
from torch.profiler import ProfilerActivity, profile

# (channels, input size, kernel, stride): efficientnet_b0's depthwise convolutions at 224.
SHAPES = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 5, 2), (240, 28, 5, 1),
          (480, 14, 5, 1), (672, 14, 5, 2), (1152, 7, 5, 1), (1152, 7, 3, 1)]


def weight(channels, k, offset, channels_last):
    """A [channels, 1, k, k] bf16 weight `offset` elements into a fresh buffer."""
    flat = torch.randn(offset + channels * k * k, device="cuda", dtype=torch.bfloat16)
    strides = (k * k, 1, k, 1) if channels_last else (k * k, k * k, k, 1)
    return flat.as_strided((channels, 1, k, k), strides, offset).requires_grad_()


def step(x, w, stride, k):
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2, groups=w.shape[0])
    y.backward(torch.ones_like(y))


def main():
    torch.backends.cudnn.benchmark = True
    print("| channels, size, k, stride | weight | ms fwd+bwd | kernels (ms) |")
    print("|---|---|---:|---|")
    for c, size, k, stride in SHAPES:
        x = torch.randn(32, c, size, size, device="cuda", dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        for offset, channels_last in ((0, True), (0, False), (4, True), (2, True)):
            w = weight(c, k, offset, channels_last)
            for _ in range(3):
                step(x, w, stride, k)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    step(x, w, stride, k)
                torch.cuda.synchronize()
            kernels = {}
            for e in prof.events():
                if e.device_type == torch.autograd.DeviceType.CUDA and "fill" not in e.name \
                        and "elementwise" not in e.name:
                    kernels[e.name[:60]] = kernels.get(e.name[:60], 0) + e.device_time / 5e3
            total = sum(kernels.values())
            names = ", ".join(f"`{n}` {t:.3f}" for n, t in sorted(kernels.items(), key=lambda kv: -kv[1])[:3])
            layout = f"{2 * offset}-byte offset, {'channels-last' if channels_last else 'contiguous'} strides"
            print(f"| {c}, {size}, {k}, {stride} | {layout} | {total:.3f} | {names} |")


if __name__ == "__main__":
    main()
