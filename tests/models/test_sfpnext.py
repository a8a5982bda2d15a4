"""SFPNeXt / LinearHead and the model builder."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import config as config_lib
from jaxseg import models
from jaxseg.models import sfpnext


def _config(**overrides):
  config = config_lib.default_config().model
  config.update(dict(name="sfpnext", backbone="convnext_v2_atto", drop_path_rate=0.1,
                     fpn_dim=32, head_dim=16, attention=True, dropout=0.1, dtype="float32"))
  config.update(overrides)
  return config


def _flat_paths(params):
  return ["/".join(str(k.key) for k in path)
          for path, _ in jax.tree_util.tree_leaves_with_path(params)]


@pytest.mark.parametrize("name", ["sfpnext", "linear"])
def test_logits_shape_and_classifier_path(name):
  model = models.build_model(_config(name=name), num_classes=5)
  x = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  assert set(variables) == {"params"}  # no batch_stats anywhere
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (2, 64, 96, 5)
  assert logits.dtype == jnp.float32
  paths = _flat_paths(variables["params"])
  matched = [p for p in paths if re.fullmatch(models.CLASSIFIER_PATTERN, p)]
  assert sorted(matched) == ["classifier/bias", "classifier/kernel"]
  assert variables["params"]["classifier"]["kernel"].shape[-1] == 5


def test_sfpnext_structure():
  config = _config(fpn_dim=32, head_dim=16)
  model = models.build_model(config, num_classes=3)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))["params"]
  fpn, head = params["fpn"], params["head"]
  assert fpn["non_local"]["theta"]["kernel"].shape == (1, 1, 32, 16)
  for i in range(4):
    assert fpn[f"lateral{i}"]["kernel"].shape[-1] == 32
    assert fpn[f"output{i}"]["kernel"].shape == (3, 3, 32, 32)
  # Level i has max(1, i) conv-GN-ReLU steps.
  assert sorted(head) == sorted(["level0_conv0", "level1_conv0",
                                 "level2_conv0", "level2_conv1",
                                 "level3_conv0", "level3_conv1",
                                 "level3_conv2"])
  assert params["classifier"]["kernel"].shape == (1, 1, 16, 3)
  no_attention = models.build_model(_config(attention=False), 3)
  params = jax.eval_shape(lambda: no_attention.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))["params"]
  assert "non_local" not in params["fpn"]


def test_num_groups():
  assert sfpnext.num_groups(256) == 32
  assert sfpnext.num_groups(40) == 20
  assert sfpnext.num_groups(7) == 7
  assert sfpnext.num_groups(66) == 22


def test_non_local_starts_as_identity():
  block = sfpnext.NonLocalBlock(inner_dim=4)
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 8))
  variables = block.init(jax.random.key(1), x)
  np.testing.assert_allclose(block.apply(variables, x), x, rtol=1e-6)


def test_jit_grad_is_finite_and_train_uses_dropout():
  # The grouped-conv depthwise path compiles in a fraction of the time of the
  # 49-tap one; the two are checked equal (values and VJPs) elsewhere.
  model = models.build_model(_config(depthwise_impl="lax"), num_classes=4)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  labels = jax.random.randint(jax.random.key(1), (2, 64, 64), 0, 4)
  params = jax.jit(lambda x: model.init(jax.random.key(2), x, train=False))(
      x)["params"]

  @jax.jit
  def loss_and_grad(params, rng):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": rng})
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
    return jax.value_and_grad(loss_fn)(params)

  loss, grads = loss_and_grad(params, jax.random.key(3))
  assert np.isfinite(loss)
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert float(jnp.abs(grads["classifier"]["kernel"]).sum()) > 0
  assert float(jnp.abs(
      grads["backbone"]["stem_conv"]["kernel"]).sum()) > 0
  loss_b, _ = loss_and_grad(params, jax.random.key(4))
  assert loss != loss_b  # dropout / drop path draw from the rng


def test_param_count():
  tree = {"a": jnp.zeros((2, 3)), "b": {"c": jnp.zeros((4,))}}
  assert models.param_count(tree) == 10


def test_unknown_names_raise():
  with pytest.raises(ValueError, match="linear.*sfpnext|sfpnext.*linear"):
    models.build_model(_config(name="deeplab"), 3)
  with pytest.raises(ValueError, match="convnext_v2_nano"):  # a ViT has no pyramid
    models.build_model(_config(backbone="vit_base_patch16"), 3)
  with pytest.raises(ValueError, match="ResNet backbones only"):
    models.build_model(_config(norm="affine"), 3)
  with pytest.raises(ValueError, match="bfloat16"):
    models.build_model(_config(dtype="float16"), 3)


def test_bfloat16_logits_are_float32():
  model = models.build_model(_config(dtype="bfloat16"), num_classes=3)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.dtype == jnp.float32
