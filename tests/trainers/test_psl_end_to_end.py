"""Train a few steps, checkpoint, resume, cold start, NaN stop, sharded step."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import checkpoint as ckpt_lib
from jaxseg import optim
from jaxseg.trainers import psl, semantic

from .conftest import write_folder_dataset


def params_of(run):
  return run.params


def test_train_checkpoint_eval_outputs(data_dir, tiny_config, tmp_path):
  run = psl.train_and_evaluate(tiny_config(data_dir), str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if "train/loss" in r]
  val = [r for r in records if "val/miou" in r]
  assert [r["step"] for r in train] == [2, 4, 6]
  assert all(np.isfinite(r["train/loss"]) for r in train)
  assert val and val[-1]["step"] == 6 and 0.0 <= val[-1]["val/miou"] <= 1.0
  assert any(k.startswith("val/iou/") for k in val[-1])
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["3", "6"]
  assert (tmp_path / "panels" / "step_000006.png").exists()
  assert (tmp_path / "learning_curve.png").exists()
  assert list((tmp_path / "tensorboard").iterdir())
  assert run.step == 6 and run.metrics["val/miou"] == val[-1]["val/miou"]


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(data_dir, tiny_config, tmp_path):
  psl.train_and_evaluate(tiny_config(data_dir, total_steps=3), str(tmp_path))

  def nan_loss(config, **kw):
    inner = psl.make_loss(config, **kw)
    return lambda p, b, r, s: jax.tree.map(lambda x: x * jnp.nan, inner(p, b, r, s))

  with pytest.raises(FloatingPointError, match=r"step 4.*last good checkpoint is step 3"):
    semantic.train(tiny_config(data_dir), str(tmp_path), make_loss=nan_loss)
  loaded = ckpt_lib.load_params(tmp_path)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(loaded))
  again = psl.train_and_evaluate(tiny_config(data_dir, total_steps=3), str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params_of(again), loaded)


def test_cold_start_reinitialises_only_the_classifier(data_dir, tiny_config, tmp_path):
  src = psl.train_and_evaluate(tiny_config(data_dir, total_steps=3), str(tmp_path / "src"))
  # A folder dataset with a different number of classes.
  root = tmp_path / "folder"
  write_folder_dataset(root, lambda rng: rng.integers(0, 3, (64, 64), dtype=np.uint8), count=4,
                       classes="0 a\n1 b\n2 c\n")
  c = tiny_config(data_dir, total_steps=1, **{"data.name": "folder", "data.root": str(root),
                                              "init_from": str(tmp_path / "src"),
                                              "optim.lr": 0.0})
  dst = psl.train_and_evaluate(c, str(tmp_path / "dst"))
  before = {optim.param_path(p): v for p, v in jax.tree_util.tree_leaves_with_path(params_of(src))}
  for path, v in jax.tree_util.tree_leaves_with_path(params_of(dst)):
    name = optim.param_path(path)
    if "classifier" in name:
      assert v.shape[-1:] == (3,) or v.shape == (3,)
    else:
      np.testing.assert_array_equal(v, before[name], err_msg=name)


def test_sharded_step_matches_single_device(data_dir, tiny_config, one_step_on_1_and_8_devices):
  results = [(float(m["train/loss"]), p) for m, p in
             one_step_on_1_and_8_devices(tiny_config(data_dir), psl.make_loss)]
  assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               results[0][1], results[1][1])


def test_weight_average_is_what_the_run_evaluates_and_hands_on(data_dir, tiny_config, tmp_path):
  """With `optim.ema_decay` the state keeps `ema_params`; the Result (and so the
  next stage, via `load_params`) gets the average, not the last iterate."""
  run = psl.train_and_evaluate(tiny_config(data_dir, **{"optim.ema_decay": 0.5}), str(tmp_path))
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=2, save_every=3)
  meta = ckpt_lib.state_metadata(mgr, 6)
  assert any(k.startswith("ema_params") for k in meta)
  loaded = ckpt_lib.load_params(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, run.params, loaded)
  plain = psl.train_and_evaluate(tiny_config(data_dir), str(tmp_path / "plain"))
  differ = [not np.array_equal(a, b) for a, b in
            zip(jax.tree.leaves(run.params), jax.tree.leaves(plain.params))]
  assert any(differ)  # the same run without the average ends elsewhere
  with pytest.raises(ValueError, match=r"optim.ema_decay=1.0 must be in \[0, 1\)"):
    psl.train_and_evaluate(tiny_config(data_dir, **{"optim.ema_decay": 1.0}), str(tmp_path / "x"))


def test_cold_start_stage_loads_the_backbone_and_is_shared_between_runs(
    data_dir, tiny_config, tmp_path):
  """`cold_start.root` trains PSL on another dataset first (stage `cold`, here a
  shared `cold_start.workdir`); `load="backbone"` starts only the backbone from
  it. A second run finds the finished stage and reuses it; a run whose stage
  would be trained otherwise (another lr) refuses, naming the field."""
  root = tmp_path / "other"
  write_folder_dataset(root, lambda rng: rng.integers(0, 3, (64, 64), dtype=np.uint8), count=4,
                       classes="0 a\n1 b\n2 c\n")
  shared = tmp_path / "pretrain"
  fields = {"cold_start.name": "folder", "cold_start.root": str(root),
            "cold_start.steps": 2, "cold_start.load": "backbone", "cold_start.lr": 1e-3,
            "cold_start.workdir": str(shared), "optim.lr": 0.0, "total_steps": 1}
  run = psl.train_and_evaluate(tiny_config(data_dir, **fields), str(tmp_path / "a"))
  assert run.workdir == tmp_path / "a" / "psl" and (shared / "checkpoints").exists()
  assert not (tmp_path / "a" / "cold").exists()
  cold = ckpt_lib.load_params(shared)
  fresh = psl.train_and_evaluate(tiny_config(data_dir, **{"optim.lr": 0.0, "total_steps": 1}),
                                 str(tmp_path / "fresh"))
  for group, v in params_of(run).items():
    want = cold[group] if group == "backbone" else fresh.params[group]
    jax.tree.map(np.testing.assert_array_equal, v, want)
  saved = sorted((shared / "checkpoints").iterdir())
  again = psl.train_and_evaluate(tiny_config(data_dir, **fields), str(tmp_path / "b"))
  assert sorted((shared / "checkpoints").iterdir()) == saved  # reused, not retrained
  jax.tree.map(np.testing.assert_array_equal, params_of(again)["backbone"], cold["backbone"])
  with pytest.raises(ValueError, match=r"stage cold.*optim.lr: 0.001 -> 0.01"):
    psl.train_and_evaluate(tiny_config(data_dir, **{**fields, "cold_start.lr": 1e-2}),
                           str(tmp_path / "c"))
