"""Runs survive what a careful user does to them: SIGTERM, kill -9 around
saves, a divergence, a changed config on resume, a cut-short metrics log, an
all-ignore training set."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxseg import checkpoint as ckpt_lib
from jaxseg.data.errors import DataError
from jaxseg.trainers import cluster, psl, resume, semantic
from jaxseg.trainers import writer as writer_lib

from .conftest import kill_group, write_folder_dataset

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _records(workdir):
  return writer_lib.read_metrics(workdir)


def test_sigterm_saves_at_the_next_step_and_the_rerun_ends_like_an_uninterrupted_run(
    data_dir, tiny_config, tmp_path, monkeypatch):
  c = dict(total_steps=6, log_every=1, checkpoint_every=6)
  straight = psl.train_and_evaluate(tiny_config(data_dir, **c), str(tmp_path / "a"))
  write = writer_lib.MetricWriter.write

  def write_then_signal(self, step, metrics):
    write(self, step, metrics)
    if step == 3 and "train/loss" in metrics:
      os.kill(os.getpid(), signal.SIGTERM)  # what a preempted VM gets

  monkeypatch.setattr(writer_lib.MetricWriter, "write", write_then_signal)
  with pytest.raises(cluster.Preempted, match="step 3"):
    psl.train_and_evaluate(tiny_config(data_dir, **c), str(tmp_path / "b"))
  assert ckpt_lib.latest_step(tmp_path / "b") == 3
  monkeypatch.setattr(writer_lib.MetricWriter, "write", write)
  resumed = psl.train_and_evaluate(tiny_config(data_dir, **c), str(tmp_path / "b"))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               straight.params, resumed.params)
  assert resumed.metrics["val/miou"] == pytest.approx(straight.metrics["val/miou"], abs=1e-6)
  steps = [r["step"] for r in _records(tmp_path / "b") if "train/loss" in r]
  assert steps == [1, 2, 3, 4, 5, 6]  # one record per step, none replayed twice


def test_repeated_kill_9_around_saves_always_resumes_cleanly(data_dir, tmp_path):
  """Saves every step; SIGKILL at random moments, twice; every rerun
  resumes (never picks up a half-written checkpoint) and the last one ends."""
  work = tmp_path / "run"
  cmd = [sys.executable, "-m", "jaxseg.main", "--config=configs/psl_embedded.py:runlocal",
         f"--workdir={work}", f"--config.data.data_dir={data_dir}", "--config.batch_size=8",
         "--config.total_steps=8", "--config.log_every=1", "--config.checkpoint_every=1",
         "--config.eval_every=8"]
  rng = random.Random(0)
  resumed_from = []
  for attempt in range(3):
    log = open(tmp_path / f"attempt{attempt}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
      if attempt < 2:
        seen = max((r["step"] for r in _records(work)), default=0)
        deadline = time.time() + 240
        while max((r["step"] for r in _records(work) if "train/loss" in r), default=0) <= seen:
          if proc.poll() is not None:  # only a finished run may exit by itself
            assert proc.returncode == 0, (tmp_path / f"attempt{attempt}.log").read_text()[-3000:]
            break
          assert time.time() < deadline
          time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        kill_group(proc)
        proc.wait(timeout=30)
      else:
        assert proc.wait(timeout=300) == 0, (tmp_path / "attempt2.log").read_text()[-3000:]
    finally:
      kill_group(proc)
      log.close()
    text = (tmp_path / f"attempt{attempt}.log").read_text()
    resumed_from += [int(line.split("resumed from step ")[1].split()[0])
                     for line in text.splitlines() if "resumed from step" in line]
  assert len(resumed_from) >= 1 and resumed_from == sorted(resumed_from)
  assert ckpt_lib.latest_step(work) == 8
  steps = [r["step"] for r in _records(work) if "train/loss" in r]
  assert steps == list(range(1, 9))
  assert all(np.isfinite(r["train/loss"]) for r in _records(work) if "train/loss" in r)
  final = (tmp_path / "attempt2.log").read_text()
  assert "tensorboard --logdir" in final and "config:\n" not in final


def test_divergence_moves_spoilt_checkpoints_aside_and_the_rerun_resumes_sanely(
    data_dir, tiny_config, tmp_path):
  c = dict(total_steps=4, checkpoint_every=1, **{"optim.lr": 1e30})
  with pytest.raises(FloatingPointError, match=r"divergence began at step 2.*last good "
                     r"checkpoint is step 1"):
    psl.train_and_evaluate(tiny_config(data_dir, **c), str(tmp_path))
  assert ckpt_lib.latest_step(tmp_path) == 1
  assert (tmp_path / "checkpoints_diverged" / "2").is_dir()
  loaded = ckpt_lib.load_params(tmp_path)
  assert max(float(np.abs(x).max()) for x in jax.tree.leaves(loaded)) < 100
  c["optim.lr"] = 1e-3  # as the message suggests
  run = psl.train_and_evaluate(tiny_config(data_dir, **c), str(tmp_path))
  assert run.step == 4 and np.isfinite(run.metrics["val/miou"])


def test_a_failed_final_evaluation_loses_no_training_and_the_rerun_evaluates(
    data_dir, tiny_config, tmp_path, monkeypatch):
  """The last step is saved before it is evaluated (an evaluation that ran out
  of memory once lost a long run's last 400 steps)."""
  c = dict(total_steps=4, log_every=1, checkpoint_every=3, eval_every=4)
  evaluate = semantic.evaluate

  def out_of_memory(*args, **kwargs):
    raise MemoryError("evaluation")

  monkeypatch.setattr(semantic, "evaluate", out_of_memory)
  with pytest.raises(MemoryError):
    psl.train_and_evaluate(tiny_config(data_dir, **c), str(tmp_path))
  assert ckpt_lib.latest_step(tmp_path) == 4
  monkeypatch.setattr(semantic, "evaluate", evaluate)
  run = psl.train_and_evaluate(tiny_config(data_dir, **c), str(tmp_path))
  assert run.step == 4 and np.isfinite(run.metrics["val/miou"])
  steps = [r["step"] for r in _records(tmp_path) if "train/loss" in r]
  assert steps == [1, 2, 3, 4]  # nothing trained again


def test_divergence_onset():
  healthy = {s: (10.0, 1e-3) for s in range(1, 6)}
  assert resume.divergence_onset(healthy, 6) is None  # a NaN out of nowhere
  assert resume.divergence_onset({**healthy, 4: (10.0, 5.0)}, 6) == (4, 4)
  assert resume.divergence_onset({**healthy, 4: (1e5, 1e-3)}, 6) == (4, 3)


def test_resume_names_changed_fields_refuses_a_state_that_does_not_fit_and_keeps_a_clean_log(
    data_dir, tiny_config, tmp_path, caplog):
  psl.train_and_evaluate(tiny_config(data_dir, total_steps=3), str(tmp_path))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["fpn_dim"] == 16 and saved["total_steps"] == 3
  with (tmp_path / "metrics.jsonl").open("a") as f:
    f.write('{"step": 4, "train/lo')  # a crash mid-write by an older writer
  with pytest.raises(ckpt_lib.CheckpointError, match=r"does not fit.*model\.fpn_dim: 16 -> 32"):
    psl.train_and_evaluate(tiny_config(data_dir, total_steps=6, **{"model.fpn_dim": 32}),
                           str(tmp_path))
  with caplog.at_level("WARNING"):
    run = psl.train_and_evaluate(tiny_config(data_dir, total_steps=6, batch_size=16),
                                 str(tmp_path))
  assert "resumes at step 3" in caplog.text and "batch_size: 8 -> 16" in caplog.text
  assert run.step == 6
  psl.train_and_evaluate(tiny_config(data_dir, total_steps=6, batch_size=16),
                         str(tmp_path))  # finished: evaluated again, not logged twice
  records = _records(tmp_path)
  keyed = [(r["step"], tuple(sorted(r))) for r in records]
  assert len(keyed) == len(set(keyed))
  assert [r["step"] for r in records if "val/miou" in r] == [3, 6]
  assert (tmp_path / "learning_curve.png").exists()


def test_writer_replaces_records_and_drops_steps_past_the_resumed_state(tmp_path):
  w = writer_lib.MetricWriter(tmp_path, enabled=True)
  for s in (1, 2, 3):
    w.write(s, {"train/loss": float(s)})
  w.write(3, {"val/miou": 0.5})
  w.write(3, {"val/miou": 0.6})
  w.close()
  assert _records(tmp_path) == [{"step": 1, "train/loss": 1.0}, {"step": 2, "train/loss": 2.0},
                                {"step": 3, "train/loss": 3.0}, {"step": 3, "val/miou": 0.6}]
  w = writer_lib.MetricWriter(tmp_path, enabled=True, resume_step=2)
  w.close()
  assert [r["step"] for r in _records(tmp_path)] == [1, 2]


def test_an_all_ignore_training_set_is_a_data_error(data_dir, tiny_config, tmp_path):
  root = tmp_path / "folder"
  write_folder_dataset(root, lambda rng: np.full((64, 64), 255, np.uint8), count=3,
                       classes="0 a\n1 b\n")
  c = tiny_config(data_dir, **{"data.name": "folder", "data.root": str(root)})
  with pytest.raises(DataError, match="train split has no labelled pixel"):
    psl.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_gs_workdirs_go_through_epath(tmp_path, monkeypatch):
  """metrics.jsonl, panels, curves and the TensorBoard logdir on a gs:// path
  (etils' mock backend maps it under the cwd; the path must stay gs://)."""
  from etils import epath
  from etils.epath import testing as epath_testing
  import tensorboardX
  from jaxseg import plots

  logdirs = []

  class FakeTB:
    def __init__(self, logdir):
      logdirs.append(logdir)

    def add_scalar(self, *a):
      pass

    def close(self):
      pass

  monkeypatch.setattr(tensorboardX, "SummaryWriter", FakeTB)
  monkeypatch.chdir(tmp_path)
  with epath_testing.mock_epath():
    work = epath.Path("gs://bucket/run")
    w = writer_lib.MetricWriter(work, enabled=True)
    w.write(1, {"train/loss": 1.0})
    w.close()
    assert writer_lib.read_metrics(work) == [{"step": 1, "train/loss": 1.0}]
    plots.save_png(work / "panels" / "p.png", np.zeros((4, 4, 3), np.uint8))
    plots.learning_curves({"run": writer_lib.read_metrics(work)}, work / "curve.png",
                          keys=("train/loss",))
    assert (work / "panels" / "p.png").exists() and (work / "curve.png").exists()
  assert logdirs == ["gs://bucket/run/tensorboard"]
