"""Which cuDNN kernels run efficientnet_b0's depthwise and 1x1 projection convolutions (bf16,
channels-last, batch 32, forward and backward), and how long they take, as the weight's
address alignment and strides vary: a weight inside a flat parameter buffer, as dshost's
strategies laid them out before FlatLayout aligned them, need not start on a 16-byte
boundary. Offsets of 8 and 4 bytes are timed; at 2 bytes cuDNN's depthwise convolution
faults with a misaligned address (torch 2.11, H200), which ends the process.

    python3 bench/gpu/conv_alignment.py > conv_alignment.md
"""
import torch
from torch.profiler import ProfilerActivity, profile

# (in channels, out channels, input size, kernel, stride) at 224: efficientnet_b0's
# depthwise convolutions (in = out, one group a channel), then its 1x1 projections.
DEPTHWISE = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 5, 2), (240, 28, 5, 1),
             (480, 14, 5, 1), (672, 14, 5, 2), (1152, 7, 5, 1), (1152, 7, 3, 1)]
PROJECTIONS = [(96, 24, 56), (144, 24, 56), (144, 40, 28), (240, 40, 28), (240, 80, 14),
               (480, 80, 14), (480, 112, 14), (672, 112, 14), (672, 192, 7), (1152, 192, 7),
               (1152, 320, 7)]
SHAPES = [(c, c, size, k, stride) for c, size, k, stride in DEPTHWISE] + \
         [(cin, cout, size, 1, 1) for cin, cout, size in PROJECTIONS]


def weight(cin, cout, k, offset, channels_last):
    """A [cout, cin / groups, k, k] bf16 weight `offset` elements into a fresh buffer."""
    depthwise = cin == cout and k > 1
    shape = (cout, 1 if depthwise else cin, k, k)
    flat = torch.randn(offset + cout * shape[1] * k * k, device="cuda", dtype=torch.bfloat16)
    w = torch.empty(shape, device="cuda", dtype=torch.bfloat16,
                    memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return flat.as_strided(shape, w.stride(), offset).requires_grad_()


def step(x, w, stride, k):
    groups = x.shape[1] // w.shape[1]
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2, groups=groups)
    y.backward(torch.ones_like(y))


def main():
    torch.backends.cudnn.benchmark = True
    print("| in, out, size, k, stride | weight | ms fwd+bwd | kernels (ms) |")
    print("|---|---|---:|---|")
    for cin, cout, size, k, stride in SHAPES:
        x = torch.randn(32, cin, size, size, device="cuda", dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        for offset, channels_last in ((0, True), (0, False), (4, True), (2, True)):
            w = weight(cin, cout, k, offset, channels_last)
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
            print(f"| {cin}, {cout}, {size}, {k}, {stride} | {layout} | {total:.3f} | {names} |")


if __name__ == "__main__":
    main()
