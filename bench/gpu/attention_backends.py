"""Causal attention's forward and backward at gpt's shapes under each of PyTorch's SDPA
backends, beside the one scaled_dot_product_attention picks by itself (what dshost's
causal_attention and the peers call): whether naming a backend would pay.

    python3 bench/gpu/attention_backends.py

Prints markdown: per shape ([batch, heads, 1024, head dim] bf16 views of one projection, as
gpt2-124m, gpt2-350m and gpt-1.3b at b8 run it), the backend PyTorch picks, each backend's
milliseconds for forward + backward (median of 5 windows of 20 calls after a warm-up) and the
best one's ratio to the default's.
"""
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {"gpt2-124m b8": (8, 12, 1024, 64), "gpt2-350m b8": (8, 16, 1024, 64),
          "gpt-1.3b b8": (8, 16, 1024, 128)}
BACKENDS = {"default": None, "flash": SDPBackend.FLASH_ATTENTION,
            "cuDNN": SDPBackend.CUDNN_ATTENTION, "memory-efficient": SDPBackend.EFFICIENT_ATTENTION}


def step(q, k, v, grad):
    q.grad = k.grad = v.grad = None
    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)


def milliseconds(backend, q, k, v, grad, windows=5, calls=20):
    def timed():
        for _ in range(3):
            step(q, k, v, grad)
        rates = []
        for _ in range(windows):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(calls):
                step(q, k, v, grad)
            end.record()
            end.synchronize()
            rates.append(begin.elapsed_time(end) / calls)
        return statistics.median(rates)

    if backend is None:
        return timed()
    with sdpa_kernel([backend]):
        return timed()


def picked(q, k, v):
    """The backend scaled_dot_product_attention picks by itself for these inputs."""
    try:
        choice = torch._fused_sdp_choice(q, k, v, is_causal=True)
        return next(b.name for b in SDPBackend.__members__.values() if int(b) == choice)
    except (AttributeError, RuntimeError, StopIteration, TypeError):
        return "?"


def main():
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| shape | default's pick | " + " | ".join(f"{name} ms" for name in BACKENDS) +
          " | best / default |")
    print("|---|---|" + "---:|" * (len(BACKENDS) + 1))
    for label, shape in SHAPES.items():
        torch.manual_seed(0)
        b, h, t, d = shape  # as gpt's q, k, v: views of one [b, t, 3, h, d] projection
        qkv = torch.randn(b, t, 3, h, d, device="cuda", dtype=torch.bfloat16)
        q, k, v = (x.transpose(1, 2).detach().requires_grad_() for x in qkv.unbind(2))
        grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        times = {}
        for name, backend in BACKENDS.items():  # each backend's first calls untimed
            try:
                milliseconds(backend, q, k, v, grad, windows=1)
            except RuntimeError:
                pass
        for name, backend in BACKENDS.items():
            try:
                times[name] = milliseconds(backend, q, k, v, grad)
            except RuntimeError as e:  # a backend that does not take the shape
                times[name] = None
                print(f"<!-- {label} {name}: {str(e).splitlines()[0]} -->")
        shown = " | ".join(f"{t:.3f}" if t else "-" for t in times.values())
        best = min(t for t in times.values() if t)
        print(f"| {label} | {picked(q, k, v)} | {shown} | {best / times['default']:.3f} |")


if __name__ == "__main__":
    main()
