"""ConvNeXt-V2 backbone (Woo et al., 2023), as in the official code and timm.

Layout is NHWC throughout. Parameter names follow the official PyTorch code
(`dwconv`, `norm`, `pwconv1`, `grn`, `pwconv2`) so that pretrained weights map
one to one:

  stem:        conv 4x4 / 4 -> LayerNorm
  stage s > 0: LayerNorm -> conv 2x2 / 2            (downsample)
  block:       x + DropPath(pwconv2(GRN(GELU(pwconv1(LN(dwconv7x7(x)))))))

The backbone returns the four stage outputs at strides 4, 8, 16 and 32.

The 7x7 depthwise convolution has two interchangeable implementations with the
same `(7, 7, 1, C)` kernel as `nn.Conv(feature_group_count=C)`:

* `"lax"`: `lax.conv_general_dilated(feature_group_count=C)`.
* `"shift"`: a sum of 49 shifted multiply-adds, with a custom VJP whose
  input gradient is the same sum with the flipped kernel and whose kernel
  gradient is one variadic reduction of the 49 tap products.

On XLA:CPU (JAX 0.10, 2 cores) the grouped convolution is the slow path:
convnextv2_nano + 1x1 head, AdamW train step, 96x128 batch 8: 1164 ms "lax"
vs ~400 ms "shift" (forward alone 523 vs 92 ms); 512x512 batch 2: 5152 vs
~2080 ms (bench/train_step.py; with the row-scan kernel gradient this module
had before, ~300 and ~1500 ms now). `"auto"` therefore uses `"shift"` on CPU and `"lax"` on
accelerators, where the grouped convolution is a native kernel.

The stem and downsample convolutions (kernel = stride) are `PatchConv`: on
CPU a space-to-depth reshape and one matmul (the whole nano step at 512x512
batch 2 1.11-1.14x as fast as with XLA:CPU's convolution, whose kernel
gradients took 82 ms of it); on accelerators `lax.conv_general_dilated`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
Dtype = Any

# name -> (depths, dims) of the official convnextv2_* models.
CONVNEXT_V2_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    # Not a paper model: one block per stage, for `runlocal` configs and tests
    # (compiles in a few seconds on a laptop CPU).
    "debug": ((1, 1, 1, 1), (16, 32, 64, 128)),
    # The weight-import fixtures' size (tests/fixtures/weights/).
    "test": ((1, 1, 2, 1), (8, 16, 32, 64)),
}

DEPTHWISE_IMPLS = ("auto", "shift", "lax")
PATCH_IMPLS = ("auto", "dot", "conv")

LN_EPS = 1e-6

# Official init: trunc_normal(std=0.02) for conv and linear kernels, zero bias.
kernel_init = nn.initializers.truncated_normal(stddev=0.02)


# --------------------------------------------------------------------------
# Depthwise convolution.
# --------------------------------------------------------------------------


def depthwise_conv_lax(x: Array, kernel: Array) -> Array:
  """Depthwise 'SAME' convolution via a grouped convolution.

  Args:
    x: (B, H, W, C).
    kernel: (kh, kw, 1, C), odd kh and kw.

  Returns:
    (B, H, W, C).
  """
  kh, kw = kernel.shape[:2]
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1),
      padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


def _shifted_sum(x: Array, kernel: Array) -> Array:
  """`y[b,h,w,c] = sum_{i,j} xpad[b, h+i, w+j, c] * k[i, j, 0, c]`.

  Accumulates in float32 at least, and returns the dtype of `x`.
  """
  kh, kw = kernel.shape[:2]
  height, width = x.shape[1:3]
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  xp = xp.astype(acc_dtype)
  kernel = kernel.astype(acc_dtype)
  out = jnp.zeros(x.shape, acc_dtype)
  for i in range(kh):
    for j in range(kw):
      out = out + xp[:, i:i + height, j:j + width, :] * kernel[i, j, 0]
  return out.astype(x.dtype)


def _shifted_kernel_grad(x: Array, g: Array, kernel_shape) -> Array:
  """`dk[i, j, 0, c] = sum_{b,h,w} xpad[b, h+i, w+j, c] * g[b, h, w, c]`.

  One variadic `lax.reduce` with kh*kw operands (the tap products, fused into
  it) sums over batch and width, keeping (H, C) per tap; a second, small sum
  over H finishes. XLA:CPU runs the first as one loop that reads `g` once and
  the padded input from cache, instead of kh*kw separate reductions. Against
  the former `lax.scan` over output rows (49 reductions per row, ~100 ops per
  row: per-op overhead dominated), ConvNeXt-V2-nano's stage shapes took
  17 vs 25 ms (2, 128, 128, 80) and 3.9 vs 13 ms (8, 24, 32, 80) on 2 CPU
  cores, and the whole 96x128 batch 8 train step 1.24x less time (512²
  batch 2: 1.14x). Keeping H until the end keeps float32 rounding at the
  scan's level (relative error ~3e-7 against float64 at (2, 128, 128, 80);
  one reduce over (B, H, W) had 6.5e-6).
  """
  kh, kw = kernel_shape[:2]
  height, width = x.shape[1:3]
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  xp, g = xp.astype(acc_dtype), g.astype(acc_dtype)
  taps = tuple(xp[:, i:i + height, j:j + width, :] * g
               for i in range(kh) for j in range(kw))
  zero = jnp.zeros((), acc_dtype)
  per_row = lax.reduce(taps, (zero,) * len(taps),
                       lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 2))
  return jnp.sum(jnp.stack(per_row), axis=1).reshape(kh, kw, 1, -1)


@jax.custom_vjp
def depthwise_conv_shift(x: Array, kernel: Array) -> Array:
  """Depthwise 'SAME' convolution as 49 shifted multiply-adds.

  Numerically equal (to float rounding) to `depthwise_conv_lax`. The VJP is
  written by hand: `dx` is the same shifted sum of the cotangent with the
  kernel flipped in both spatial axes, `dk` is one multiply-reduction per tap.

  Args:
    x: (B, H, W, C).
    kernel: (kh, kw, 1, C), odd kh and kw.

  Returns:
    (B, H, W, C), the dtype of `x`.
  """
  return _shifted_sum(x, kernel)


def _depthwise_shift_fwd(x, kernel):
  return _shifted_sum(x, kernel), (x, kernel)


def _depthwise_shift_bwd(residuals, g):
  x, kernel = residuals
  dx = _shifted_sum(g, kernel[::-1, ::-1]).astype(x.dtype)
  dk = _shifted_kernel_grad(x, g, kernel.shape).astype(kernel.dtype)
  return dx, dk


depthwise_conv_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)


def resolve_impl(impl: str, choices: tuple[str, str, str], what: str) -> str:
  """`impl` checked against `choices` = ("auto", the CPU form, the
  accelerator form); "auto" becomes the one for `jax.default_backend()`.
  `what` names the option in the error."""
  if impl not in choices:
    raise ValueError(f"{what} impl {impl!r} not in {choices}")
  if impl == "auto":
    return choices[1] if jax.default_backend() == "cpu" else choices[2]
  return impl


class DepthwiseConv(nn.Module):
  """Depthwise `kernel_size` x `kernel_size` convolution, stride 1, SAME.

  Same parameters as `nn.Conv(features=C, kernel_size=(k, k),
  feature_group_count=C)`: `kernel` (k, k, 1, C) and `bias` (C,), so
  checkpoints do not depend on `impl`.
  """
  kernel_size: int = 7
  impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    k = self.kernel_size
    kernel = self.param("kernel", kernel_init, (k, k, 1, channels), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    if resolve_impl(self.impl, DEPTHWISE_IMPLS, "depthwise") == "shift":
      y = depthwise_conv_shift(x, kernel)
    else:
      y = depthwise_conv_lax(x, kernel)
    return y + bias.astype(self.dtype)


def patch_conv(x: Array, kernel: Array, impl: str = "auto") -> Array:
  """A 'VALID' convolution whose stride equals its kernel size p (non-overlapping
  p x p patches), without bias:

      y[b, h, w, o] = sum_{i, j, c} x[b, p*h + i, p*w + j, c] * kernel[i, j, c, o]

  for x (B, H, W, C) and kernel (p, p, C, O). `impl` "dot": the patches as a
  (B, H/p, W/p, p*p*C) space-to-depth reshape times the kernel as a
  (p*p*C, O) matrix; "conv": `lax.conv_general_dilated`; "auto": "dot" on
  CPU, "conv" elsewhere. Rows and columns past the last full patch are
  dropped, as by the convolution.
  """
  p = kernel.shape[0]
  if kernel.shape[1] != p:
    raise ValueError(f"patch_conv needs a square kernel, got {kernel.shape}")
  if resolve_impl(impl, PATCH_IMPLS, "patch_conv") == "conv":
    return lax.conv_general_dilated(x, kernel, (p, p), "VALID",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
  b, h, w, c = x.shape
  h, w = h // p, w // p
  x = x[:, :h * p, :w * p]
  x = x.reshape(b, h, p, w, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, p * p * c)
  return x @ kernel.reshape(p * p * c, -1)


class PatchConv(nn.Module):
  """`nn.Conv(features, (p, p), strides=(p, p), padding="VALID")` with the
  same parameters (`kernel` (p, p, C, O), `bias` (O,)), computed by
  `patch_conv`."""
  features: int
  patch: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p = self.patch
    kernel = self.param("kernel", kernel_init, (p, p, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = patch_conv(x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


# --------------------------------------------------------------------------
# Block components.
# --------------------------------------------------------------------------


def gelu(x: Array) -> Array:
  """Exact GELU in PyTorch's `nn.GELU()` form, `0.5 x (1 + erf(x / sqrt 2))`.

  `jax.nn.gelu(approximate=False)` computes `0.5 x erfc(-x / sqrt 2)`, whose
  XLA lowering evaluates both of erfc's branches (an exp and two divides) for
  every element; erf is one rational polynomial. Same values to 1e-6
  (absolute, float32); 1.6-2.5x faster alone on 2 CPU cores and the whole
  ConvNeXt-V2-nano train step 2-4 % faster (bench/train_step.py shapes).
  """
  return 0.5 * x * (1.0 + lax.erf(x * (1.0 / math.sqrt(2.0))))


class GRN(nn.Module):
  """Global Response Normalization (ConvNeXt-V2, Eq. 1-3), channels-last.

    G(x)_c = ||x_{:,:,c}||_2                      (L2 norm over H, W)
    N(x)_c = G(x)_c / (mean_c' G(x)_c' + eps)
    out    = gamma * (x * N(x)) + beta + x

  `gamma` and `beta` start at zero, so the block starts as the identity.
  Statistics are computed in float32.
  """
  eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    gamma = self.param("gamma", nn.initializers.zeros, (channels,), jnp.float32)
    beta = self.param("beta", nn.initializers.zeros, (channels,), jnp.float32)
    x32 = x.astype(jnp.float32)
    gx = jnp.sqrt(jnp.sum(jnp.square(x32), axis=(1, 2), keepdims=True))
    nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + self.eps)
    out = gamma * (x32 * nx) + beta + x32
    return out.astype(self.dtype)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per sample.

    out = x * m / (1 - rate),   m ~ Bernoulli(1 - rate), one per sample.

  Identity when `deterministic` or `rate == 0`. Uses the 'dropout' rng.
  """
  rate: float

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class ConvNeXtV2Block(nn.Module):
  """`x + DropPath(pwconv2(GRN(GELU(pwconv1(LN(dwconv(x)))))))`.

  `pwconv1` expands to 4 * dim, `pwconv2` projects back. GELU is the exact
  (erf) form, as in PyTorch's `nn.GELU()` (`gelu`). No layer scale.
  """
  dim: int
  drop_path: float = 0.0
  depthwise_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    shortcut = x
    y = DepthwiseConv(7, impl=self.depthwise_impl, dtype=self.dtype,
                      name="dwconv")(x)
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm")(y)
    y = nn.Dense(4 * self.dim, dtype=self.dtype, kernel_init=kernel_init,
                 name="pwconv1")(y)
    y = gelu(y)
    y = GRN(dtype=self.dtype, name="grn")(y)
    y = nn.Dense(self.dim, dtype=self.dtype, kernel_init=kernel_init,
                 name="pwconv2")(y)
    y = DropPath(self.drop_path, name="drop_path")(y, deterministic=not train)
    return shortcut + y


