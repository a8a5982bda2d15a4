"""timm / torchvision tensor names ↔ jaxseg backbone parameters, per family.

Each family's map is a list of `Rule`s built from the jaxseg backbone's own
parameter tree (so depths and stems are read off the model, not guessed): which
tensors of the file make which parameters, and the layout conversion both ways.

  conv     (O, I, kh, kw) ↔ (kh, kw, I, O)            (depthwise: (C, 1, k, k))
  linear   (O, I) or a 1×1 conv (O, I, 1, 1) ↔ (I, O)
  bn       γ, β, μ, σ² ↔ scale = γ/√(σ² + ε), bias = β − μ·scale    (ε = 1e-5;
           exported as γ = scale, β = bias, μ = 0, σ² = 1 − ε)
  pos      timm's (1, 1 + n², D) ↔ cls_pos (1, 1, D) and a (1, gh, gw, D) grid,
           resized bilinearly when n × n ≠ gh × gw

Names are timm 1.0's (`convnextv2_*`, `resnet*`, `vit_*`); torchvision's
ResNets use the same ones. The ImageNet classifier (`head.*`, `fc.*`) is
listed in `IGNORED` and never loaded.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np

from jaxseg.models.vit import resize_grid

BN_EPS = 1e-5

IGNORED = {"convnext_v2": ("head.",), "resnet": ("fc.",), "vit": ("head.", "fc_norm.")}
OPTIONAL_SUFFIXES = (".num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Rule:
  flax: tuple[str, ...]  # '/'-joined paths under the backbone
  torch: tuple[str, ...]  # tensor names in the file
  to_flax: Callable[..., tuple[np.ndarray, ...]]
  to_torch: Callable[..., tuple[np.ndarray, ...]]


def _conv(prefix_f: str, name_t: str, bias: bool = True) -> Rule:
  fl = (f"{prefix_f}/kernel",) + ((f"{prefix_f}/bias",) if bias else ())
  tt = (f"{name_t}.weight",) + ((f"{name_t}.bias",) if bias else ())
  return Rule(fl, tt,
              lambda w, *b: (np.transpose(w, (2, 3, 1, 0)),) + b,
              lambda k, *b: (np.transpose(k, (3, 2, 0, 1)),) + b)


def _linear(prefix_f: str, name_t: str, as_conv: bool = False) -> Rule:
  def to_torch(k, b):
    w = k.T
    return (w[:, :, None, None] if as_conv else w, b)
  return Rule((f"{prefix_f}/kernel", f"{prefix_f}/bias"),
              (f"{name_t}.weight", f"{name_t}.bias"),
              lambda w, b: (w.reshape(w.shape[0], w.shape[1]).T, b), to_torch)


def _vector(pairs: Mapping[str, str]) -> Rule:
  """Parameters copied as they are (flattened to the flax shape's length)."""
  fl, tt = tuple(pairs), tuple(pairs.values())
  return Rule(fl, tt, lambda *a: tuple(x.reshape(-1) for x in a), lambda *a: a)


def _norm(prefix_f: str, name_t: str) -> Rule:
  return _vector({f"{prefix_f}/scale": f"{name_t}.weight", f"{prefix_f}/bias": f"{name_t}.bias"})


def _bn(prefix_f: str, name_t: str) -> Rule:
  def to_flax(g, b, mean, var):
    scale = g.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
    return (scale.astype(np.float32), (b - mean * scale).astype(np.float32))

  def to_torch(scale, bias):
    return (scale, bias, np.zeros_like(scale), np.full_like(scale, 1.0 - BN_EPS))

  return Rule((f"{prefix_f}/scale", f"{prefix_f}/bias"),
              tuple(f"{name_t}.{s}" for s in ("weight", "bias", "running_mean", "running_var")),
              to_flax, to_torch)


def _modules(flat: Mapping[str, tuple], pattern: str) -> list[re.Match]:
  """Distinct top-level module names matching `pattern`, in numeric order."""
  rx = re.compile(pattern)
  names = sorted({p.split("/")[0] for p in flat if rx.fullmatch(p.split("/")[0])},
                 key=lambda n: [int(x) for x in re.findall(r"\d+", n)])
  return [rx.fullmatch(n) for n in names]


def convnext_v2_rules(flat: Mapping[str, tuple], conv_mlp: bool = True) -> list[Rule]:
  """timm `convnextv2_*`: stem.{0,1}, stages.S.downsample.{0,1},
  stages.S.blocks.B.{conv_dw, norm, mlp.fc1, mlp.grn, mlp.fc2}. `conv_mlp`:
  export fc1/fc2 as 1×1 convs (timm's atto … nano) rather than Linear (tiny …)."""
  rules = [_conv("stem_conv", "stem.0"), _norm("stem_norm", "stem.1")]
  for m in _modules(flat, r"downsample(\d+)_conv"):
    s = m.group(1)
    rules += [_norm(f"downsample{s}_norm", f"stages.{s}.downsample.0"),
              _conv(f"downsample{s}_conv", f"stages.{s}.downsample.1")]
  for m in _modules(flat, r"stage(\d+)_block(\d+)"):
    f, t = m.group(0), f"stages.{m.group(1)}.blocks.{m.group(2)}"
    rules += [_conv(f"{f}/dwconv", f"{t}.conv_dw"), _norm(f"{f}/norm", f"{t}.norm"),
              _linear(f"{f}/pwconv1", f"{t}.mlp.fc1", conv_mlp),
              _vector({f"{f}/grn/gamma": f"{t}.mlp.grn.weight",
                       f"{f}/grn/beta": f"{t}.mlp.grn.bias"}),
              _linear(f"{f}/pwconv2", f"{t}.mlp.fc2", conv_mlp)]
  return rules


def resnet_rules(flat: Mapping[str, tuple]) -> list[Rule]:
  """timm / torchvision `resnet*`: conv1 + bn1 (7×7 stem) or conv1.{0,1,3,4,6} +
  bn1 (deep stem), layerL.I.{conv1..3, bn1..3, downsample.{0,1}}. BatchNorm is
  folded into the `Affine` norms."""
  stems = [m.group(0) for m in _modules(flat, r"stem(\d+)")]
  if len(stems) == 1:
    rules = [_conv("stem0/conv", "conv1", bias=False), _bn("stem0/norm", "bn1")]
  else:
    rules = []
    for i, (conv, bn) in enumerate((("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"),
                                    ("conv1.6", "bn1"))):
      rules += [_conv(f"stem{i}/conv", conv, bias=False), _bn(f"stem{i}/norm", bn)]
  for m in _modules(flat, r"stage(\d+)_block(\d+)"):
    f, t = m.group(0), f"layer{int(m.group(1)) + 1}.{m.group(2)}"
    for k in (1, 2, 3):
      rules += [_conv(f"{f}/conv{k}/conv", f"{t}.conv{k}", bias=False),
                _bn(f"{f}/conv{k}/norm", f"{t}.bn{k}")]
    if f"{f}/shortcut/conv/kernel" in flat:
      rules += [_conv(f"{f}/shortcut/conv", f"{t}.downsample.0", bias=False),
                _bn(f"{f}/shortcut/norm", f"{t}.downsample.1")]
  return rules


def vit_rules(flat: Mapping[str, tuple]) -> list[Rule]:
  """timm `vit_*` (class token, learnt positions, no layer scale):
  patch_embed.proj, cls_token, pos_embed, blocks.I.{norm1, attn.qkv, attn.proj,
  norm2, mlp.fc1, mlp.fc2}, norm."""
  _, gh, gw, _ = flat["pos_embed"]

  def pos_to_flax(pos):
    n = int(round(np.sqrt(pos.shape[1] - 1)))
    if n * n != pos.shape[1] - 1:
      raise ValueError(f"pos_embed {pos.shape}: {pos.shape[1] - 1} patch positions "
                       "are not a square grid")
    grid = pos[:, 1:].reshape(1, n, n, pos.shape[-1])
    return pos[:, :1], np.asarray(resize_grid(grid, gh, gw), np.float32)

  rules = [_conv("patch_embed", "patch_embed.proj"),
           Rule(("cls_token",), ("cls_token",), lambda x: (x,), lambda x: (x,)),
           Rule(("cls_pos", "pos_embed"), ("pos_embed",), pos_to_flax,
                lambda c, g: (np.concatenate([c, g.reshape(1, -1, g.shape[-1])], 1),)),
           _norm("norm", "norm")]
  for m in _modules(flat, r"block(\d+)"):
    f, t = m.group(0), f"blocks.{m.group(1)}"
    rules += [_norm(f"{f}/norm1", f"{t}.norm1"), _linear(f"{f}/attn/qkv", f"{t}.attn.qkv"),
              _linear(f"{f}/attn/proj", f"{t}.attn.proj"), _norm(f"{f}/norm2", f"{t}.norm2"),
              _linear(f"{f}/fc1", f"{t}.mlp.fc1"), _linear(f"{f}/fc2", f"{t}.mlp.fc2")]
  return rules


RULES = {"convnext_v2": convnext_v2_rules, "resnet": resnet_rules, "vit": vit_rules}
