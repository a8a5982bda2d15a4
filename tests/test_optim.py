import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxseg import config as config_lib
from jaxseg import optim


def _cfg(**kw):
  c = config_lib.default_config().optim
  c.update(kw)
  return c


def test_schedule_warmup_then_poly_decay():
  s = optim.learning_rate_schedule(_cfg(lr=1.0, warmup_steps=10, end_lr=0.0, poly_power=1.0), 110)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_last_layer_factor_scales_only_the_classifier_update():
  params = {"backbone": {"w": jnp.ones((3, 3))}, "classifier": {"kernel": jnp.ones((3, 3)),
                                                                  "bias": jnp.ones(3)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)

  def first_update(factor):
    tx, _ = optim.make_optimizer(
        _cfg(lr=1e-2, warmup_steps=0, weight_decay=0.0, grad_clip_norm=0.0,
             last_layer_lr_factor=factor), params, total_steps=100)
    upd, _ = tx.update(grads, tx.init(params), params)
    return upd

  base, scaled = first_update(1.0), first_update(40.0)
  np.testing.assert_allclose(scaled["backbone"]["w"], base["backbone"]["w"])
  np.testing.assert_allclose(scaled["classifier"]["kernel"], 40 * base["classifier"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(scaled["classifier"]["bias"], 40 * base["classifier"]["bias"], rtol=1e-6)


def test_extra_multipliers_and_weight_decay_mask():
  params = {"a": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "b": {"kernel": jnp.ones((2, 2))}}
  factors = optim.lr_multiplier_tree(params, [("a/.*", 0.5)])
  assert factors == {"a": {"kernel": 0.5, "bias": 0.5}, "b": {"kernel": 1.0}}
  # Zero gradients: only decoupled weight decay moves params, and only kernels.
  tx, _ = optim.make_optimizer(_cfg(lr=1.0, warmup_steps=0, weight_decay=0.1,
                                    grad_clip_norm=0.0), params, total_steps=10)
  upd, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  assert np.all(np.asarray(upd["a"]["kernel"]) < 0)
  np.testing.assert_array_equal(upd["a"]["bias"], 0)


def test_grad_clipping_bounds_the_update_input():
  params = {"w": jnp.zeros(4)}
  tx = optax.clip_by_global_norm(1.0)
  upd, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params))
  np.testing.assert_allclose(optax.tree.norm(upd), 1.0, rtol=1e-6)