# --------------------------------------------------------------------------
# Backbone.
# --------------------------------------------------------------------------


class ConvNeXtV2(nn.Module):
  """ConvNeXt-V2 feature extractor.

  Attributes:
    depths: blocks per stage.
    dims: channels per stage.
    drop_path_rate: stochastic depth of the last block; block `k` of `n` uses
      `drop_path_rate * k / (n - 1)` (linear from 0).
    depthwise_impl: "auto" | "shift" | "lax" (see module docstring).
    dtype: compute dtype; parameters stay float32.

  Returns from `__call__(x, train=...)` the stage outputs at strides
  (4, 8, 16, 32) with `dims` channels, NHWC, in `dtype`.
  """
  depths: Sequence[int] = (2, 2, 8, 2)
  dims: Sequence[int] = (80, 160, 320, 640)
  drop_path_rate: float = 0.0
  depthwise_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> tuple[Array, ...]:
    if len(self.depths) != len(self.dims):
      raise ValueError(f"depths {self.depths} and dims {self.dims} differ in "
                       "length")
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    x = x.astype(self.dtype)
    x = PatchConv(self.dims[0], 4, dtype=self.dtype, name="stem_conv")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="stem_norm")(x)
    outputs = []
    block_index = 0
    for stage, (depth, dim) in enumerate(zip(self.depths, self.dims)):
      if stage > 0:
        x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype,
                         name=f"downsample{stage}_norm")(x)
        x = PatchConv(dim, 2, dtype=self.dtype, name=f"downsample{stage}_conv")(x)
      for block in range(depth):
        x = ConvNeXtV2Block(
            dim, drop_path=rates[block_index],
            depthwise_impl=self.depthwise_impl, dtype=self.dtype,
            name=f"stage{stage}_block{block}")(x, train=train)
        block_index += 1
      outputs.append(x)
    return tuple(outputs)


def build_convnext_v2(variant: str, **kwargs) -> ConvNeXtV2:
  """Builds `ConvNeXtV2` for a name in `CONVNEXT_V2_VARIANTS` ("nano", ...)."""
  if variant not in CONVNEXT_V2_VARIANTS:
    raise ValueError(f"unknown ConvNeXt-V2 variant {variant!r}; choose from "
                     f"{sorted(CONVNEXT_V2_VARIANTS)}")
  depths, dims = CONVNEXT_V2_VARIANTS[variant]
  return ConvNeXtV2(depths=depths, dims=dims, **kwargs)
