"""ACIS trainer: gradients, schedules, inference helpers, sharding, the full run."""
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jaxseg import config as config_lib
from jaxseg import parallel
from jaxseg.data import to_global_array
from jaxseg.data.errors import DataError
from jaxseg.trainers import acis

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def tiny_config(variant="ac", **overrides):
  c = config_lib.load_config_file(CONFIGS / "acis_cvppp.py", f"{variant},runlocal")
  c.update_from_flattened_dict(overrides)
  return c


def synthetic_batch(b=8, s=32, seed=0, max_count=5):
  """Rectangles as instances (later ones on top), 1..max_count per image."""
  rng = np.random.default_rng(seed)
  inst = np.zeros((b, s, s), np.int32)
  for i in range(b):
    for k in range(1, rng.integers(1, max_count + 1) + 1):
      y, x = rng.integers(0, s - 8, 2)
      inst[i, y:y + rng.integers(4, 9), x:x + rng.integers(4, 9)] = 3 * k + 1
  return {"image": rng.integers(0, 255, (b, s, s, 3), dtype=np.uint8), "instances": inst}


@pytest.fixture(scope="module")
def setup():
  c = tiny_config()
  nets = acis.build_nets(c)
  params = jax.jit(functools.partial(acis.init_params, nets, c))(jax.random.key(0))
  return c, nets, params


def test_variants_set_the_ablation_switches():
  assert tiny_config("bl").acis.method == "bl"
  nokl, nosp = tiny_config("ac_nokl").acis, tiny_config("ac_nosp").acis
  assert (nokl.method, nokl.kl_weight, nokl.state_pyramid) == ("ac", 0.0, True)
  assert (nosp.method, nosp.kl_weight > 0, nosp.state_pyramid) == ("ac", True, False)
  assert [s.name for s in acis.stage_plan(tiny_config("ac_nosp"))] == [
      "preproc", "cvae_nosp", "ac_nosp"]
  with pytest.raises(ValueError, match="VARIANT"):
    tiny_config("ac_typo")
  with pytest.raises(ValueError, match="image_size"):
    acis.validate(tiny_config(**{"acis.image_size": 34}))
  with pytest.raises(ValueError, match="rollout"):
    acis.validate(tiny_config(**{"acis.rollout": "loop"}))


def test_schedules():
  c = tiny_config(**{"total_steps": 90, "acis.seq_lengths": (5, 10, 15),
                     "acis.critic_warmup": 10, "acis.critic_per_actor": 3})
  assert [acis.seq_length(c, s) for s in (1, 30, 31, 60, 61, 90)] == [5, 5, 10, 10, 15, 15]
  actor = [s for s in range(1, 31) if acis.is_actor_step(c, s)]
  assert actor == [14, 18, 22, 26, 30]  # 10 critic-only steps, then every 4th


def test_per_step_grads_is_one_step_bptt():
  """Σ_t ∇ℓ_t with the carry stop-gradiented, against plain autodiff of that sum."""
  w = {"a": jnp.array([0.7, -0.3]), "b": jnp.array(1.3)}
  xs = jnp.arange(1.0, 6.0)

  def step_loss(p, carry, x):
    h = jnp.tanh(p["a"] * carry + p["b"] * x)
    return jnp.sum(h ** 2) * x, (h, h.sum())

  def truncated(p):
    carry, total = jnp.zeros(2), 0.0
    for x in xs:
      loss, (h, _) = step_loss(p, carry, x)
      carry, total = jax.lax.stop_gradient(h), total + loss
    return total

  for unroll in (False, True):
    total, grads, outs = acis.per_step_grads(step_loss, w, jnp.zeros(2), xs, unroll=unroll)
    ref_total, ref_grads = jax.value_and_grad(truncated)(w)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-5), grads, ref_grads)
    assert outs.shape == (5,)


def test_assignment_and_rewards_match_scipy(setup):
  c, nets, params = setup
  batch = synthetic_batch()
  targets = acis.make_targets(jnp.asarray(batch["instances"]), c.acis.max_instances)
  rng = np.random.default_rng(1)
  length = 4
  masks = jnp.asarray(rng.random((length, 8, 32, 32)), jnp.float32)
  valid = acis.step_mask(targets.counts, length)
  assigned, matched = acis.assign_targets(masks, targets, valid)
  r = acis.matching_rewards(masks, targets, valid)
  for b in range(8):
    ids = np.unique(batch["instances"][b][batch["instances"][b] > 0])
    gt = (batch["instances"][b][None] == ids[:, None, None]).astype(np.float64)
    n = min(length, ids.size)
    m = np.asarray(masks[:n, b], np.float64)
    dice = 2 * np.einsum("thw,khw->tk", m, gt) / (m.sum((1, 2))[:, None] + gt.sum((1, 2)))
    rows, cols = linear_sum_assignment(dice, maximize=True)
    np.testing.assert_allclose(float(np.sum(r[:, b])), dice[rows, cols].sum(), rtol=1e-4)
    assert int(matched[:, b].sum()) == n
    got = {t: np.flatnonzero([np.array_equal(assigned[t, b], g) for g in gt])[0]
           for t in range(n)}
    assert sum(dice[t, k] for t, k in got.items()) == pytest.approx(dice[rows, cols].sum(),
                                                                   rel=1e-4)
    assert not np.any(np.asarray(r[n:, b]))  # steps past the count earn nothing


