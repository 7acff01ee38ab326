#!/usr/bin/python3
"""The CNN-LSTM of plugins/models/cnn_lstm written in PyTorch, for the test that dshost's
computes the same logits: reads dshost's parameters (raw float32, in the order the model
registers them, which this module shares), an input batch, and writes eval-mode logits.

    tests/cnn_lstm_reference.py PARAMS.f32 INPUT.f32 N,C,S,S WIDTH HIDDEN LAYERS CLASSES OUT.f32
"""
import sys

import numpy
import torch
from torch import nn


class CnnLstm(nn.Module):
    def __init__(self, channels, size, width, hidden, layers, classes):
        super().__init__()
        stages = []
        for c_in, c_out in ((channels, width), (width, 2 * width)):
            stages += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(), nn.MaxPool2d(2, 2)]
        self.features = nn.Sequential(*stages)
        rows = size // 2 // 2
        self.lstm = nn.LSTM(2 * width * rows, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        f = self.features(x)  # [B, C, H, W] -> rows [B, H, C * W]
        rows = f.permute(0, 2, 1, 3).reshape(f.shape[0], f.shape[2], -1)
        return self.head(self.lstm(rows)[0][:, -1])


def main(params, input_path, shape, width, hidden, layers, classes, out):
    n, c, s, _ = (int(d) for d in shape.split(","))
    model = CnnLstm(c, s, int(width), int(hidden), int(layers), int(classes)).eval()
    flat = torch.from_numpy(numpy.fromfile(params, dtype="float32"))
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].reshape(p.shape))
            offset += p.numel()
        assert offset == flat.numel(), f"{flat.numel()} values for {offset} parameters"
        batch = torch.from_numpy(numpy.fromfile(input_path, dtype="float32")).reshape(n, c, s, s)
        model(batch).numpy().tofile(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
