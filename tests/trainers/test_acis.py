"""ACIS trainer: variants, schedules, sharding, data checks, the staged run."""
import copy
import functools
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg import parallel
from jaxseg.data import to_global_array
from jaxseg.data.errors import DataError
from jaxseg.trainers import acis, acis_eval
from jaxseg.trainers import step as step_lib

from ..algorithms.acis.conftest import synthetic_batch
from ..data.test_kitti import kitti_tree
from ..test_parallel import collective_loops

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
sys.path.insert(0, str(CONFIGS.parent / "bench"))
import acis_steps  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def tiny_config(variant="ac", **overrides):
  c = config_lib.load_config_file(CONFIGS / "acis_cvppp.py", f"{variant},runlocal")
  c.update_from_flattened_dict(overrides)
  return c


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
      "preproc", "cvae_nosp", "actor_init_nosp", "ac_nosp"]
  assert [s.name for s in acis.stage_plan(tiny_config(**{"acis.init_steps": 0}))] == [
      "preproc", "cvae", "ac"]
  with pytest.raises(ValueError, match="VARIANT"):
    tiny_config("ac_typo")
  with pytest.raises(ValueError, match="image_size"):
    acis.validate(tiny_config(**{"acis.image_size": 34}))
  with pytest.raises(ValueError, match=r"data.resize=\(32, 32\) must be .* \(64, 64\)"):
    acis.validate(tiny_config(**{"acis.image_size": 64}))  # data.resize left at 32
  with pytest.raises(ValueError, match="data.crop_size"):
    acis.validate(tiny_config(**{"data.crop_size": (16, 16)}))
  acis.validate(tiny_config(**{"acis.image_size": 64, "data.resize": (64, 64),
                               "data.crop_size": (64, 64)}))
  with pytest.raises(ValueError, match="acis.method"):
    acis.validate(tiny_config(**{"acis.method": "ppo"}))
  with pytest.raises(ValueError, match="rollout"):
    acis.validate(tiny_config(**{"acis.rollout": "loop"}))
  with pytest.raises(ValueError, match="acis.load_last"):
    acis.validate(tiny_config(**{"acis.load_last": "first"}))
  with pytest.raises(ValueError, match="acis.init_actor"):
    acis.validate(tiny_config(**{"acis.init_actor": "cvea"}))


def test_schedules():
  c = tiny_config(**{"total_steps": 90, "acis.seq_lengths": (5, 10, 15),
                     "acis.critic_warmup": 10, "acis.critic_per_actor": 3})
  assert [acis.seq_length(c, s) for s in (1, 30, 31, 60, 61, 90)] == [5, 5, 10, 10, 15, 15]
  actor = [s for s in range(1, 31) if acis.is_actor_step(c, s)]
  assert actor == [14, 18, 22, 26, 30]  # 10 critic-only steps, then every 4th
  assert acis.step_kind(c, 14) == ("actor", 5) and acis.step_kind(c, 61) == ("critic", 15)
  c.acis.method = "bl_trunc"
  assert acis.step_kind(c, 14) == ("bl_trunc", 5)
  c = tiny_config(**{"total_steps": 40, "optim.lr": 2e-4, "acis.cvae_lr_steps": (0.5, 0.75)})
  lr = acis.lr_schedule(c, c.acis.cvae_lr_steps)
  np.testing.assert_allclose([lr(s) for s in (0, 19, 20, 29, 30, 39)],
                             [2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-6], rtol=1e-6)
  # The final stage's optimizer: Adam's step on a constant gradient is ~lr,
  # ×0.1 from half of each group's own updates: BL-Trunc's actor over all 8
  # steps; AC's actor over its 3 actor steps (4, 6, 8), its critic over the other 5.
  def adam_steps(c, group, n):
    tx = acis.optimizer(c, (group,), kind="final")
    params = {group: {"w": np.zeros(3, np.float32)}}
    state, out = tx.init(params), []
    for _ in range(n):
      updates, state = tx.update(jax.tree.map(np.ones_like, params), state, params)
      out.append(float(-updates[group]["w"][0]))
    return out

  over = {"total_steps": 8, "optim.lr": 1e-3, "acis.final_lr_steps": (0.5,),
          "acis.weight_decay": 0.0, "acis.grad_clamp": 0.0}
  c = tiny_config("bl_trunc", **over)
  np.testing.assert_allclose(adam_steps(c, "actor", 8), [1e-3] * 4 + [1e-4] * 4, rtol=1e-3)
  c = tiny_config("ac", **over)
  assert [s for s in range(1, 9) if acis.is_actor_step(c, s)] == [4, 6, 8]
  f = c.acis.critic_lr_factor
  np.testing.assert_allclose(adam_steps(c, "actor", 3), [1e-3, 1e-4, 1e-4], rtol=1e-3)
  np.testing.assert_allclose(adam_steps(c, "critic", 5), [1e-3 * f] * 2 + [1e-4 * f] * 3,
                             rtol=1e-3)


