"""The PyTorch peer of bench/gpu/run.sh: one training configuration in PyTorch eager (or
FSDP2 with CPU offload), as a PyTorch user runs it fast, measured the way the run measures
dshost, or with its forward and loss under torch.compile (--compile MODE, compiled during
the warm-up). Prints one JSON line: samples/s (the median over windows of 10 timed steps, as
dshost's figure is the median over its report windows), peak GPU memory (the caching
allocator's, as dshost reports it) and peak host memory. Under torchrun with --dist, the
same on every GPU of the host (DistributedDataParallel, or FSDP2 wrapping each block):
--batch per rank, samples/s of all ranks, rank 0's memory; rank 0 prints.

Same work as dshost's side: the same architecture (torchvision's, which dshost's image
models equal; nanoGPT's GPT-2, which dshost's gpt equals), bf16 autocast over fp32
parameters, channels-last convolutions, AdamW (fused kernel), cross entropy, gradient
clipping at 1.0, cuDNN autotuning, batches gathered and normalised on the GPU from a fixed
pool of random uint8 images (dshost's synthetic data) or random token windows. No host
synchronisation inside a timed window.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- gpt: nanoGPT's GPT-2 (pre-LayerNorm blocks, tanh GELU, tied head) ------------------
class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.attn_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        h = x + self.attn_proj(y)
        return h + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(h)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, layers, heads, width, vocab, block):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


PRESETS = {"gpt2-124m": (12, 12, 768), "gpt2-350m": (24, 16, 1024), "gpt-1.3b": (24, 16, 2048)}


def image_model(name, channels_last_weights):
    """A torchvision model, or "ensemble:a,b,..." (dshost's ensemble: the members' logits
    averaged). FSDP2 takes contiguous parameters only; its convolutions still run
    channels-last from channels-last inputs (cuDNN follows either operand's layout)."""
    if name.startswith("ensemble:"):
        return Ensemble([image_model(n, channels_last_weights) for n in name.split(":")[1].split(",")])
    import torchvision.models as tv
    model = getattr(tv, name)(num_classes=1000)
    return model.to(memory_format=torch.channels_last) if channels_last_weights else model


class Ensemble(nn.Module):
    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)


