"""Segmenter (Strudel et al., 2021): ViT encoder + mask-transformer decoder.

  z      = proj_dec(ViT(x))                       patch tokens, (B, N, d_model)
  [z; c] = blocks([z; cls_emb])                   2 pre-norm layers over patches and
                                                  n_cls learnt class embeddings
  z, c   = LN([z; c]);  ẑ = z·W_p / ‖z·W_p‖,  ĉ = c·W_c / ‖c·W_c‖
  masks  = LN_cls(ẑ · ĉᵀ)                         (B, N, n_cls) → (B, H/p, W/p, n_cls)
  logits = bilinear(masks, H × W)

As the authors' `MaskTransformer` (d_model = the encoder's width, heads =
d_model / 64, MLP 4 × d_model, LayerNorm ε 1e-5). The class-dependent
parameters (`classifier_cls_emb`, `classifier_mask_norm`) match
`CLASSIFIER_PATTERN`, for the last-layer learning-rate factor and cold starts.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.sfpnext import resize_bilinear
from jaxseg.models.vit import TransformerBlock, dense_init

Array = jax.Array
Dtype = Any


def _l2_normalize(x: Array) -> Array:
  return x / jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True).astype(x.dtype)


class MaskTransformer(nn.Module):
  num_classes: int
  layers: int = 2
  drop_path_rate: float = 0.0
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, grid: Array, *, train: bool, features_only: bool = False) -> Array:
    b, gh, gw, d_enc = grid.shape
    d = d_enc
    z = nn.Dense(d, dtype=self.dtype, kernel_init=dense_init, name="proj_dec")(
        grid.reshape(b, gh * gw, d_enc))
    cls = self.param("classifier_cls_emb", dense_init, (1, self.num_classes, d))
    x = jnp.concatenate([z, jnp.broadcast_to(cls.astype(self.dtype), (b, self.num_classes, d))], 1)
    rates = np.linspace(0.0, self.drop_path_rate, self.layers).tolist()
    for i in range(self.layers):
      x = TransformerBlock(max(1, d // 64), drop_path=rates[i], eps=1e-5, dtype=self.dtype,
                           name=f"block{i}")(x, train=train)
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="decoder_norm")(x)
    patches, classes = x[:, :-self.num_classes], x[:, -self.num_classes:]
    if features_only:
      return patches.reshape(b, gh, gw, d).astype(jnp.float32)
    if self.dropout > 0:
      patches = nn.Dropout(self.dropout)(patches, deterministic=not train)
    init = nn.initializers.normal(d ** -0.5)
    w_p = self.param("proj_patch", init, (d, d)).astype(self.dtype)
    w_c = self.param("proj_classes", init, (d, d)).astype(self.dtype)
    masks = jnp.einsum("bnd,bkd->bnk", _l2_normalize(patches @ w_p), _l2_normalize(classes @ w_c))
    masks = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="classifier_mask_norm")(masks)
    return masks.reshape(b, gh, gw, self.num_classes)


class Segmenter(nn.Module):
  """ViT backbone + `MaskTransformer`; `features_only` returns the decoder's
  patch features (B, H/p, W/p, D)."""
  num_classes: int
  backbone: nn.Module  # ViT
  layers: int = 2
  drop_path_rate: float = 0.0
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array, *, train: bool, features_only: bool = False) -> Array:
    height, width = images.shape[1:3]
    grid = self.backbone(images, train=train)[-1]
    out = MaskTransformer(self.num_classes, self.layers, self.drop_path_rate, self.dropout,
                          dtype=self.dtype, name="decoder")(
                              grid, train=train, features_only=features_only)
    if features_only:
      return out
    return resize_bilinear(out.astype(jnp.float32), height, width)