def test_episode_sampling_switches(setup):
  """Mean actions by default; `critic_sample` samples the critic's episodes
  only; `sample_actions` both."""
  _, nets, _ = setup
  def sampled(**over):
    c = tiny_config(**over)
    return tuple(acis.grads_fn(nets, c, k, frozen={}, length=2).keywords["sample"]
                 for k in ("critic", "actor"))
  assert sampled() == (False, False)
  assert sampled(**{"acis.critic_sample": True}) == (True, False)
  assert sampled(**{"acis.sample_actions": True}) == (True, True)


def test_one_update_on_1_and_8_devices(setup):
  """The AC critic and actor steps, batch sharded over 8 fake devices vs 1,
  the matching per device shard (`parallel.per_shard`)."""
  assert jax.device_count() == 8
  c, nets, params = setup
  batch = synthetic_batch()
  frozen = {k: params[k] for k in ("preproc", "decoder")}
  trains = ("actor", "critic")
  tx = acis.optimizer(c, trains, kind="final")
  results = []
  for n in (1, 8):
    mesh = parallel.make_data_mesh(n)
    repl = parallel.replicated(mesh)
    trained = {k: params[k] for k in trains}
    state = jax.device_put(step_lib.init_state(trained, tx=tx, rng=jax.random.key(3)), repl)
    dev_batch = to_global_array(batch, parallel.batch_sharding(mesh))
    out = []
    for kind in ("critic", "actor"):
      grads_fn = acis.grads_fn(nets, c, kind, frozen=jax.device_put(frozen, repl), length=3,
                               mesh=mesh)
      update = jax.jit(step_lib.make_update(grads_fn, tx), out_shardings=(repl, repl, repl))
      # The matching loops run per device: no collective inside any loop.
      assert not collective_loops(update.lower(state, dev_batch).compile().as_text())
      new, metrics, finite = update(state, dev_batch)
      assert bool(finite)
      changed = {k for k in trains if any(np.any(a != b) for a, b in zip(
          jax.tree.leaves(new["params"][k]), jax.tree.leaves(state["params"][k])))}
      assert changed == {kind}  # the other group and its Adam state stay as they were
      state = new
      out.append(jax.device_get(metrics))
    results.append((out, jax.device_get(state["params"])))
  (m1, p1), (m8, p8) = results
  for a, b in zip(m1, m8):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6), p1, p8)


def test_scipy_matching_per_shard_gives_the_device_matchings_update(setup):
  """`acis.matching=host` (scipy through `pure_callback`) inside `per_shard`
  on 8 devices: the critic and BL-Trunc losses of the on-device matching."""
  c, nets, params = setup
  mesh = parallel.make_data_mesh(8)
  repl = parallel.replicated(mesh)
  frozen = jax.device_put({k: params[k] for k in ("preproc", "decoder")}, repl)
  batch = to_global_array(synthetic_batch(), parallel.batch_sharding(mesh))
  for kind in ("critic", "bl_trunc"):
    losses = []
    for matching in ("device", "host"):
      c2 = copy.deepcopy(c)
      c2.acis.matching = matching
      fn = acis.grads_fn(nets, c2, kind, frozen=frozen, length=3, mesh=mesh)
      trained = jax.device_put({k: params[k] for k in ("actor", "critic")}, repl)
      loss, _, _ = jax.jit(fn)(trained, batch, jax.random.key(0), 1)
      losses.append(float(loss))
    np.testing.assert_allclose(*losses, rtol=1e-5, err_msg=kind)


