"""PSPNet (dilated ResNet + PPM) and CiSS-Net modules: shapes, strides, pooling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import config as config_lib
from jaxseg import models
from jaxseg.models import pspnet
from jaxseg.models.ciss import CiSSNet


def ref_adaptive_pool(x, bins):
  b, h, w, c = x.shape
  out = np.zeros((b, bins, bins, c))
  for i in range(bins):
    for j in range(bins):
      y0, y1 = (i * h) // bins, -(-(i + 1) * h // bins)
      x0, x1 = (j * w) // bins, -(-(j + 1) * w // bins)
      out[:, i, j] = x[:, y0:y1, x0:x1].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize("shape, bins", [((2, 7, 5, 3), 3), ((1, 8, 8, 2), 6), ((1, 4, 9, 1), 1)])
def test_adaptive_avg_pool_matches_torch_definition(shape, bins):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  np.testing.assert_allclose(np.asarray(pspnet.adaptive_avg_pool(jnp.asarray(x), bins)),
                             ref_adaptive_pool(x, bins), rtol=1e-5, atol=1e-6)


def _pspnet_config(backbone="resnet_debug"):
  c = config_lib.default_config().model
  c.update({"name": "pspnet", "backbone": backbone, "fpn_dim": 8, "head_dim": 16,
            "dropout": 0.1})
  return c


def test_pspnet_logits_and_stride8_features():
  model = models.build_model(_pspnet_config(), 5)
  x = jnp.zeros((2, 64, 48, 3))
  params = model.init({"params": jax.random.key(0)}, x, train=False)["params"]
  assert model.apply({"params": params}, x, train=False).shape == (2, 64, 48, 5)
  feats = model.apply({"params": params}, x, train=False, features_only=True)
  assert feats.shape == (2, 8, 6, 16)
  # ResNet-50 (deep stem, no fc): ~23.6M backbone parameters; still stride 8.
  big = models.build_model(_pspnet_config("resnet50"), 5)
  shapes = jax.eval_shape(lambda: big.init({"params": jax.random.key(0)}, x, train=False))
  assert 23e6 < models.param_count(shapes["params"]["backbone"]) < 24.5e6
  assert jax.eval_shape(lambda v: big.apply(v, x, train=False, features_only=True),
                        shapes).shape == (2, 8, 6, 16)
  with pytest.raises(ValueError, match="resnet18"):
    models.build_model(_pspnet_config("resnet18"), 5)


def test_ciss_net_parameter_groups_and_shapes():
  trunk = models.build_model(_pspnet_config(), 5)
  model = CiSSNet(trunk=trunk, num_classes=5, width=16, context_dim=8, policy_dim=8)
  x = jnp.zeros((1, 64, 64, 3))
  params = model.init({"params": jax.random.key(0)}, x)["params"]
  assert set(params) == {"trunk", "base_conv", "base_classifier", "context_encoder",
                         "bias_net", "policy_encoder", "context_net"}
  assert "classifier" not in params["trunk"]  # only the features are used
  apply = lambda *a, method, **kw: model.apply({"params": params}, *a, method=method, **kw)
  feats = apply(x, method=CiSSNet.features)
  z = apply(feats, method=CiSSNet.base)
  assert z.shape == (1, 8, 8, 5)
  bias = apply(feats, jnp.zeros((1, 8, 8), jnp.int32), method=CiSSNet.bias, train=False)
  policy, value = apply(feats, jax.nn.softmax(z), method=CiSSNet.context, train=False)
  assert bias.shape == (1, 8, 8, 5) and policy.shape == (1, 8, 8, 2) and value.shape == (1, 8, 8)