def _grads(fn, c, nets, params, batch, length=3):
  frozen = {k: params[k] for k in ("preproc", "decoder", "critic")}
  return jax.jit(lambda p: fn(nets, c, p, batch, jax.random.key(2), frozen, length))(params)


def test_bl_trunc_equals_bl_with_the_state_cut(setup):
  """BL-Trunc's per-step gradients = BL's loss differentiated with the mask
  state and the LSTM state stop-gradiented between steps."""
  c, nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  loss_t, grads_t, _ = _grads(acis.bl_trunc_grads, c, nets, params, batch)
  loss_f, grads_f, _ = _grads(acis.bl_grads, c, nets, params, batch)
  np.testing.assert_allclose(loss_t, loss_f, rtol=1e-5)  # same forward, same assignment
  cut = acis.actor_step

  def actor_step_cut(*args, **kw):
    (state, carry), out = cut(*args, **kw)
    return jax.lax.stop_gradient((state, carry)), out

  acis.actor_step = actor_step_cut
  try:
    _, grads_cut, _ = _grads(acis.bl_grads, c, nets, params, batch)
  finally:
    acis.actor_step = cut
  flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree.leaves(g["actor"])])  # noqa
  np.testing.assert_allclose(flat(grads_t), flat(grads_cut), rtol=2e-3, atol=1e-7)
  assert np.abs(flat(grads_t) - flat(grads_f)).max() > 1e-6  # BPTT does reach back


def test_actor_gradient_leaves_decoder_and_critic_alone(setup):
  c, nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  loss, grads, metrics = _grads(acis.ac_actor_grads, c, nets, params, batch)
  assert set(grads) == {"actor"} and np.isfinite(loss)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  loss, grads, metrics = _grads(acis.ac_critic_grads, c, nets, params, batch)
  assert set(grads) == {"critic"} and float(metrics["train/critic_loss"]) == float(loss)


def test_explore_std_floors_the_sampled_noise(setup):
  """a = μ + max(σ, explore_std)·ε, checked through the decoded mask."""
  c, nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  inputs = acis.make_inputs(nets, params["preproc"], batch["image"])
  init = acis.episode_start(nets, inputs)
  eps = jax.random.normal(jax.random.key(1), (inputs.x.shape[0], c.acis.latent_dim))
  _, (mu, logvar, _) = nets.actor.apply({"params": params["actor"]},
                                        inputs.actor(init[0]), init[1])
  sigma = np.exp(0.5 * np.asarray(logvar))
  assert sigma.max() < 0.1  # the actor starts near-deterministic (init_logvar)

  def decoded(action):
    return jax.nn.sigmoid(nets.decoder.apply({"params": params["decoder"]}, action,
                                             inputs.cond))

  for std, expect in ((0.0, mu + sigma * eps), (2.0, mu + 2.0 * eps)):
    _, out = acis.actor_step(nets, params["actor"], params["decoder"], inputs, *init, eps,
                             sample=True, explore_std=std)
    np.testing.assert_allclose(out["mask"], decoded(expect), atol=1e-5)
  assert np.abs(decoded(mu + 2.0 * eps) - decoded(mu + sigma * eps)).max() > 1e-3


def test_scan_and_unroll_agree(setup):
  c, nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  out = {}
  for rollout in ("scan", "unroll"):
    c2 = tiny_config(**{"acis.rollout": rollout})
    out[rollout] = _grads(acis.ac_actor_grads, c2, nets, params, batch)
  np.testing.assert_allclose(out["scan"][0], out["unroll"][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6),
               out["scan"][1], out["unroll"][1])


def test_per_step_memory_does_not_grow_with_length(setup):
  """XLA's temp buffers: BL keeps every step (grows with L), BL-Trunc and the
  actor step keep one (flat) -- the paper's memory argument, under `scan`."""
  c, nets, params = setup
  c = tiny_config(**{"acis.rollout": "scan"})
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  frozen = {k: params[k] for k in ("preproc", "decoder", "critic")}

  def temp(fn, length):
    g = jax.jit(lambda p: fn(nets, c, p, batch, jax.random.key(2), frozen, length)[1])
    return g.lower(params).compile().memory_analysis().temp_size_in_bytes

  bl = [temp(acis.bl_grads, n) for n in (2, 8)]
  trunc = [temp(acis.bl_trunc_grads, n) for n in (2, 8)]
  actor = [temp(acis.ac_actor_grads, n) for n in (2, 8)]
  assert bl[1] > 1.5 * bl[0]
  assert trunc[1] < 1.2 * trunc[0] and actor[1] < 1.2 * actor[0]
  assert trunc[1] < bl[1]


