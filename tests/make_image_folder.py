#!/usr/bin/python3
"""An image folder made from real images, for the image_folder dataset's tests: Fashion-MNIST
(Debian's dataset-fashion-mnist) written by Pillow as OUT/train/CLASS/*.png|jpg and
OUT/val/CLASS/..., each image enlarged to 40 x 36 (not square, so crops matter), grey PNGs
and RGB JPEGs alternately, plus a file that is not an image (train/CLASS0/broken.jpg).

    tests/make_image_folder.py OUT TRAIN_PER_CLASS VAL_PER_CLASS
"""
import gzip
import os
import sys

import numpy
from PIL import Image

FASHION = "/usr/share/datasets/fashion-mnist"
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def read(prefix):
    with gzip.open(f"{FASHION}/{prefix}-images-idx3-ubyte.gz") as f:
        images = numpy.frombuffer(f.read()[16:], dtype=numpy.uint8).reshape(-1, 28, 28)
    with gzip.open(f"{FASHION}/{prefix}-labels-idx1-ubyte.gz") as f:
        labels = numpy.frombuffer(f.read()[8:], dtype=numpy.uint8)
    return images, labels


def write(out, part, images, labels, per_class):
    counts = [0] * 10
    for image, label in zip(images, labels):
        if counts[label] == per_class:
            continue
        counts[label] += 1
        folder = f"{out}/{part}/{CLASSES[label]}"
        os.makedirs(folder, exist_ok=True)
        picture = Image.fromarray(image).resize((40, 36), Image.BILINEAR)
        n = counts[label]
        if n % 2:
            picture.save(f"{folder}/{n:05d}.png")
        else:
            picture.convert("RGB").save(f"{folder}/{n:05d}.jpg", quality=95)
        if min(counts) == per_class:
            break


def main(out, train_per_class, val_per_class):
    write(out, "train", *read("train"), int(train_per_class))
    write(out, "val", *read("t10k"), int(val_per_class))
    with open(f"{out}/train/{CLASSES[0]}/broken.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a JPEG")


if __name__ == "__main__":
    main(*sys.argv[1:])
