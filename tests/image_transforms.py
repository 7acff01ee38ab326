#!/usr/bin/python3
"""Fixtures for the test that dshost reads image files and crops them as torchvision does.

Writes into OUT a photo-sized picture (500 x 375, made of Fashion-MNIST images from Debian's
dataset-fashion-mnist, coloured and enlarged by Pillow) as an RGB JPEG at quality 90, as a
grey JPEG, as a CMYK JPEG and as PNG content behind a .JPEG name, and prints JSON: for each
file, Pillow's convert("RGB") pixels, then torchvision's pipeline for crop boxes and flips
(functional.resized_crop to SIZE x SIZE, bilinear, then hflip) and for evaluation
(Resize(SIZE * 256 / 224) and CenterCrop(SIZE)), each as the uint8 pixels ToTensor would
scale, in raw files named in the JSON.

    tests/image_transforms.py OUT SIZE      (Debian: python3-torchvision, python3-pil)
"""
import gzip
import json
import os
import sys

import numpy
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

FASHION = os.environ.get("DSHOST_TEST_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def picture():
    with gzip.open(f"{FASHION}/t10k-images-idx3-ubyte.gz") as f:
        images = numpy.frombuffer(f.read()[16:], dtype=numpy.uint8).reshape(-1, 28, 28)
    tiles = numpy.concatenate([numpy.concatenate(images[r * 5:(r + 1) * 5], axis=1) for r in range(4)], axis=0)
    rgb = numpy.stack([tiles, numpy.roll(tiles, 9, axis=1), 255 - tiles], axis=2)
    return Image.fromarray(rgb).resize((500, 375), Image.BICUBIC)


def save(array, out, name):
    path = f"{out}/{name}.u8"
    numpy.ascontiguousarray(array, dtype=numpy.uint8).tofile(path)
    return path


def main(out, size):
    size = int(size)
    base = picture()
    files = {
        "rgb.jpg": lambda p: base.save(p, quality=90),
        "grey.jpg": lambda p: base.convert("L").save(p, quality=90),
        "cmyk.jpg": lambda p: base.convert("CMYK").save(p, quality=90),
        "png_inside.JPEG": lambda p: base.save(p, format="PNG"),
    }
    boxes = [(0, 0, 375, 500), (40, 60, 300, 250), (100, 150, 120, 90), (10, 300, 365, 200), (200, 0, 150, 400)]
    cases = []
    for name, write in files.items():
        path = f"{out}/{name}"
        write(path)
        image = Image.open(path).convert("RGB")
        case = {"file": path, "height": image.height, "width": image.width,
                "rgb": save(numpy.asarray(image), out, name + ".rgb"), "crops": []}
        for i, (top, left, h, w) in enumerate(boxes):
            for flip in (False, True):
                crop = F.resized_crop(image, top, left, h, w, [size, size], T.InterpolationMode.BILINEAR)
                if flip:
                    crop = F.hflip(crop)
                planar = numpy.asarray(crop).transpose(2, 0, 1)
                case["crops"].append({"box": [top, left, h, w], "flip": flip,
                                      "pixels": save(planar, out, f"{name}.crop{i}{int(flip)}")})
        evaluation = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size)])(image)
        case["eval"] = save(numpy.asarray(evaluation).transpose(2, 0, 1), out, name + ".eval")
        cases.append(case)
    print(json.dumps(cases))


if __name__ == "__main__":
    main(*sys.argv[1:])
