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
from jaxseg.models.pspnet import PSPNet
from jaxseg.models.pspnet import RESNET_DEPTHS
from jaxseg.models.sfpnext import LinearHead
from jaxseg.models.sfpnext import SFPNeXt

# Regex on the '/'-joined parameter path of the final 1x1 classifier, for
# last-layer learning-rate factors (SPEC 1.3).
CLASSIFIER_PATTERN = r".*classifier.*"

_BACKBONE_PREFIX = "convnext_v2_"
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_backbone(config: ml_collections.ConfigDict) -> nn.Module:
  """`config.backbone` is "convnext_v2_<variant>" (atto ... base)."""
  name = config.backbone
  variant = name[len(_BACKBONE_PREFIX):]
  config_lib.check_choice("model.backbone", name,
                          [_BACKBONE_PREFIX + v for v in CONVNEXT_V2_VARIANTS])
  return build_convnext_v2(variant, drop_path_rate=config.drop_path_rate,
                           depthwise_impl=config.depthwise_impl, dtype=_dtype(config))


def _dtype(config: ml_collections.ConfigDict):
  config_lib.check_choice("model.dtype", config.dtype, _DTYPES)
  return _DTYPES[config.dtype]


def _build_sfpnext(config: ml_collections.ConfigDict,
                   num_classes: int) -> nn.Module:
  return SFPNeXt(
      num_classes=num_classes, backbone=build_backbone(config),
      fpn_dim=config.fpn_dim, head_dim=config.head_dim, attention=config.attention,
      dropout=config.dropout, dtype=_dtype(config))


def _build_linear(config: ml_collections.ConfigDict,
                  num_classes: int) -> nn.Module:
  return LinearHead(num_classes=num_classes, backbone=build_backbone(config),
                    dtype=_dtype(config))


def _build_pspnet(config: ml_collections.ConfigDict,
                  num_classes: int) -> nn.Module:
  """`config.backbone` is one of RESNET_DEPTHS (resnet50, resnet101, resnet_debug);
  `fpn_dim` is the PPM branch width, `head_dim` the feature (X) width."""
  config_lib.check_choice("model.backbone", config.backbone, sorted(RESNET_DEPTHS))
  return PSPNet(
      num_classes=num_classes, depths=RESNET_DEPTHS[config.backbone],
      width=8 if config.backbone == "resnet_debug" else 64,
      ppm_dim=config.fpn_dim, head_dim=config.head_dim, dropout=config.dropout,
      dtype=_dtype(config))


MODELS: dict[str, Callable[[ml_collections.ConfigDict, int], nn.Module]] = {
    "sfpnext": _build_sfpnext,
    "linear": _build_linear,
    "pspnet": _build_pspnet,
}


def build_model(config: ml_collections.ConfigDict,
                num_classes: int) -> nn.Module:
  """Builds `MODELS[config.name]`.

  Config fields: name ("sfpnext" | "linear" | "pspnet"), backbone
  ("convnext_v2_atto" ... "convnext_v2_base"; pspnet: "resnet50" | "resnet101"), drop_path_rate, fpn_dim, head_dim, attention,
  dropout, dtype ("float32" | "bfloat16"); optional depthwise_impl
  ("auto" | "shift" | "lax").
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
    "PSPNet",
    "RESNET_DEPTHS",
    "SFPNeXt",
    "build_backbone",
    "build_model",
    "build_convnext_v2",
    "param_count",
]
