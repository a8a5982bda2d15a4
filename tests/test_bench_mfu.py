"""bench/mfu.py: model FLOPs, device peaks and one smoke row; bench/train_step.py's
interleaved rounds."""
import json
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import mfu  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_model_flops_of_a_matmul():
  x = jnp.ones((64, 96))
  w = jnp.ones((96, 32))
  assert mfu.model_flops(jax.jit(lambda a, b: a @ b).lower(x, w)) == 2 * 64 * 96 * 32


def test_unrolled_rollout_counts_every_step():
  """XLA counts a scan body once: the CiSS step's FLOPs need the unrolled lowering."""
  row = mfu.row_for("ciss", "runlocal")
  c = mfu.load_config(row.config)
  c.ciss.rollout = "scan"
  c.ciss.steps = 4
  flops = {}
  for key, cfg in (("scan", c), ("unroll", mfu._unrolled(c))):  # pylint: disable=protected-access
    update, state, data = mfu.build("ciss", cfg, row, 1)
    flops[key] = mfu.model_flops(update.lower(state, data))
  # base net once + T context/bias steps: 4 steps counted as 1 lose well over 30 %
  assert flops["unroll"] > 1.3 * flops["scan"]


def test_device_peaks():
  h200 = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H200")
  assert mfu.device_peak(h200)[0] == pytest.approx(494.7e12)
  pcie = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 PCIe")
  assert mfu.device_peak(pcie)[0] == pytest.approx(378e12)
  odd = types.SimpleNamespace(platform="gpu", device_kind="Some GPU")
  assert mfu.device_peak(odd)[0] is None
  assert mfu.device_peak(odd, 10.0)[0] == pytest.approx(10e12)
  peak, basis = mfu.device_peak(jax.devices("cpu")[0])
  assert peak > 1e9 and "cores" in basis


def test_smoke_row_prints_mfu(tmp_path, monkeypatch, capsys):
  out = tmp_path / "mfu.json"
  monkeypatch.setattr(sys, "argv", ["mfu.py", "--scale", "runlocal", "--only", "acis_critic",
                                    "--steps", "1", "--json", str(out)])
  mfu.main()
  printed = capsys.readouterr().out
  assert "acis_critic" in printed and "%" in printed
  record = json.loads(out.read_text())
  (row,) = record["rows"]
  assert row["gflops_per_step"] > 0 and 0 < row["mfu"] < 1
  assert record["peak_flops"] > 0 and row["images_per_s"] > 0


def test_interleaved_rounds_take_turns_with_an_untimed_step_each():
  """bench/train_step.interleaved_ms: per round every contender runs one
  untimed then one timed step, in turn; a lone contender runs timed steps only."""
  import train_step  # pylint: disable=g-import-not-at-top
  calls = []
  steps = [lambda: calls.append("a"), lambda: calls.append("b")]
  assert len(train_step.interleaved_ms(steps, rounds=3)) == 2
  assert "".join(calls) == "aabb" * 3
  calls.clear()
  train_step.interleaved_ms(steps[:1], rounds=3)
  assert calls == ["a"] * 3
