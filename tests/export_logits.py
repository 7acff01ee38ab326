#!/usr/bin/python3
"""Loads a file written by `dshost export` into torchvision's mobilenet_v2 and writes its
eval-mode logits for an input batch, for the test that they are the logits dshost computes.
The safetensors layout is read here directly (8-byte header length, JSON header, bytes), so
the test needs only Debian's python3-torch and python3-torchvision.

    tests/export_logits.py WEIGHTS.safetensors NUM_CLASSES INPUT.f32 N,C,H,W OUT.f32
"""
import json
import struct
import sys

import torch
import torchvision

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64}


def read_safetensors(path):
    data = open(path, "rb").read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    body = data[8 + length:]
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=DTYPES[entry["dtype"]])
        tensors[name] = t.reshape(entry["shape"])
    return tensors


def main(weights, classes, input_path, shape, out):
    model = torchvision.models.mobilenet_v2(num_classes=int(classes)).eval()
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_safetensors(weights).items()}
    model.load_state_dict(state, strict=True)  # every name and shape must match
    batch = torch.from_numpy(__import__("numpy").fromfile(input_path, dtype="float32"))
    with torch.no_grad():
        logits = model(batch.reshape([int(d) for d in shape.split(",")]))
    logits.numpy().tofile(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
