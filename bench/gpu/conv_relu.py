"""vgg16's convolutions at batch B (bf16, channels-last, cuDNN autotuned): conv2d with its
bias, then relu_ (PyTorch eager's path) against cuDNN's fused conv + bias + relu
(torch.cudnn_convolution_relu), forward alone, and forward with backward (the fused one's
backward: threshold_backward, then convolution_backward). Milliseconds per batch, summed
over the 13 layers (and each layer's: eager forward, fused forward, eager both, fused both).  Usage: python3 bench/gpu/conv_relu.py [B ...]"""
import sys

import torch

torch.backends.cudnn.benchmark = True
LAYERS = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56),
          (256, 256, 56), (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28),
          (512, 512, 14), (512, 512, 14), (512, 512, 14)]


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def layer(batch, cin, cout, size):
    cl = torch.channels_last
    x = torch.randn(batch, cin, size, size, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
    w = (torch.randn(cout, cin, 3, 3, device="cuda", dtype=torch.bfloat16) * 0.05).to(memory_format=cl)
    b = torch.randn(cout, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(batch, cout, size, size, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)

    def eager():
        return torch.nn.functional.conv2d(x, w, b, 1, 1).relu_()

    def fused():
        return torch.cudnn_convolution_relu(x, w, b, (1, 1), (1, 1), (1, 1), 1)

    def eager_both():
        xs, ws, bs = (t.detach().requires_grad_() for t in (x, w, b))
        torch.nn.functional.conv2d(xs, ws, bs, 1, 1).relu_().backward(g)

    def fused_both():
        y = fused()
        gy = torch.ops.aten.threshold_backward(g, y, 0)
        torch.ops.aten.convolution_backward(gy, x, w, [cout], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                            [cin != 3, True, True])

    err = (eager().float() - fused().float()).abs().max().item()
    return timed(eager), timed(fused), timed(eager_both), timed(fused_both), err


def padded_first_layer(batch, channels):
    """The first convolution, fused, with its 3 input channels zero-padded to `channels`."""
    cl = torch.channels_last
    x = torch.randn(batch, channels, 224, 224, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
    w = torch.randn(64, channels, 3, 3, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
    b = torch.randn(64, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(batch, 64, 224, 224, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)

    def both():
        y = torch.cudnn_convolution_relu(x, w, b, (1, 1), (1, 1), (1, 1), 1)
        gy = torch.ops.aten.threshold_backward(g, y, 0)
        torch.ops.aten.convolution_backward(gy, x, w, [64], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                            [False, True, True])
    return timed(both)


for batch in [int(a) for a in sys.argv[1:]] or [8, 32]:
    sums = [0.0] * 4
    worst = 0.0
    for cin, cout, size in LAYERS:
        *times, err = layer(batch, cin, cout, size)
        print(f"  b{batch} {cin:>3} -> {cout:>3} at {size:>3}: " + ", ".join(f"{t:.3f}" for t in times))
        sums = [s + t for s, t in zip(sums, times)]
        worst = max(worst, err)
    print(f"  b{batch} first layer fused forward+backward, input channels padded to 4 / 8: "
          f"{padded_first_layer(batch, 4):.3f} / {padded_first_layer(batch, 8):.3f} ms")
    print(f"vgg16 convs b{batch}: forward eager {sums[0]:.2f} ms, fused {sums[1]:.2f} ms; "
          f"forward+backward eager {sums[2]:.2f} ms, fused {sums[3]:.2f} ms; largest difference {worst:.3g}")
