"""The step contract and the one update builder: value_and_grad adapter,
partial (per-group) updates, the non-finite rollback, the lr metric."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import algorithms
from jaxseg import config as config_lib
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


def test_epochs_draw_once_then_update_k_times():
  """`Epochs`: the rollout sees the step's starting params and RNG once; the
  grads run K times on the batch plus that draw, each under the params the
  previous SGD update left; the optimizer takes K updates."""
  tx = optax.sgd(0.1)
  seen = []

  def rollout(params, batch, rng, step):
    return {"target": params["b"]["w"] + jax.random.uniform(rng)}

  def grads_fn(params, batch, rng, step):
    def loss(p):
      return jnp.sum((p["a"]["w"] * batch["x"] - batch["rollout"]["target"]) ** 2), {
          "train/clip_frac": jnp.sum(p["a"]["w"])}
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    seen.append(1)
    return value, grads, aux

  update = jax.jit(step_lib.make_update(step_lib.Epochs(rollout, grads_fn, 3), tx))
  state = step_lib.init_state(PARAMS, tx=tx, rng=jax.random.key(0))
  new, metrics, finite = update(state, BATCH)
  assert bool(finite) and len(seen) == 3 and int(new["step"]) == 1
  rng = jax.random.fold_in(jax.random.key(0), 0)
  target = PARAMS["b"]["w"] + jax.random.uniform(rng)
  w, losses = np.asarray(PARAMS["a"]["w"]), []
  for _ in range(3):
    losses.append(np.sum((w * BATCH["x"] - target) ** 2))
    w = w - 0.1 * 2 * (w * BATCH["x"] - target) * BATCH["x"]
  np.testing.assert_allclose(new["params"]["a"]["w"], w, rtol=1e-6)
  np.testing.assert_allclose(new["params"]["b"]["w"], PARAMS["b"]["w"])  # no gradient
  np.testing.assert_allclose(metrics["train/loss"], losses[0], rtol=1e-6)  # first epoch's
  # The last epoch's metric rides along: it saw the params after two updates.
  assert float(metrics["train/clip_frac"]) == pytest.approx(float(np.sum(PARAMS["a"]["w"])))
  assert float(metrics["train/clip_frac_last"]) != float(metrics["train/clip_frac"])


def test_epochs_stretch_the_learning_rate_schedule():
  """With 4 updates per train step the schedule, read per train step, is the
  one-update schedule; the optimizer's own count runs 4 per step."""
  oc = config_lib.default_config().optim
  oc.warmup_steps, oc.lr = 10, 1.0
  params = {"w": jnp.ones(3)}
  _, once = optim.make_optimizer(oc, params, total_steps=100)
  tx, per_step = optim.make_optimizer(oc, params, total_steps=100, updates_per_step=4)
  for s in (0, 5, 10, 50, 99):
    np.testing.assert_allclose(per_step(s), once(s), rtol=1e-5, atol=1e-7)
  # The optimizer's own count advances 4 per train step: after 40 updates (10
  # train steps) its warm-up is over.
  state = tx.init(params)
  for _ in range(40):
    updates, state = tx.update({"w": jnp.ones(3)}, state, params)
  count = [x for x in jax.tree.leaves(state) if jnp.ndim(x) == 0 and x.dtype == jnp.int32]
  assert int(count[0]) == 40
