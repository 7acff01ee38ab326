#!/usr/bin/python3
"""Writes a freshly initialised (seeded) torchvision model's state_dict, the pretrained weights
model.init_from reads, for the tests of fine-tuning: as torch.save writes it (OUT.pth), or as
a safetensors file whose layout is written here directly (8-byte header length, JSON header,
bytes), so the test needs only Debian's python3-torch and python3-torchvision.

    tests/torchvision_weights.py MODEL NUM_CLASSES OUT.pth|OUT.legacy.pth|OUT.safetensors [PREFIX]

With PREFIX, also PREFIX.input.f32 (a seeded batch of two 224 x 224 RGB images) and
PREFIX.logits.f32 (the model's eval-mode logits for it), raw little-endian float32.
"""
import json
import struct
import sys

import torch
from torchvision import models

DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def write_safetensors(tensors, path):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        blob = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main(name, classes, out, prefix=None):
    torch.manual_seed(3)
    model = getattr(models, name)(weights=None, num_classes=int(classes))
    if prefix:
        batch = torch.randn(2, 3, 224, 224)
        batch.numpy().tofile(f"{prefix}.input.f32")
        with torch.no_grad():
            model.eval()(batch).numpy().tofile(f"{prefix}.logits.f32")
    if out.endswith(".pth"):  # OUT.legacy.pth: torch.save's format before PyTorch 1.6
        torch.save(model.state_dict(), out,
                   _use_new_zipfile_serialization=not out.endswith(".legacy.pth"))
    else:
        write_safetensors({k: v.detach() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
