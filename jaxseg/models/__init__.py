"""Segmentation models (Flax Linen) and their builder.

Every model maps normalised images (B, H, W, 3) to float32 logits
(B, H, W, num_classes) with `model.apply({"params": p}, x, train=...)`; the
only variable collection is `params` and the only rng stream is 'dropout'.
`apply(..., features_only=True)` returns the features the classifier reads
(CiSS-Net's domain features X).
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxseg import config as config_lib
from jaxseg.models.convnext_v2 import CONVNEXT_V2_VARIANTS
from jaxseg.models.convnext_v2 import ConvNeXtV2
from jaxseg.models.convnext_v2 import build_convnext_v2
from jaxseg.models.deeplabv3 import ASPP
from jaxseg.models.pspnet import PPM
from jaxseg.models.pspnet import DilatedNet
from jaxseg.models.resnet import RESNET_VARIANTS
from jaxseg.models.resnet import build_resnet
from jaxseg.models.segmenter import Segmenter
from jaxseg.models.sfpnext import NORMS
from jaxseg.models.sfpnext import LinearHead
from jaxseg.models.sfpnext import SFPNeXt
from jaxseg.models.vit import VIT_VARIANTS
from jaxseg.models.vit import build_vit

# Regex on the '/'-joined parameter path of the final 1x1 classifier, for
# last-layer learning-rate factors (SPEC 1.3).
CLASSIFIER_PATTERN = r".*classifier.*"

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Backbone families: config.backbone = prefix + variant.
BACKBONE_FAMILIES = {"convnext_v2": CONVNEXT_V2_VARIANTS, "resnet": RESNET_VARIANTS,
                     "vit": VIT_VARIANTS}


def _name(family: str, variant: str) -> str:
  return variant if family == "resnet" else f"{family}_{variant}"


def backbone_names(*families: str) -> list[str]:
  """Every `config.backbone` of these families (all when none is named)."""
  return [_name(f, v) for f in families or BACKBONE_FAMILIES for v in BACKBONE_FAMILIES[f]]


def backbone_family(name: str) -> str:
  """'convnext_v2' | 'resnet' | 'vit' of a `config.backbone`."""
  config_lib.check_choice("model.backbone", name, backbone_names())
  return next(f for f, variants in BACKBONE_FAMILIES.items()
              if any(_name(f, v) == name for v in variants))


def build_backbone(config: ml_collections.ConfigDict, *families: str,
                   output_stride: int = 32) -> nn.Module:
  """`config.backbone`: "convnext_v2_<variant>", "resnet…" or "vit_<variant>"
  (one of `families` when given); ResNets at `output_stride`."""
  config_lib.check_choice("model.backbone", config.backbone, backbone_names(*families))
  family = backbone_family(config.backbone)
  config_lib.check_choice("model.norm", config.norm, NORMS)
  if family == "resnet":
    return build_resnet(config.backbone, output_stride=output_stride, norm=config.norm,
                        dtype=_dtype(config))
  if config.norm != "group":
    raise ValueError(f"config.model.norm={config.norm!r} applies to ResNet backbones "
                     f"only (model.backbone={config.backbone!r}).")
  variant = config.backbone[len(family) + 1:]
  if family == "vit":
    return build_vit(variant, drop_path_rate=config.drop_path_rate, dtype=_dtype(config))
  return build_convnext_v2(variant, drop_path_rate=config.drop_path_rate,
                           depthwise_impl=config.depthwise_impl, dtype=_dtype(config))


def _dtype(config: ml_collections.ConfigDict):
  config_lib.check_choice("model.dtype", config.dtype, _DTYPES)
  return _DTYPES[config.dtype]


def _build_sfpnext(config: ml_collections.ConfigDict,
                   num_classes: int) -> nn.Module:
  return SFPNeXt(
      num_classes=num_classes, backbone=build_backbone(config, "convnext_v2", "resnet"),
      fpn_dim=config.fpn_dim, head_dim=config.head_dim, attention=config.attention,
      dropout=config.dropout, dtype=_dtype(config), init_std=config.classifier_init_std)


def _build_linear(config: ml_collections.ConfigDict,
                  num_classes: int) -> nn.Module:
  return LinearHead(num_classes=num_classes, backbone=build_backbone(config),
                    dtype=_dtype(config), init_std=config.classifier_init_std)


def _build_pspnet(config: ml_collections.ConfigDict,
                  num_classes: int) -> nn.Module:
  """ResNet at stride 8; `fpn_dim` is the PPM branch width, `head_dim` the
  feature (X) width."""
  return DilatedNet(
      num_classes=num_classes, backbone=build_backbone(config, "resnet", output_stride=8),
      context=PPM(config.fpn_dim, dtype=_dtype(config)), head_dim=config.head_dim,
      dropout=config.dropout, dtype=_dtype(config), init_std=config.classifier_init_std)


def _build_deeplabv3(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """ResNet at stride 8 + ASPP of `fpn_dim` channels."""
  return DilatedNet(
      num_classes=num_classes, backbone=build_backbone(config, "resnet", output_stride=8),
      context=ASPP(config.fpn_dim, dtype=_dtype(config)), head_dim=config.fpn_dim,
      dropout=config.dropout, dtype=_dtype(config), init_std=config.classifier_init_std)


def _build_segmenter(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """ViT + a 2-layer mask transformer."""
  return Segmenter(num_classes=num_classes, backbone=build_backbone(config, "vit"),
                   drop_path_rate=config.drop_path_rate, dropout=config.dropout,
                   dtype=_dtype(config))


MODELS: dict[str, Callable[[ml_collections.ConfigDict, int], nn.Module]] = {
    "sfpnext": _build_sfpnext,
    "linear": _build_linear,
    "pspnet": _build_pspnet,
    "deeplabv3": _build_deeplabv3,
    "segmenter": _build_segmenter,
}

# Output stride of each model's logits before the final resize (crop sizes
# must be divisible by it).
MODEL_STRIDES = {"sfpnext": 32, "pspnet": 8, "deeplabv3": 8}


def model_stride(config: ml_collections.ConfigDict) -> int:
  """What crop sizes must be divisible by: the logits' stride before the final
  resize (a ViT's patch size)."""
  if config.name == "segmenter":
    return VIT_VARIANTS.get(config.backbone[len("vit_"):], (1,))[0]
  return MODEL_STRIDES.get(config.name, 1)


def build_model(config: ml_collections.ConfigDict,
                num_classes: int) -> nn.Module:
  """Builds `MODELS[config.name]`.

  Config fields: name (a key of MODELS), backbone (`backbone_names()`:
  "convnext_v2_atto" ... "convnext_v2_base", "resnet50" | "resnet101" (7×7 stem)
  | "resnet50c" | "resnet101c" | "resnet50s" | "resnet101s" (deep stems),
  "vit_small_patch16" …), norm ("group" | "affine": ResNets with imported
  BatchNorm), drop_path_rate, fpn_dim, head_dim, attention, dropout, dtype
  ("float32" | "bfloat16"); optional depthwise_impl ("auto" | "shift" | "lax").
  """
  config_lib.check_choice("model.name", config.name, sorted(MODELS))
  return MODELS[config.name](config, num_classes)


def param_count(params) -> int:
  """Total number of scalars in a parameter pytree."""
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


__all__ = [
    "CLASSIFIER_PATTERN",
    "CONVNEXT_V2_VARIANTS",
    "ConvNeXtV2",
    "LinearHead",
    "MODELS",
    "ASPP",
    "DilatedNet",
    "PPM",
    "RESNET_VARIANTS",
    "SFPNeXt",
    "Segmenter",
    "VIT_VARIANTS",
    "backbone_family",
    "backbone_names",
    "build_backbone",
    "build_model",
    "build_convnext_v2",
    "param_count",
]
