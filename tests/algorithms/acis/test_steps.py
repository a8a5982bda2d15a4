"""ACIS steps (jaxseg.algorithms.acis.steps): BL-Trunc is BL with the state
cut, each step trains only its groups, scan = unroll, and one-step gradients
keep memory flat in the episode length."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.algorithms.acis import episode as ep
from jaxseg.algorithms.acis import losses as losses_lib
from jaxseg.algorithms.acis import steps

from .conftest import EPISODE, OPTIONS, synthetic_batch

FN = {"bl": (steps.bl_grads, OPTIONS), "bl_trunc": (steps.bl_trunc_grads, OPTIONS),
      "actor": (steps.actor_grads, dict(kl_weight=1e-4, termination_weight=1.0)),
      "critic": (steps.critic_grads, dict(gamma=0.9, explore_std=1.0))}


def _bind(kind, nets, params, length=3, unroll=False):
  fn, kw = FN[kind]
  frozen = {k: params[k] for k in ("preproc", "decoder", "critic")}
  return functools.partial(fn, nets, frozen=frozen, length=length, unroll=unroll,
                           **EPISODE, **kw)


def _grads(kind, nets, params, batch, **kw):
  fn = _bind(kind, nets, params, **kw)
  return jax.jit(lambda p: fn(p, batch, jax.random.key(2), 0))(params)


def test_bl_trunc_equals_bl_with_the_state_cut(setup):
  """BL-Trunc's per-step gradients = BL's loss differentiated with the mask
  state and the LSTM state stop-gradiented between steps."""
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  loss_t, grads_t, _ = _grads("bl_trunc", nets, params, batch)
  loss_f, grads_f, _ = _grads("bl", nets, params, batch)
  np.testing.assert_allclose(loss_t, loss_f, rtol=1e-5)  # same forward, same assignment
  cut = ep.actor_step

  def actor_step_cut(*args, **kw):
    (state, carry), out = cut(*args, **kw)
    return jax.lax.stop_gradient((state, carry)), out

  ep.actor_step = actor_step_cut
  try:
    _, grads_cut, _ = _grads("bl", nets, params, batch)
  finally:
    ep.actor_step = cut
  flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g["actor"])])  # noqa
  np.testing.assert_allclose(flat(grads_t), flat(grads_cut), rtol=2e-3, atol=1e-7)
  assert np.abs(flat(grads_t) - flat(grads_f)).max() > 1e-6  # BPTT does reach back


def test_each_step_trains_only_its_groups(setup):
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  loss, grads, metrics = _grads("actor", nets, params, batch)
  assert set(grads) == set(steps.TRAINS["actor"]) == {"actor"} and np.isfinite(loss)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  loss, grads, metrics = _grads("critic", nets, params, batch)
  assert set(grads) == {"critic"} and float(metrics["train/critic_loss"]) == float(loss)


@pytest.mark.parametrize("kind", ["actor", "bl"])
def test_scan_and_unroll_agree(setup, kind):
  """`lax.scan` and the Python-loop unroll (`episode.scan`): the one-step
  gradients in the carry (actor) and autodiff through the episode (BL)."""
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  out = {u: _grads(kind, nets, params, batch, unroll=u) for u in (False, True)}
  np.testing.assert_allclose(out[False][0], out[True][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6),
               out[False][1], out[True][1])


def test_per_step_memory_does_not_grow_with_length(setup):
  """XLA's temp buffers: BL keeps every step (grows with L), BL-Trunc and the
  actor step keep one (flat) -- the paper's memory argument, under `scan`."""
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())

  def temp(kind, length):
    fn = _bind(kind, nets, params, length=length)
    g = jax.jit(lambda p: fn(p, batch, jax.random.key(2), 0)[1])
    return g.lower(params).compile().memory_analysis().temp_size_in_bytes

  bl = [temp("bl", n) for n in (2, 8)]
  trunc = [temp("bl_trunc", n) for n in (2, 8)]
  actor = [temp("actor", n) for n in (2, 8)]
  assert bl[1] > 1.5 * bl[0]
  assert trunc[1] < 1.2 * trunc[0] and actor[1] < 1.2 * actor[0]
  assert trunc[1] < bl[1]