def _example(h, w, count, seed):
  rng = np.random.default_rng(seed)
  inst = np.zeros((h, w), np.int32)
  for k in range(1, count + 1):
    y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
    inst[y:y + 6, x:x + 6] = k
  return {"image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "instances": inst}


def test_evaluation_compiles_nothing_for_new_image_sizes_and_counts(setup):
  """Compiled programs stay mapped for the process's life: an evaluation that
  compiled per image shape ran a long run out of memory at its tenth."""
  c, nets, params = setup
  evaluate = acis_eval.episode_evaluator(nets, c)
  p = jax.device_get(params)
  evaluate(p, [_example(40, 52, 2, 0), _example(33, 30, 3, 1)])  # compiles the episode
  compiles = []

  def listen(event, duration, **kwargs):
    del duration, kwargs
    compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    metrics = evaluate(p, [_example(47, 61, 4, 2), _example(29, 35, 1, 3)])
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert np.isfinite(metrics["sbd"]) and compiles == []


def test_too_many_instances_is_a_clear_error(setup):
  c, _, _ = setup
  inst = np.arange(64, dtype=np.int32).reshape(8, 8)
  with pytest.raises(DataError, match="max_instances"):
    acis._check_counts([{"instances": inst, "name": "crowded"}], c,  # pylint: disable=protected-access
                       "train")


def test_kitti_config_reads_the_authors_layout(tmp_path):
  c = config_lib.load_config_file(CONFIGS / "acis_kitti.py", "ac,runlocal")
  with pytest.raises(DataError, match="config.data.root is empty"):
    acis.train_and_evaluate(c, str(tmp_path / "run"))
  kitti_tree(tmp_path / "kitti")
  c.data.root = str(tmp_path / "kitti")
  (train, val, info), _, _ = acis.prepare(c)
  assert info.has_instances and len(train) == len(val) == 2
  assert train[0]["image"].shape[:2] == tuple(c.data.resize)


def test_main_runs_every_stage_then_reuses_them(cvppp_root, tmp_path, capsys):
  """`configs/acis_cvppp.py:bl,runlocal` on the real CVPPP A1 copy: four stages,
  val metrics written; a second variant reuses the pre-training and the actor
  init via init_from and starts from that init's actor."""
  c = tiny_config("bl_trunc", **{"data.root": str(cvppp_root), "eval.max_examples": 2,
                                 "batch_size": 8})
  result = acis.train_and_evaluate(c, str(tmp_path / "a"))
  metrics = result.metrics
  assert result.workdir == tmp_path / "a" / "bl_trunc" and result.step == c.total_steps
  for key in ("sbd", "abs_dic", "dic", "mwcov", "mucov", "avg_fp", "avg_fn", "dice_gt_stop",
              "dice_gt_stop_mask_only", "abs_dic_lstm_only", "steps", "fg_coverage"):
    assert np.isfinite(metrics[f"val/{key}"]), key
  for stage in ("preproc", "cvae", "actor_init", "bl_trunc"):
    assert (tmp_path / "a" / stage / "metrics.jsonl").exists()
  assert list((tmp_path / "a" / "bl_trunc" / "panels").glob("*.png"))
  # bench/acis_steps.py reads the same stages: one table row per step.
  acis_steps.main(["--stages", *(str(tmp_path / "a" / s) for s in ("preproc", "cvae",
                                                                     "bl_trunc")),
                   "--config", f"{CONFIGS / 'acis_cvppp.py'}:bl_trunc,runlocal",
                   "--root", str(cvppp_root)])
  table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
           if line.startswith("| ") and line[2].isdigit()]
  assert [int(r[0]) for r in table] == list(range(c.acis.max_instances))
  assert all(0 <= float(v) <= 1 for r in table for v in r[2:])
  # --metrics: the split's Tab. 1 numbers, as the stage's own evaluation wrote
  # them on the same two val images.
  stages = [str(tmp_path / "a" / s) for s in ("preproc", "cvae", "bl_trunc")]
  spec = f"{CONFIGS / 'acis_cvppp.py'}:bl_trunc,runlocal"
  acis_steps.main(["--stages", *stages, "--config", spec, "--root", str(cvppp_root),
                   "--metrics", "--max-examples", "2"])
  rows = dict(line.split("|")[1:3] for line in capsys.readouterr().out.splitlines()
              if line.startswith("| ") and not line[2].isdigit())
  for key in ("sbd", "abs_dic", "mwcov", "fg_coverage"):
    assert float(rows[f" {key} "]) == pytest.approx(metrics[f"val/{key}"], abs=1e-4), key
  # --set reaches the config (3 episode steps, one row each); a typo fails.
  acis_steps.main(["--stages", *stages, "--config", spec, "--root", str(cvppp_root),
                   "--max-examples", "1", "--set", "acis.max_instances=3"])
  assert [line[2] for line in capsys.readouterr().out.splitlines()
          if line.startswith("| ") and line[2].isdigit()] == ["0", "1", "2"]
  with pytest.raises(KeyError, match="eval_blokcs"):
    acis_steps.main(["--stages", *stages, "--config", spec, "--set", "acis.eval_blokcs=()"])
  c2 = tiny_config("ac", **{"data.root": str(cvppp_root), "eval.max_examples": 1,
                            "batch_size": 8, "init_from": str(tmp_path / "a")})
  acis.train_and_evaluate(c2, str(tmp_path / "b"))
  assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["ac"]
  records = [json.loads(line) for line in
             (tmp_path / "b" / "ac" / "metrics.jsonl").read_text().splitlines()]
  assert any("train/critic_loss" in r for r in records)
  assert any("train/kl" in r for r in records)  # an actor step ran after warm-up


