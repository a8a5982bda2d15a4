"""bench/harness.py: which (row, seed) runs `run_rows` trains and reuses."""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import harness  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _run(out, calls, **kw):
  def run_row(row, seed, workdir):
    calls.append((row, seed))
    return {"row": row, "seed": seed}
  return harness.run_rows(["a", "b"], run_row, lambda results: str(sorted(results)),
                          out=out, summary_only=False, seeds=lambda r: 3, **kw)[0]


def test_first_seed_runs_only_the_later_seeds_and_caches_them(tmp_path):
  calls = []
  results = _run(tmp_path, calls, first_seed=2)
  assert calls == [("a", 2), ("b", 2)]
  assert [r["seed"] for r in results["a"]] == [2]
  assert json.loads((tmp_path / "a_seed2" / "run.json").read_text())["seed"] == 2
  calls.clear()
  results = _run(tmp_path, calls)  # all seeds: seed 2 is reused, 0 and 1 are trained
  assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
  assert [r["seed"] for r in results["b"]] == [0, 1, 2]
