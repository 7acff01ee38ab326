#!/usr/bin/python3
"""Fixtures for the test that dshost's random-resized-crop boxes are torchvision's.

For image sizes from square to far beyond the allowed aspect ratios, and many seeds:
torchvision's RandomResizedCrop.get_params box, and the draws it made to get it (each
try's area fraction and aspect ratio, then the accepted crop's top and left), read by
making the same calls on the same seed. Prints a JSON list of
{"height", "width", "tries": [[fraction, ratio], ...], "offsets": [top, left] or [],
 "box": [top, left, height, width]}.
"""
import json
import math

import torch
import torchvision.transforms as T

SCALE, RATIO = [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0]


def draws(height, width, seed):
    """get_params's draws on `seed`: the same calls in the same order."""
    torch.manual_seed(seed)
    log_ratio = torch.log(torch.tensor(RATIO))
    tries = []
    for _ in range(10):
        fraction = torch.empty(1).uniform_(SCALE[0], SCALE[1]).item()
        ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        tries.append([fraction, ratio])
        target = height * width * fraction
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,)).item()
            left = torch.randint(0, width - w + 1, size=(1,)).item()
            return tries, [top, left]
    return tries, []


def main():
    cases = []
    for height, width in [(36, 40), (375, 500), (500, 375), (224, 224), (7, 9), (1, 1),
                          (40, 400), (400, 40), (3, 1000), (1000, 3)]:
        for seed in range(60):
            torch.manual_seed(seed)
            box = T.RandomResizedCrop.get_params(torch.empty(3, height, width), SCALE, RATIO)
            tries, offsets = draws(height, width, seed)
            cases.append({"height": height, "width": width, "tries": tries, "offsets": offsets,
                          "box": list(box)})
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
