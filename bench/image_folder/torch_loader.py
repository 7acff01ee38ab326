"""PyTorch's way to train on an image folder, as the issue's peer: torchvision's ImageFolder
with RandomResizedCrop(224), RandomHorizontalFlip, ToTensor and Normalize, in a DataLoader of
`workers` processes with pinned memory and persistent workers. Run as a program, it times
the DataLoader alone and prints one JSON line (images/s over BATCHES batches of 64, after
one warm-up batch):

    python3 bench/image_folder/torch_loader.py FOLDER WORKERS BATCHES
"""
import itertools
import json
import os
import sys
import time

import torch
import torchvision.transforms as T
from torchvision.datasets import ImageFolder


def imagenet_loader(root, batch, workers):
    transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return torch.utils.data.DataLoader(ImageFolder(f"{root}/train", transform), batch_size=batch, shuffle=True,
                                       drop_last=True, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                       persistent_workers=workers > 0)


def batches_forever(loader):
    return itertools.chain.from_iterable(itertools.repeat(loader))


def main(root, workers, count):
    batches = batches_forever(imagenet_loader(root, 64, int(workers)))
    next(batches)
    start = time.perf_counter()
    for _ in range(int(count)):
        next(batches)
    seconds = time.perf_counter() - start
    print(json.dumps({"side": "pytorch", "images_per_second": 64 * int(count) / seconds,
                      "workers": int(workers), "cores": os.cpu_count()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