def test_mean_action_episodes_ignore_the_noise(setup):
  """The authors' -criticNoise 0 -realNoise 0: with `sample=False` the critic's
  and the actor's episodes use μ, so the step does not depend on ε; sampling does."""
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  for kind in ("critic", "actor"):
    losses = {}
    for sample in (False, True):
      fn = _bind(kind, nets, params)
      fn = functools.partial(fn.func, *fn.args, **{**fn.keywords, "sample": sample})
      losses[sample] = [float(jax.jit(lambda p, r: fn(p, batch, r, 0)[0])(
          params, jax.random.key(k))) for k in (2, 5)]
    assert losses[False][0] == losses[False][1], kind
    assert losses[True][0] != losses[True][1], kind


def test_init_step_is_bce_on_the_one_instance_load_last_leaves(setup):
  """The actor init (`bl_grads`, L = 1, load "last"): M_0 holds all but one
  random instance; the loss is the mask loss against that one (the Hungarian
  assignment of one prediction to one target) plus BCE(c, stop)."""
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  fn = _bind("bl", nets, params, length=1)
  fn = functools.partial(fn.func, *fn.args, **{**fn.keywords, "load": "last"})
  rng = jax.random.key(7)
  loss = float(jax.jit(lambda p: fn(p, batch, rng, 0)[0])(params))
  inputs = ep.make_inputs(nets, params["preproc"], batch["image"])
  state0, rest = ep.load_episode(ep.make_targets(batch["instances"], EPISODE["max_instances"]),
                                 jax.random.split(rng)[0], 1, "last")
  assert np.all(np.asarray(rest.counts) == 1)
  target = np.asarray(rest.masks)[np.asarray(rest.valid)]  # the one left per image
  (_, _), out = ep.actor_step(nets, params["actor"], params["decoder"], inputs,
                              *ep.episode_start(nets, inputs, state0),
                              jnp.zeros((8, EPISODE["latent_dim"])), sample=False)
  rec = np.mean(np.asarray(losses_lib.mask_loss(out["logits"], target, 1.0)))
  stop = np.mean(np.asarray(losses_lib.bce(out["cont"], jnp.zeros(8))))
  np.testing.assert_allclose(loss, rec + stop, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bl_trunc", "actor"])
def test_termination_also_says_stop_past_the_last_instance(setup, kind):
  """With load "any" an episode can start with every instance painted or run
  past its last one; the termination term is the BCE over all L × B steps
  against numpy targets 1[t + 1 < N − k] (so "stop" on those steps too)."""
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  length, rng = 3, jax.random.key(4)
  fn = _bind(kind, nets, params, length=length)
  fn = functools.partial(fn.func, *fn.args, **{**fn.keywords, "load": "any"})
  metrics = jax.jit(lambda p: fn(p, batch, rng, 0)[2])(params)
  state0, rest = ep.load_episode(ep.make_targets(batch["instances"], EPISODE["max_instances"]),
                                 jax.random.split(rng)[0], length, "any")
  counts = np.asarray(rest.counts)
  assert (counts < length).any()  # some episodes do run past their last instance
  inputs = ep.make_inputs(nets, params["preproc"], batch["image"])
  out = ep.rollout(nets, params["actor"], params["decoder"], inputs,
                   jnp.zeros((length, 8, EPISODE["latent_dim"])), sample=False, state0=state0)
  x = np.asarray(out["cont"], np.float64)
  target = (np.arange(length)[:, None] + 1 < counts[None]).astype(np.float64)
  bce = np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x)))
  np.testing.assert_allclose(float(metrics["train/termination"]), bce.mean(), rtol=1e-4)