def test_inference_helpers():
  assert acis.num_predicted(np.array([0.9, 0.8, 0.3, 0.9])) == 3
  assert acis.num_predicted(np.array([0.9, 0.9])) == 2
  assert acis.num_predicted(np.array([0.1, 0.9])) == 1
  masks = np.zeros((3, 4, 4), np.float32)
  masks[0, :2] = 0.9
  masks[1, 1:3] = 0.95  # overlaps mask 0 on row 1 and wins there
  masks[2] = 0.4  # never above 0.5
  np.testing.assert_array_equal(acis.label_map(masks)[:, 0], [1, 2, 2, 0])
  assert acis.label_map(masks[:0]).shape == (4, 4)
  big = acis.paste_back(masks, (8, 6))
  assert big.shape == (3, 8, 6) and np.allclose(big[2], 0.4)
  gt = np.zeros((4, 4), np.int32)
  gt[:2], gt[2:] = 5, 9
  perfect = np.stack([gt == 9, gt == 5]).astype(np.float32)
  assert acis.gt_stop_dice(perfect, gt) == pytest.approx(1.0)
  assert acis.gt_stop_dice(perfect[:1], gt) == pytest.approx(0.5)


def test_one_update_on_1_and_8_devices(setup):
  """The AC critic and actor steps, batch sharded over 8 fake devices vs 1."""
  assert jax.device_count() == 8
  c, nets, params = setup
  batch = synthetic_batch()
  frozen = {k: params[k] for k in ("preproc", "decoder")}
  stage = acis.Stage("ac", 4, ("actor", "critic"), None, None)
  txs = acis._optimizers(c, stage)  # pylint: disable=protected-access
  results = []
  for n in (1, 8):
    mesh = parallel.make_data_mesh(n)
    repl = parallel.replicated(mesh)
    trained = {k: params[k] for k in stage.trains}
    state = jax.device_put({"step": jnp.zeros((), jnp.int32), "params": trained,
                            "opt_state": {k: txs[k].init(trained[k]) for k in trained},
                            "rng": jax.random.key_data(jax.random.key(3))}, repl)
    dev_batch = to_global_array(batch, parallel.batch_sharding(mesh))
    out = []
    for fn in (acis.ac_critic_grads, acis.ac_actor_grads):
      update = jax.jit(acis.make_update(
          lambda p, b, r, f, fn=fn: fn(nets, c, p, b, r, f, 3), txs, jax.device_put(frozen, repl)),
          out_shardings=(repl, repl, repl))
      state, metrics, finite = update(state, dev_batch)
      assert bool(finite)
      out.append(jax.device_get(metrics))
    results.append((out, jax.device_get(state["params"])))
  (m1, p1), (m8, p8) = results
  for a, b in zip(m1, m8):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6), p1, p8)


def test_too_many_instances_is_a_clear_error(setup):
  c, _, _ = setup
  inst = np.arange(64, dtype=np.int32).reshape(8, 8)
  with pytest.raises(DataError, match="max_instances"):
    acis._check_counts([{"instances": inst, "name": "crowded"}], c,  # pylint: disable=protected-access
                       "train")


def test_kitti_config_fails_with_what_to_provide(tmp_path):
  c = config_lib.load_config_file(CONFIGS / "acis_kitti.py", "ac,runlocal")
  with pytest.raises(DataError, match="instance_folder"):
    acis.train_and_evaluate(c, str(tmp_path))


def test_main_runs_every_stage_then_reuses_them(cvppp_root, tmp_path):
  """`configs/acis_cvppp.py:bl,runlocal` on the real CVPPP A1 copy: three stages,
  val metrics written; a second variant reuses the pre-training via init_from."""
  c = tiny_config("bl_trunc", **{"data.root": str(cvppp_root), "eval.max_examples": 2,
                                 "batch_size": 8})
  metrics = acis.train_and_evaluate(c, str(tmp_path / "a"))
  for key in ("sbd", "abs_dic", "dic", "mwcov", "mucov", "avg_fp", "avg_fn", "dice_gt_stop",
              "dice_gt_stop_mask_only", "abs_dic_lstm_only"):
    assert np.isfinite(metrics[f"val/{key}"]), key
  for stage in ("preproc", "cvae", "bl_trunc"):
    assert (tmp_path / "a" / stage / "metrics.jsonl").exists()
  assert list((tmp_path / "a" / "bl_trunc" / "panels").glob("*.png"))
  c2 = tiny_config("ac", **{"data.root": str(cvppp_root), "eval.max_examples": 1,
                            "batch_size": 8, "init_from": str(tmp_path / "a")})
  acis.train_and_evaluate(c2, str(tmp_path / "b"))
  assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["ac"]
  records = [json.loads(line) for line in
             (tmp_path / "b" / "ac" / "metrics.jsonl").read_text().splitlines()]
  assert any("train/critic_loss" in r for r in records)
  assert any("train/kl" in r for r in records)  # an actor step ran after warm-up
