"""The step contract and the one update builder: value_and_grad adapter,
partial (per-group) updates, the non-finite rollback, the lr metric."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import algorithms
from jaxseg import optim
from jaxseg.trainers import step as step_lib

PARAMS = {"a": {"w": jnp.array([1.0, -2.0])}, "b": {"w": jnp.array(3.0)}}
BATCH = {"x": jnp.array([0.5, 1.5])}


def loss_fn(params, batch, rng, step):
  del rng
  loss = jnp.sum((params["a"]["w"] * batch["x"] - params["b"]["w"]) ** 2) * (step + 1)
  return loss, {"train/extra": loss * 2}


def test_as_grads_fn_is_value_and_grad():
  loss, grads, metrics = algorithms.as_grads_fn(loss_fn)(PARAMS, BATCH, None, 1)
  (ref, aux), ref_grads = jax.value_and_grad(loss_fn, has_aux=True)(PARAMS, BATCH, None, 1)
  assert float(loss) == float(ref) and float(metrics["train/extra"]) == float(aux["train/extra"])
  jax.tree.map(np.testing.assert_array_equal, grads, ref_grads)


def test_update_is_one_sgd_step_with_the_step_and_a_fresh_rng():
  tx = optax.sgd(0.1)

  def grads_fn(params, batch, rng, step):
    loss, grads, metrics = algorithms.as_grads_fn(loss_fn)(params, batch, rng, step)
    return loss, grads, {**metrics, "draw": jax.random.uniform(rng)}

  update = jax.jit(step_lib.make_update(grads_fn, tx, schedule=lambda s: 0.1 + s))
  state = step_lib.init_state(PARAMS, tx=tx, rng=jax.random.key(0))
  new, metrics, finite = update(state, BATCH)
  _, grads, _ = algorithms.as_grads_fn(loss_fn)(PARAMS, BATCH, None, 0)
  want = jax.tree.map(lambda p, g: p - 0.1 * g, PARAMS, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new["params"], want)
  assert bool(finite) and int(new["step"]) == 1 and float(metrics["train/lr"]) == pytest.approx(0.1)
  # The step's RNG is fold_in(state rng, step): a resumed run draws the same.
  assert float(metrics["draw"]) == float(jax.random.uniform(
      jax.random.fold_in(jax.random.key(0), 0)))
  assert float(metrics["train/grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)))
  # ||Δθ|| / ||θ||, the divergence check's ratio, over the params as applied
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
  delta = np.linalg.norm(flat(new["params"]) - flat(PARAMS)) / np.linalg.norm(flat(PARAMS))
  assert float(metrics["train/update_ratio"]) == pytest.approx(delta, rel=1e-5)
  assert {"train/loss", "train/extra"} <= set(metrics)
  # Step 1 uses the step in the loss: its loss is twice step 0's at the same params.
  _, m1, _ = update(state | {"step": jnp.ones((), jnp.int32)}, BATCH)
  np.testing.assert_allclose(m1["train/loss"], 2 * metrics["train/loss"], rtol=1e-6)


def test_partial_gradients_update_only_their_group():
  """grads over "a" alone move "a" and its Adam state; "b" stays bit-for-bit."""
  tx = optim.per_group({"a": optax.adam(0.1), "b": optax.adam(0.1)})

  def grads_a(params, batch, rng, step):
    loss, grads, metrics = algorithms.as_grads_fn(loss_fn)(params, batch, rng, step)
    return loss, {"a": grads["a"]}, metrics

  state = step_lib.init_state(PARAMS, tx=tx, rng=jax.random.key(0))
  assert set(state["opt_state"]) == {"a", "b"}  # plain per-group dict: checkpoints as before
  new, _, finite = jax.jit(step_lib.make_update(grads_a, tx))(state, BATCH)
  assert bool(finite)
  assert np.all(new["params"]["a"]["w"] != PARAMS["a"]["w"])
  jax.tree.map(np.testing.assert_array_equal, new["params"]["b"], PARAMS["b"])
  jax.tree.map(np.testing.assert_array_equal, new["opt_state"]["b"], state["opt_state"]["b"])
  assert int(new["opt_state"]["a"][0].count) == 1


def test_non_finite_step_returns_the_old_state():
  tx = optax.adam(0.1)
  nan_loss = lambda p, b, r, s: jax.tree.map(lambda x: x * jnp.nan, loss_fn(p, b, r, s))
  state = step_lib.init_state(PARAMS, tx=tx, rng=jax.random.key(0))
  new, metrics, finite = jax.jit(step_lib.make_update(algorithms.as_grads_fn(nan_loss), tx))(
      state, BATCH)
  assert not bool(finite) and np.isnan(float(metrics["train/loss"]))
  jax.tree.map(np.testing.assert_array_equal, new, state)


def test_rollout_option():
  assert step_lib.rollout_unrolled("unroll") and not step_lib.rollout_unrolled("scan")
  assert step_lib.rollout_unrolled("auto") == (jax.default_backend() == "cpu")
  with pytest.raises(ValueError, match=r"config.ciss.rollout='loop' is unknown"):
    step_lib.rollout_unrolled("loop", "ciss.rollout")


def test_weight_average_against_a_numpy_loop():
  """`ema_params` after each finite step equals the plain loop
  d_t = min(decay, (1+t)/(10+t)), ē = d_t ē + (1 − d_t) θ_t over the params the
  updates produced; a non-finite step moves neither."""
  tx, decay = optax.sgd(0.002), 0.6  # the warm-up rules to t = 12, decay after
  state = step_lib.init_state(PARAMS, tx=tx, rng=jax.random.key(0), ema=True)
  jax.tree.map(np.testing.assert_array_equal, state["ema_params"], PARAMS)
  update = jax.jit(step_lib.make_update(algorithms.as_grads_fn(loss_fn), tx, ema_decay=decay))
  ref = jax.tree.map(np.asarray, PARAMS)
  for t in range(1, 21):
    state, _, finite = update(state, BATCH)
    assert bool(finite)
    d = min(decay, (1 + t) / (10 + t))
    ref = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), ref, state["params"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), state["ema_params"], ref)
  # the average lags the iterate: it is a different, not a copied, tree
  assert not np.allclose(state["ema_params"]["a"]["w"], state["params"]["a"]["w"])
  assert step_lib.eval_params(state) is state["ema_params"]
  nan = jax.jit(step_lib.make_update(algorithms.as_grads_fn(
      lambda p, b, r, s: jax.tree.map(lambda x: x * jnp.nan, loss_fn(p, b, r, s))), tx,
      ema_decay=decay))
  new, _, finite = nan(state, BATCH)
  assert not bool(finite)
  jax.tree.map(np.testing.assert_array_equal, new, state)