def fsdp_units(model):
    """The modules FSDP2 shards one by one: gpt's blocks, resnet's residual blocks, the
    other torchvision models' feature stages."""
    if isinstance(model, Ensemble):
        return [u for m in model.members for u in fsdp_units(m) + [m]]
    if hasattr(model, "blocks"):
        return list(model.blocks)
    if hasattr(model, "layer1"):
        return [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    return list(model.features)


def init_distributed():
    """torchrun's process group, or a world of one (FSDP2 offload alone); (rank, world)."""
    import torch.distributed as dist
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29613")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    return rank, world


def profile(step, first, path):
    """torch.profiler over 2 steps after 1 of warm-up, with allocations, as
    bench/gpu/kernels.py and memory.py read it."""
    from torch.profiler import ProfilerActivity, schedule
    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                                schedule=schedule(wait=0, warmup=1, active=2), profile_memory=True,
                                on_trace_ready=lambda p: p.export_chrome_trace(path)) as prof:
        for i in range(first, first + 3):
            step(i)
            prof.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)  # a torchvision name, ensemble:NAME,NAME,..., or gpt
    ap.add_argument("--preset", default="gpt2-124m")
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--fsdp-offload", action="store_true", help="FSDP2 + CPUOffloadPolicy, world 1")
    ap.add_argument("--dist", choices=["ddp", "fsdp", "fsdp-reshard"],
                    help="under torchrun: DDP, or FSDP2 with reshard_after_forward False / True")
    ap.add_argument("--profile", help="after timing, trace 2 more steps into this Chrome trace")
    ap.add_argument("--image-folder", help="batches from this folder's train/ through torchvision's ImageFolder "
                    "and a DataLoader (bench/image_folder/torch_loader.py) instead of the random pool")
    ap.add_argument("--compile", choices=["default", "reduce-overhead", "max-autotune"],
                    help="torch.compile the forward and loss in this mode; compilation falls in the warm-up")
    ap.add_argument("--compile-optimizer", action="store_true",
                    help="with --compile, also compile the gradient clipping and the optimizer step "
                    "(PyTorch's compiled-optimizer recipe: a foreach AdamW whose kernels Inductor fuses)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="the DataLoader's")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(dev)
    rank, world = init_distributed() if a.dist or a.fsdp_offload else (0, 1)
    gpt = a.model == "gpt"
    if gpt:
        layers, heads, width = PRESETS[a.preset]
        model = Gpt(layers, heads, width, a.vocab, 1024)
        tokens = torch.randint(0, a.vocab, (1 << 21,), device=dev)
    else:
        model = image_model(a.model, channels_last_weights=a.dist not in ("fsdp", "fsdp-reshard"))
        pool = torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8, device=dev)
        labels = torch.arange(1 << 20, device=dev) % 1000

    if a.fsdp_offload or a.dist in ("fsdp", "fsdp-reshard"):
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
        policy = dict(mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
        if a.fsdp_offload:
            policy["offload_policy"] = CPUOffloadPolicy()
        else:
            model = model.to(dev)
            policy["reshard_after_forward"] = a.dist == "fsdp-reshard"
        for unit in fsdp_units(model):
            fully_shard(unit, **policy)
        fully_shard(model, **policy)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        autocast_dtype = None
    elif a.dist == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model.to(dev), device_ids=[dev.index])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
        autocast_dtype = torch.bfloat16
    else:
        model = model.to(dev)
        fused = dict(foreach=True) if a.compile_optimizer else dict(fused=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, **fused)
        autocast_dtype = torch.bfloat16

    mean, std = 0.5, 0.29  # dshost's synthetic pool statistics
    if a.image_folder:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "image_folder"))
        from torch_loader import batches_forever, imagenet_loader
        folder_batches = batches_forever(imagenet_loader(a.image_folder, a.batch, a.workers))

    def batch(step):  # this rank's share of the step's samples
        if a.image_folder:
            x, y = next(folder_batches)
            return x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last), y.to(dev, non_blocking=True)
        first = (step * world + rank) * a.batch
        if gpt:
            starts = (torch.arange(first, first + a.batch, device=dev) * 1024) % (tokens.numel() - 1025)
            windows = tokens[starts[:, None] + torch.arange(1025, device=dev)]
            return windows[:, :-1], windows[:, 1:]
        idx = torch.arange(first, first + a.batch, device=dev)
        x = pool[idx % pool.shape[0]].float().div_(255).sub_(mean).div_(std)
        return x.contiguous(memory_format=torch.channels_last), labels[idx]

    def forward_loss(x, y):
        with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(x)
            return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    if a.compile:  # the loss inside the graph too, as nanoGPT's compiled forward has it
        forward_loss = torch.compile(forward_loss, mode=a.compile)
        if a.compile_optimizer:
            update = torch.compile(update, mode=a.compile)

    def step(i):
        x, y = batch(i)
        if a.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        loss = forward_loss(x, y)
        loss.backward()
        update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone()  # outlives a CUDA graph's next replay

    model.train()
    for i in range(a.warmup):
        step(i)
    window_rates = []  # samples/s of each window of 10 timed steps, as dshost's report windows
    for first in range(a.warmup, a.warmup + a.steps, 10):
        last = min(first + 10, a.warmup + a.steps)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(first, last):
            loss = step(i)
        torch.cuda.synchronize()
        window_rates.append(a.batch * world * (last - first) / (time.perf_counter() - start))
    if a.profile:
        profile(step, a.warmup + a.steps, a.profile)
    if rank > 0:
        return
    print(json.dumps({
        "samples_per_second": statistics.median(window_rates),
        "window_samples_per_second": window_rates,
        "peak_device_bytes": torch.cuda.max_memory_allocated(),
        "peak_host_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "final_loss": loss.item(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    main()
