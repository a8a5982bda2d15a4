"""The one stage runner: order, per-stage configs, reuse of finished stages
(own or another run's), the final stage always run."""
import json
import pathlib

import jax.numpy as jnp

from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg.trainers import loop
from jaxseg.trainers import stages


def _fake_train(calls):
  """A stage that 'trains' by writing a checkpoint of total_steps and a val record."""

  def train(config, workdir, earlier):
    workdir = pathlib.Path(workdir)
    calls.append((workdir.name, config.total_steps, config.init_from, sorted(earlier)))
    mgr = ckpt_lib.make_manager(workdir, max_to_keep=1, save_every=1)
    if mgr.latest_step() != config.total_steps:  # a finished final stage is only evaluated
      state = {"step": jnp.int32(config.total_steps), "params": {"w": jnp.ones(2)}}
      ckpt_lib.save(mgr, config.total_steps, state, force=True)
      mgr.wait_until_finished()
    mgr.close()
    (workdir / "metrics.jsonl").write_text(json.dumps(
        {"step": config.total_steps, "val/score": float(config.total_steps)}) + "\n")
    return loop.Result(workdir=workdir, step=config.total_steps,
                       metrics={"val/score": float(config.total_steps)})

  return train


def _plan(train):
  return [stages.Stage("first", train, {"init_from": ""}, steps=3),
          stages.Stage("second", train, lambda done: {"init_from": str(done["first"].workdir)},
                       steps=4),
          stages.Stage("last", train, final=True)]


def test_runs_in_order_with_each_stage_config_then_reuses(tmp_path):
  c = config_lib.default_config()
  c.total_steps, c.eval_every, c.init_from = 5, 100, "/elsewhere"
  calls = []
  done = stages.run_stages(c, tmp_path, _plan(_fake_train(calls)))
  assert calls == [("first", 3, "", []), ("second", 4, str(tmp_path / "first"), ["first"]),
                   ("last", 5, "/elsewhere", ["first", "second"])]
  assert list(done) == ["first", "second", "last"] and done["last"].step == 5
  calls.clear()
  done = stages.run_stages(c, tmp_path, _plan(_fake_train(calls)))
  assert [name for name, *_ in calls] == ["last"]  # finished stages reused, the final one run
  assert done["first"].metrics == {"val/score": 3.0} and done["first"].params is None
  assert done["second"].workdir == tmp_path / "second" and done["second"].step == 4


def test_reuses_another_runs_finished_stages_and_retrains_short_ones(tmp_path):
  c = config_lib.default_config()
  c.total_steps = 5
  stages.run_stages(c, tmp_path / "a", _plan(_fake_train([])))
  calls = []
  plan = _plan(_fake_train(calls))
  plan[1] = stages.Stage("second", plan[1].train, steps=6)  # longer than what "a" holds
  done = stages.run_stages(c, tmp_path / "b", plan, reuse_from=tmp_path / "a")
  assert [name for name, *_ in calls] == ["second", "last"]
  assert done["first"].workdir == tmp_path / "a" / "first"
  assert not (tmp_path / "b" / "first").exists()
  assert stages.finished(tmp_path / "b" / "second", 6)
  assert not stages.finished(tmp_path / "b" / "second", 7)
  assert not stages.finished(tmp_path / "missing", 1)
