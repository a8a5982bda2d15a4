import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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


def test_zero_factor_freezes_without_state_and_outside_clipping():
  params = {"trunk": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2))}}
  c = _cfg(lr=1e-2, warmup_steps=0, weight_decay=0.1, grad_clip_norm=1.0,
           lr_multipliers=(("trunk/.*", 0.0), ("head/.*", 0.5)))
  tx, _ = optim.make_optimizer(c, params, total_steps=10)
  state = tx.init(params)
  # No Adam moments for the frozen trunk: only the head's 4 scalars per moment.
  assert sum(x.size for x in jax.tree.leaves(state)) < 3 * 4 + 4
  # A huge trunk gradient neither moves the trunk nor shrinks the head's update.
  grads = {"trunk": {"kernel": jnp.full((2, 2), 1e6)}, "head": {"kernel": jnp.full((2, 2), 0.1)}}
  upd, _ = jax.jit(tx.update)(grads, state, params)
  np.testing.assert_array_equal(upd["trunk"]["kernel"], 0)
  ref_tx, _ = optim.make_optimizer(_cfg(lr=1e-2, warmup_steps=0, weight_decay=0.1,
                                        grad_clip_norm=1.0), params["head"], total_steps=10)
  ref, _ = ref_tx.update(grads["head"], ref_tx.init(params["head"]), params["head"])
  np.testing.assert_allclose(upd["head"]["kernel"], 0.5 * ref["kernel"], rtol=1e-6)


def test_sgd_with_momentum_and_unknown_optimizer():
  params = {"w": jnp.ones((2, 2))}
  tx, _ = optim.make_optimizer(_cfg(name="sgd", lr=0.1, warmup_steps=0, weight_decay=0.0,
                                    grad_clip_norm=0.0), params, total_steps=10)
  upd, _ = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
  np.testing.assert_allclose(upd["w"], -0.1 * np.ones((2, 2)), rtol=1e-6)
  with pytest.raises(ValueError, match="optim.name='adam'"):
    optim.make_optimizer(_cfg(name="adam"), params, total_steps=10)
