"""DeepLabV3 and Segmenter (RSS Tab. 4): shapes, sizes, and Segmenter's mask
decoder against a numpy transcription of the authors' `MaskTransformer`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import config as config_lib
from jaxseg import models
from jaxseg.models.segmenter import MaskTransformer


def _config(**kw):
  c = config_lib.default_config().model
  c.update(kw)
  return c


def _init(model, x):
  return model.init({"params": jax.random.key(0)}, x, train=False)["params"]


def test_deeplabv3_logits_features_and_branches():
  model = models.build_model(_config(name="deeplabv3", backbone="resnet_debug", fpn_dim=8), 4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 48, 3)), jnp.float32)
  params = _init(model, x)
  assert set(params) == {"backbone", "context", "bottleneck", "classifier"}
  assert set(params["context"]) == {"image_pool", "branch0", "branch1", "branch2", "branch3"}
  assert params["context"]["branch0"]["conv"]["kernel"].shape[:2] == (1, 1)
  assert params["context"]["branch1"]["conv"]["kernel"].shape[:2] == (3, 3)
  assert model.apply({"params": params}, x, train=False).shape == (2, 64, 48, 4)
  assert model.apply({"params": params}, x, train=False,
                     features_only=True).shape == (2, 8, 6, 8)
  with pytest.raises(ValueError, match="divisible by 8"):
    model.apply({"params": params}, x[:, :60], train=False)


def test_paper_sizes():
  """Backbone parameters as timm counts them without the ImageNet head (timm
  1.0.31, pretrained=False; BatchNorm: weight and bias): resnet101c 42,519,392;
  vit_large_patch16_384 303,690,752 with 577 positions."""
  x = jax.ShapeDtypeStruct((1, 512, 512, 3), jnp.float32)
  dl = models.build_model(_config(name="deeplabv3", backbone="resnet101c", norm="affine",
                                  fpn_dim=512), 60)
  shapes = jax.eval_shape(lambda: _init(dl, jnp.zeros(x.shape)))
  assert abs(models.param_count(shapes["backbone"]) - 42_519_392) == 0
  seg = models.build_model(_config(name="segmenter", backbone="vit_large_patch16"), 60)
  shapes = jax.eval_shape(lambda: _init(seg, jnp.zeros(x.shape)))
  vit = models.param_count(shapes["backbone"])
  # timm counts a 24 x 24 grid (+ 1) of positions; jaxseg's grid is 32 x 32 at 512.
  assert vit == 303_690_752 + (32 * 32 - 24 * 24) * 1024
  assert shapes["backbone"]["pos_embed"].shape == (1, 32, 32, 1024)


def _layer_norm(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _block(x, p, heads, eps):
  """The authors' `Block`: x + attn(norm1(x)); x + mlp(norm2(x)), one head at a time."""
  n, d = x.shape
  y = _layer_norm(x, p["norm1"], eps)
  qkv = y @ p["attn"]["qkv"]["kernel"] + p["attn"]["qkv"]["bias"]
  q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
  hd = d // heads
  out = np.zeros_like(y)
  for h in range(heads):
    s = slice(h * hd, (h + 1) * hd)
    logits = q[:, s] @ k[:, s].T / np.sqrt(hd)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    out[:, s] = (a / a.sum(-1, keepdims=True)) @ v[:, s]
  x = x + out @ p["attn"]["proj"]["kernel"] + p["attn"]["proj"]["bias"]
  y = _layer_norm(x, p["norm2"], eps) @ p["fc1"]["kernel"] + p["fc1"]["bias"]
  y = 0.5 * y * (1 + np.vectorize(__import__("math").erf)(y / np.sqrt(2)))
  return x + y @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def test_segmenter_decoder_matches_the_authors_equations():
  classes = 5
  model = models.build_model(_config(name="segmenter", backbone="vit_debug", dropout=0.0,
                                     drop_path_rate=0.0), classes)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 32, 48, 3)), jnp.float32)
  params = _init(model, x)
  # Non-trivial norms everywhere.
  params = jax.tree.map(lambda a: a + 0.1 * np.random.default_rng(a.size).normal(
      size=a.shape).astype(np.float32), jax.device_get(params))
  grid = np.asarray(model.apply({"params": params}, x, train=False,
                                method=lambda m, x, train: m.backbone(x, train=train)[-1]))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["decoder"])
  gh, gw, d = grid.shape[1:]
  z = grid.reshape(gh * gw, d).astype(np.float64) @ p["proj_dec"]["kernel"] + p["proj_dec"]["bias"]
  h = np.concatenate([z, p["classifier_cls_emb"][0]], 0)
  for i in range(2):
    h = _block(h, p[f"block{i}"], heads=max(1, d // 64), eps=1e-5)
  h = _layer_norm(h, p["decoder_norm"], 1e-5)
  patches = h[:-classes] @ p["proj_patch"]
  cls = h[-classes:] @ p["proj_classes"]
  patches /= np.linalg.norm(patches, axis=-1, keepdims=True)
  cls /= np.linalg.norm(cls, axis=-1, keepdims=True)
  masks = _layer_norm(patches @ cls.T, p["classifier_mask_norm"], 1e-5).reshape(gh, gw, classes)
  got = MaskTransformer(classes).apply({"params": params["decoder"]}, grid, train=False)
  np.testing.assert_allclose(np.asarray(got)[0], masks, rtol=1e-4, atol=1e-4)
  logits = model.apply({"params": params}, x, train=False)
  assert logits.shape == (1, 32, 48, classes)
  assert models.CLASSIFIER_PATTERN and all(
      k.startswith("classifier") for k in params["decoder"] if "cls" in k or "mask" in k)
