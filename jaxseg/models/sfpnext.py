"""SFPNeXt: Semantic FPN with a non-local block on a ConvNeXt-V2 backbone.

  backbone -> (C2, C3, C4, C5) at strides (4, 8, 16, 32)
  FPN:      L_s = lateral_s(C_s)               (1x1 conv to fpn_dim)
            L_5 = NonLocal(L_5)                (optional, coarsest level)
            L_s = L_s + up2(L_{s+1})           (top-down, coarse to fine)
            P_s = fpn_s(L_s)                   (3x3 conv)
  head:     S = sum_s [conv3x3 -> GN -> ReLU (-> up2)]^max(1, s-2) (P_s)
            logits = resize(classifier(dropout(S)), H x W)

GroupNorm is the only normalisation (no batch statistics), so a model has
one `params` collection and a pure `apply`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any


def num_groups(channels: int, max_groups: int = 32) -> int:
  """The largest group count <= `max_groups` that divides `channels`."""
  for groups in range(min(max_groups, channels), 0, -1):
    if channels % groups == 0:
      return groups
  return 1


def resize_bilinear(x: Array, height: int, width: int) -> Array:
  """Bilinear resize of (B, h, w, C) to (B, height, width, C).

  Half-pixel centres (`align_corners=False`); no antialiasing when shrinking.
  """
  return jax.image.resize(
      x, (x.shape[0], height, width, x.shape[-1]), method="bilinear",
      antialias=False)


def upsample2x(x: Array) -> Array:
  """Bilinear 2x upsampling of (B, h, w, C)."""
  return resize_bilinear(x, 2 * x.shape[1], 2 * x.shape[2])


def classifier_init(std: float):
  """The classifier's kernel initialiser: normal with `std` — 0.01 is
  mmsegmentation's `conv_seg` (BaseDecodeHead's init_cfg; bias 0), whose logits
  start near 0, so a fresh classifier, on pretrained features too, is a
  near-uniform policy — or, for `std` <= 0, Flax's LeCun normal (logits of std
  ~2 on IDD-Lite-trained features: a random policy with max probability ~0.73,
  issue 36)."""
  return nn.initializers.normal(stddev=std) if std > 0 else nn.initializers.lecun_normal()


def classify(x: Array, num_classes: int, size: tuple[int, int], *, dropout: float,
             train: bool, dtype: Dtype, init_std: float = 0.01) -> Array:
  """dropout → 1×1 `classifier` conv (`classifier_init(init_std)`) → float32
  logits bilinearly resized to `size`; called inside a model's compact
  `__call__`, so the conv is that model's `classifier`."""
  if dropout > 0:
    x = nn.Dropout(dropout)(x, deterministic=not train)
  logits = nn.Conv(num_classes, (1, 1), dtype=dtype, kernel_init=classifier_init(init_std),
                   name="classifier")(x)
  return resize_bilinear(logits.astype(jnp.float32), *size)


