"""Vision Transformer encoder (Dosovitskiy et al., 2021) as timm builds it, NHWC.

  tokens = [cls; conv_p×p/p(x)] + [cls_pos; pos_embed]        (1 + gh·gw tokens)
  block:   x = x + Attn(LN1(x));  x = x + MLP(LN2(x))   (pre-norm, GELU, no layer scale)
  Attn:    q, k, v = split(qkv(x)) per head;  softmax(q·kᵀ/√d_h)·v → proj
  out:     LN(x) without the class token, as a (B, gh, gw, D) grid

The positional embedding of the patches is stored as a (1, gh, gw, D) grid
(the class token's as `cls_pos`), so its size is explicit: a grid of another
size is resized bilinearly (`align_corners=False`, as Segmenter's
`resize_pos_embed`) on import and, for other image sizes, in the forward pass.
LayerNorm ε is 1e-6 (timm's ViT); `TransformerBlock` takes other ε for
Segmenter's decoder (PyTorch's default 1e-5).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.convnext_v2 import DropPath
from jaxseg.models.sfpnext import resize_bilinear

Array = jax.Array
Dtype = Any

# name -> (patch, dim, depth, heads) of timm's vit_* models.
VIT_VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "tiny_patch16": (16, 192, 12, 3),
    "small_patch16": (16, 384, 12, 6),
    "base_patch16": (16, 768, 12, 12),
    "large_patch16": (16, 1024, 24, 16),
    "debug": (8, 32, 2, 2),  # tests and runlocal
    "test": (8, 16, 2, 2),  # the weight-import fixtures' size
}

dense_init = nn.initializers.truncated_normal(stddev=0.02)


class Attention(nn.Module):
  heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, n, d = x.shape
    qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=dense_init, name="qkv")(x)
    q, k, v = jnp.moveaxis(qkv.reshape(b, n, 3, self.heads, d // self.heads), 2, 0)
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
    attn = jax.nn.softmax(logits * (d // self.heads) ** -0.5, axis=-1).astype(self.dtype)
    y = jnp.einsum("bhqk,bkhc->bqhc", attn, v).reshape(b, n, d)
    return nn.Dense(d, dtype=self.dtype, kernel_init=dense_init, name="proj")(y)


class TransformerBlock(nn.Module):
  """Pre-norm transformer block with timm's names (norm1, attn, norm2, mlp)."""
  heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    d = x.shape[-1]
    ln = lambda name: nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name=name)
    y = Attention(self.heads, dtype=self.dtype, name="attn")(ln("norm1")(x))
    x = x + DropPath(self.drop_path, name="drop_path1")(y, deterministic=not train)
    y = nn.Dense(int(d * self.mlp_ratio), dtype=self.dtype, kernel_init=dense_init,
                 name="fc1")(ln("norm2")(x))
    y = nn.Dense(d, dtype=self.dtype, kernel_init=dense_init,
                 name="fc2")(nn.gelu(y, approximate=False))
    return x + DropPath(self.drop_path, name="drop_path2")(y, deterministic=not train)


def resize_grid(grid, height: int, width: int):
  """(1, h, w, D) positional grid → (1, height, width, D), bilinear."""
  if grid.shape[1:3] == (height, width):
    return grid
  return resize_bilinear(jnp.asarray(grid, jnp.float32), height, width)


class ViT(nn.Module):
  """ViT encoder; returns every block's output grid, the last after the final
  LayerNorm: a tuple of `depth` (B, H/p, W/p, D) arrays."""
  patch: int
  dim: int
  depth: int
  heads: int
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, ...]:
    b, h, w = x.shape[:3]
    p = self.patch
    if h % p or w % p:
      raise ValueError(f"image size {h}x{w} not divisible by the patch size {p}")
    gh, gw = h // p, w // p
    x = nn.Conv(self.dim, (p, p), (p, p), padding="VALID", dtype=self.dtype,
                name="patch_embed")(x.astype(self.dtype))
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.dim))
    cls_pos = self.param("cls_pos", dense_init, (1, 1, self.dim))
    grid = self.param("pos_embed", dense_init, (1, gh, gw, self.dim))
    x = (x + resize_grid(grid, gh, gw).astype(self.dtype)).reshape(b, gh * gw, self.dim)
    cls = jnp.broadcast_to((cls + cls_pos).astype(self.dtype), (b, 1, self.dim))
    x = jnp.concatenate([cls, x], axis=1)
    rates = np.linspace(0.0, self.drop_path_rate, self.depth).tolist()
    outputs = []
    for i in range(self.depth):
      x = TransformerBlock(self.heads, drop_path=rates[i], dtype=self.dtype,
                           name=f"block{i}")(x, train=train)
      outputs.append(x)
    outputs[-1] = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    return tuple(o[:, 1:].reshape(b, gh, gw, self.dim) for o in outputs)


def build_vit(variant: str, **kwargs) -> ViT:
  patch, dim, depth, heads = VIT_VARIANTS[variant]
  return ViT(patch=patch, dim=dim, depth=depth, heads=heads, **kwargs)