def test_actor_init_starts_fresh_and_the_variants_start_from_it(cvppp_root, tmp_path,
                                                                 monkeypatch):
  """The init stage's actor is the fresh one (not the cVAE's encoder) unless
  `acis.init_actor='cvae'`; the final stage starts from the init's actor."""
  seen = {}
  train = acis.loop.Run.train

  def spy(run, task):
    seen[pathlib.Path(run.workdir).name] = jax.device_get(task.params)
    return train(run, task)

  monkeypatch.setattr(acis.loop.Run, "train", spy)
  c = tiny_config("bl_trunc", **{"data.root": str(cvppp_root), "eval.max_examples": 1,
                                 "eval.panel_examples": 0, "batch_size": 8})
  shared = acis.prepare(c)
  fresh = shared[2]["actor"]
  acis.stages.run_stages(c, tmp_path, acis.stage_plan(c, shared))
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(  # noqa: E731
      jax.tree.leaves(a), jax.tree.leaves(b)))
  cvae_actor = ckpt_lib.load_params(tmp_path / "cvae")["actor"]
  init_actor = ckpt_lib.load_params(tmp_path / "actor_init")["actor"]
  assert same(seen["actor_init"]["actor"], fresh) and not same(fresh, cvae_actor)
  assert same(seen["bl_trunc"]["actor"], init_actor)
  c.acis.init_actor = "cvae"
  acis.train_stage(c, tmp_path / "init_from_cvae",
                   {"cvae": acis.stages.reused(tmp_path / "cvae")}, kind="init",
                   shared=shared)
  assert same(seen["init_from_cvae"]["actor"], cvae_actor)


def test_cvppp_config_reads_any_instance_folder_of_varying_sizes(tmp_path):
  """Only --config.data.root changes: the folder layout with instance-id PNGs
  of different sizes, resized to S × S for training, val kept at its own size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, sizes in (("train", ((40, 60), (33, 47))), ("val", ((50, 30),))):
    for i, (h, w) in enumerate(sizes):
      ids = np.zeros((h, w), np.uint8)
      ids[3:12, 4:15], ids[15:25, 20:28] = 1, 2
      for kind, array in (("images", rng.integers(0, 255, (h, w, 3), dtype=np.uint8)),
                          ("labels", ids)):
        (tmp_path / kind / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(tmp_path / kind / split / f"x{i}.png")
  c = tiny_config("ac", **{"data.root": str(tmp_path)})
  (train, val, _), _, _ = acis.prepare(c)
  s = c.acis.image_size
  assert [train[i]["instances"].shape for i in range(2)] == [(s, s)] * 2
  assert val[0]["instances"].shape == (50, 30)
  assert set(np.unique(train[1]["instances"])) == {0, 1, 2}
