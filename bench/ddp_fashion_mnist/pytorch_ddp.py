"""The peer of dshost's quickstart: the same basic CNN, data, batch, optimizer, schedule and
clipping, trained with PyTorch DistributedDataParallel over gloo. One process per rank,
started with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment (Debian's
torchrun fails under Python 3.11). Rank 0 prints one JSON line with the epoch times and the
test accuracy. Data is normalised once into tensors, PyTorch's fastest input path."""
import argparse, gzip, json, math, os, time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

MEAN, STD = 0.2860, 0.3530


def idx(path):
    data = gzip.open(path).read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * d:8 + 4 * d], "big") for d in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def split(root, prefix):
    images = torch.from_numpy(idx(f"{root}/{prefix}-images-idx3-ubyte.gz").copy())
    labels = torch.from_numpy(idx(f"{root}/{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    return TensorDataset((images.float().div(255).sub(MEAN).div(STD)).unsqueeze(1), labels)


def basic_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.0),
        nn.Linear(128, 10))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, os.cpu_count() // world))
    torch.manual_seed(args.seed)

    train, test = split(args.data, "train"), split(args.data, "t10k")
    sampler = DistributedSampler(train, world, rank, shuffle=True, seed=args.seed, drop_last=False)
    loader = DataLoader(train, batch_size=args.batch, sampler=sampler, drop_last=True)
    model = nn.parallel.DistributedDataParallel(basic_cnn())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total = args.epochs * len(loader)

    def lr_at(step):
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
        return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    loss_fn = nn.CrossEntropyLoss()
    epoch_times = []
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            sched.step()
        epoch_times.append(time.perf_counter() - start)

    model.eval()
    correct = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        x, y = test.tensors[0][rank::world], test.tensors[1][rank::world]
        for i in range(0, len(y), 256):
            out = model(x[i:i + 256])
            correct += torch.tensor([(out.argmax(1) == y[i:i + 256]).sum().item(), len(y[i:i + 256])],
                                    dtype=torch.float64)
    dist.all_reduce(correct)
    if rank == 0:
        print(json.dumps({"epoch_times_s": epoch_times, "test_accuracy": (correct[0] / correct[1]).item(),
                          "torch": torch.__version__}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
