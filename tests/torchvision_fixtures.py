#!/usr/bin/python3
"""Fixtures for the test that dshost's image models compute what torchvision's do.

For each model named (all when none is): torchvision's freshly initialised parameters (seeded),
in the order model.parameters() gives them, and its eval-mode logits for one random input
batch; raw little-endian float32 files, with NAME.json naming the versions and every shape.

    tests/torchvision_fixtures.py OUT_DIR [NAME ...]      (Debian: python3-torchvision)
"""
import json
import sys

import torch
import torchvision
from torchvision import models

CASES = {
    "mobilenet_v2": models.mobilenet_v2,
    "efficientnet_b0": models.efficientnet_b0,
    "resnet18": models.resnet18,
    "resnet50": models.resnet50,
    "vgg11": models.vgg11,
    "vgg11_bn": models.vgg11_bn,
    "vgg16": models.vgg16,
}


def main(out, names):
    torch.manual_seed(0)
    batch = torch.randn(2, 3, 224, 224)
    batch.numpy().tofile(f"{out}/input.f32")
    for name in names or CASES:
        torch.manual_seed(1)
        model = CASES[name](weights=None).eval()
        with torch.no_grad():
            logits = model(batch)
        params = [p.detach() for p in model.parameters()]
        torch.cat([p.reshape(-1) for p in params]).numpy().tofile(f"{out}/{name}.weights.f32")
        logits.numpy().tofile(f"{out}/{name}.logits.f32")
        index = {"torchvision": torchvision.__version__, "torch": torch.__version__,
                 "input": list(batch.shape), "shapes": [list(p.shape) for p in params],
                 "logits": list(logits.shape)}
        with open(f"{out}/{name}.json", "w") as f:
            json.dump(index, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
