#!/usr/bin/python3
"""Writes a small GPT-2's state_dict under Hugging Face's GPT2Model names and layout (its Conv1D
weights [in, out]), seeded random values, the pretrained weights model.init_from reads for the
gpt plugin; and the logits Hugging Face's GPT-2 computes with them, by its arithmetic written
out here (Debian ships no transformers), for the test that dshost's gpt gives the same.

    tests/gpt2_weights.py LAYERS HEADS WIDTH VOCAB BLOCK OUT.pth PREFIX

PREFIX.tokens.f32: two seeded sequences of BLOCK token ids; PREFIX.logits.f32: their logits,
[2, BLOCK, VOCAB]; both raw little-endian float32.
"""
import math
import sys

import torch
import torch.nn.functional as F


def weights(layers, width, vocab, block):
    def w(*shape):
        return torch.randn(*shape) * 0.2

    d = {"wte.weight": w(vocab, width), "wpe.weight": w(block, width)}
    for i in range(layers):
        p = f"h.{i}."
        for norm in ("ln_1", "ln_2"):
            d[p + norm + ".weight"] = 1 + w(width) / 2
            d[p + norm + ".bias"] = w(width) / 2
        for name, n_in, n_out in (("attn.c_attn", width, 3 * width),
                                  ("attn.c_proj", width, width),
                                  ("mlp.c_fc", width, 4 * width),
                                  ("mlp.c_proj", 4 * width, width)):
            d[p + name + ".weight"] = w(n_in, n_out)  # Conv1D: x @ weight + bias
            d[p + name + ".bias"] = w(n_out) / 2
    d["ln_f.weight"] = 1 + w(width) / 2
    d["ln_f.bias"] = w(width) / 2
    return d


def logits(d, layers, heads, tokens):
    def conv1d(x, name):
        return x @ d[name + ".weight"] + d[name + ".bias"]

    def norm(x, name):
        return F.layer_norm(x, x.shape[-1:], d[name + ".weight"], d[name + ".bias"], 1e-5)

    b, t = tokens.shape
    x = d["wte.weight"][tokens] + d["wpe.weight"][torch.arange(t)]
    c = x.shape[-1]
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(layers):
        p = f"h.{i}."
        q, k, v = conv1d(norm(x, p + "ln_1"), p + "attn.c_attn").split(c, dim=-1)
        q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(c // heads)
        attention = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + conv1d(attention.transpose(1, 2).reshape(b, t, c), p + "attn.c_proj")
        h = F.gelu(conv1d(norm(x, p + "ln_2"), p + "mlp.c_fc"), approximate="tanh")
        x = x + conv1d(h, p + "mlp.c_proj")
    return norm(x, "ln_f") @ d["wte.weight"].t()


def main(layers, heads, width, vocab, block, out, prefix):
    layers, heads, width, vocab, block = map(int, (layers, heads, width, vocab, block))
    torch.manual_seed(5)
    d = weights(layers, width, vocab, block)
    tokens = torch.randint(0, vocab, (2, block))
    tokens.float().numpy().tofile(f"{prefix}.tokens.f32")
    with torch.no_grad():
        logits(d, layers, heads, tokens).numpy().tofile(f"{prefix}.logits.f32")
    torch.save(d, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