class Affine(nn.Module):
  """Per-channel `x · scale + bias`: a BatchNorm in inference form, i.e. its
  statistics folded in (`scale = γ/√(σ² + ε)`, `bias = β − μ·scale`), trainable
  as frozen BatchNorm with a learnt affine. The same parameter names as
  GroupNorm's."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    return x * scale.astype(self.dtype) + bias.astype(self.dtype)


NORMS = ("group", "affine")


class ConvNormAct(nn.Module):
  """conv (k×k, stride, dilation, PyTorch's symmetric padding d·(k−1)/2) →
  norm → ReLU (optional). `norm` "group": GroupNorm (groups of `group_size`
  channels when set, else up to 32 groups); "affine": `Affine`, for backbones
  whose pretrained BatchNorm was folded in on import."""
  features: int
  kernel: int = 3
  stride: int = 1
  dilation: int = 1
  act: bool = True
  group_size: int = 0
  norm: str = "group"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    pad = self.dilation * (self.kernel - 1) // 2
    x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                padding=((pad, pad), (pad, pad)), kernel_dilation=self.dilation,
                use_bias=False, dtype=self.dtype, name="conv")(x)
    if self.norm == "affine":
      x = Affine(dtype=self.dtype, name="norm")(x)
    else:
      groups = (max(1, self.features // self.group_size) if self.group_size
                else num_groups(self.features))
      x = nn.GroupNorm(num_groups=groups, dtype=self.dtype, name="norm")(x)
    return nn.relu(x) if self.act else x


class NonLocalBlock(nn.Module):
  """Embedded-Gaussian non-local block (Wang et al., 2018), residual.

    theta, phi, g = 1x1 convs of x to `inner_dim`       (N = H * W positions)
    A   = softmax_j(theta_i . phi_j)                      (N x N)
    out = x + GN(W_z(A @ g))

  `W_z` maps back to the input channels; its GroupNorm scale starts at zero, so
  the block starts as the identity (as the paper's zero-init BN).
  """
  inner_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    batch, height, width, channels = x.shape
    conv = lambda f, name: nn.Conv(f, (1, 1), dtype=self.dtype, name=name)
    theta = conv(self.inner_dim, "theta")(x).reshape(batch, -1, self.inner_dim)
    phi = conv(self.inner_dim, "phi")(x).reshape(batch, -1, self.inner_dim)
    g = conv(self.inner_dim, "g")(x).reshape(batch, -1, self.inner_dim)
    logits = jnp.einsum("bic,bjc->bij", theta, phi,
                        preferred_element_type=jnp.float32)
    attention = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    y = jnp.einsum("bij,bjc->bic", attention, g)
    y = y.reshape(batch, height, width, self.inner_dim)
    y = nn.Conv(channels, (1, 1), use_bias=False, dtype=self.dtype,
                name="out")(y)
    y = nn.GroupNorm(num_groups=num_groups(channels), dtype=self.dtype,
                     scale_init=nn.initializers.zeros, name="out_norm")(y)
    return x + y


class FPN(nn.Module):
  """Feature pyramid: lateral 1x1 convs, top-down nearest 2x upsample-add,
  3x3 output convs. The coarsest lateral goes through a `NonLocalBlock`
  when `attention`."""
  fpn_dim: int = 256
  attention: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: tuple[Array, ...]) -> tuple[Array, ...]:
    laterals = [
        nn.Conv(self.fpn_dim, (1, 1), dtype=self.dtype, name=f"lateral{i}")(f)
        for i, f in enumerate(features)
    ]
    if self.attention:
      laterals[-1] = NonLocalBlock(self.fpn_dim // 2, dtype=self.dtype,
                                   name="non_local")(laterals[-1])
    for i in range(len(laterals) - 2, -1, -1):
      coarse = laterals[i + 1]
      height, width = laterals[i].shape[1:3]
      up = jax.image.resize(
          coarse, (coarse.shape[0], height, width, coarse.shape[-1]),
          method="nearest")
      laterals[i] = laterals[i] + up
    return tuple(
        nn.Conv(self.fpn_dim, (3, 3), padding="SAME", dtype=self.dtype,
                name=f"output{i}")(lat) for i, lat in enumerate(laterals))


class SemanticHead(nn.Module):
  """Merges FPN levels at the finest stride: level `i` (stride 4 * 2^i) goes
  through `max(1, i)` x [conv3x3 -> GN -> ReLU] with a 2x bilinear upsample
  after each of the `i` first; the results are summed."""
  head_dim: int = 128
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pyramid: tuple[Array, ...]) -> Array:
    merged = None
    for level, x in enumerate(pyramid):
      for step in range(max(1, level)):
        x = ConvNormAct(self.head_dim, dtype=self.dtype,
                       name=f"level{level}_conv{step}")(x)
        if level > 0:
          x = upsample2x(x)
      merged = x if merged is None else merged + x
    return merged


class SFPNeXt(nn.Module):
  """Semantic FPN + non-local block on a backbone with 4 stride-4..32 stages.

  Attributes:
    num_classes: logits channels.
    backbone: module mapping `(images, train=...)` to 4 NHWC stage outputs at
      strides (4, 8, 16, 32).
    fpn_dim: FPN channels.
    head_dim: semantic head channels.
    attention: non-local block on the coarsest FPN level.
    dropout: rate before the classifier (0 disables it); 'dropout' rng.
    dtype: compute dtype; parameters stay float32, logits are float32.
  """
  num_classes: int
  backbone: nn.Module
  fpn_dim: int = 256
  head_dim: int = 128
  attention: bool = True
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  init_std: float = 0.01  # the classifier's (`classifier_init`)

  @nn.compact
  def __call__(self, images: Array, *, train: bool, features_only: bool = False) -> Array:
    """Logits (B, H, W, num_classes); with `features_only`, the merged head
    features (B, H/4, W/4, head_dim) the classifier reads (CiSS-Net's X)."""
    height, width = images.shape[1:3]
    if height % 32 or width % 32:
      raise ValueError(f"image size {height}x{width} not divisible by 32")
    features = self.backbone(images, train=train)
    pyramid = FPN(self.fpn_dim, attention=self.attention, dtype=self.dtype,
                  name="fpn")(tuple(features))
    x = SemanticHead(self.head_dim, dtype=self.dtype, name="head")(pyramid)
    if features_only:
      return x.astype(jnp.float32)
    return classify(x, self.num_classes, (height, width), dropout=self.dropout,
                    train=train, dtype=self.dtype, init_std=self.init_std)


class LinearHead(nn.Module):
  """1x1 conv `classifier` on the stride-32 stage, bilinear to input size."""
  num_classes: int
  backbone: nn.Module
  dtype: Dtype = jnp.float32
  init_std: float = 0.01  # the classifier's (`classifier_init`)

  @nn.compact
  def __call__(self, images: Array, *, train: bool, features_only: bool = False) -> Array:
    height, width = images.shape[1:3]
    features = self.backbone(images, train=train)
    if features_only:
      return features[-1].astype(jnp.float32)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                     kernel_init=classifier_init(self.init_std), name="classifier")(features[-1])
    return resize_bilinear(logits.astype(jnp.float32), height, width)
