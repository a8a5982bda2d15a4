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
  if (not name.startswith(_BACKBONE_PREFIX)
      or variant not in CONVNEXT_V2_VARIANTS):
    choices = [_BACKBONE_PREFIX + v for v in CONVNEXT_V2_VARIANTS]
    raise ValueError(f"unknown backbone {name!r}; choose from {choices}")
  return build_convnext_v2(
      variant, drop_path_rate=config.get("drop_path_rate", 0.0),
      depthwise_impl=config.get("depthwise_impl", "auto"),
      dtype=_dtype(config))


def _dtype(config: ml_collections.ConfigDict):
  name = config.get("dtype", "float32")
  if name not in _DTYPES:
    raise ValueError(f"unknown dtype {name!r}; choose from {sorted(_DTYPES)}")
  return _DTYPES[name]


def _build_sfpnext(config: ml_collections.ConfigDict,
                   num_classes: int) -> nn.Module:
  return SFPNeXt(
      num_classes=num_classes, backbone=build_backbone(config),
      fpn_dim=config.get("fpn_dim", 256), head_dim=config.get("head_dim", 128),
      attention=config.get("attention", True),
      dropout=config.get("dropout", 0.1), dtype=_dtype(config))


def _build_linear(config: ml_collections.ConfigDict,
                  num_classes: int) -> nn.Module:
  return LinearHead(num_classes=num_classes, backbone=build_backbone(config),
                    dtype=_dtype(config))


def _build_pspnet(config: ml_collections.ConfigDict,
                  num_classes: int) -> nn.Module:
  """`config.backbone` is one of RESNET_DEPTHS (resnet50, resnet101, resnet_debug);
  `fpn_dim` is the PPM branch width, `head_dim` the feature (X) width."""
  if config.backbone not in RESNET_DEPTHS:
    raise ValueError(f"unknown pspnet backbone {config.backbone!r}; choose from "
                     f"{sorted(RESNET_DEPTHS)}")
  return PSPNet(
      num_classes=num_classes, depths=RESNET_DEPTHS[config.backbone],
      width=8 if config.backbone == "resnet_debug" else 64,
      ppm_dim=config.get("fpn_dim", 512), head_dim=config.get("head_dim", 512),
      dropout=config.get("dropout", 0.1), dtype=_dtype(config))


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
  if config.name not in MODELS:
    raise ValueError(f"unknown model {config.name!r}; choose from "
                     f"{sorted(MODELS)}")
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
