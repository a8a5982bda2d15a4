"""Short fixed-seed runs of every method through `python -m jaxseg.main`, and
their last logged metrics, to check that a change leaves behaviour as it was.

    python bench/fixed_seed_runs.py --out /tmp/runs_before        # on the old tree
    python bench/fixed_seed_runs.py --out /tmp/runs_after \
        --compare /tmp/runs_before/metrics.json                   # on the new tree
    python bench/fixed_seed_runs.py --out /tmp/restore --restore /tmp/runs_before

Rows: PSL, RSS pixel level, RSS image level (PSR multi + PSD), CiSS-Net (with
its PSL trunk stage) and ACIS BL-Trunc and AC at the `cpu` scale with tiny
pre-training stages. Each row runs in its own process, as a user runs it, so
the script works on any revision of the tree (`--repo`). `--restore DIR`
re-runs the rows on the finished work dirs of an earlier run: every stage
restores its checkpoint and is evaluated once, so the val metrics must equal
those written before. `--compare` prints the largest relative difference of
each row's last train and val metrics and exits non-zero above `--rtol`.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
STEPS = 50
COMMON = [f"--config.total_steps={STEPS}", "--config.log_every=10",
          f"--config.eval_every={STEPS}", "--config.checkpoint_every=25",
          "--config.eval.max_examples=4", "--config.eval.panel_examples=0"]
EMBEDDED = ["--config.rss.compare_psl=False"]
CISS = [f"--config.data.root={SHARED / 'camvid'}", "--config.ciss.trunk_steps=10"]
ACIS = [f"--config.data.root={SHARED / 'cvppp_a1'}", "--config.acis.preproc_steps=10",
        "--config.acis.cvae_steps=10", "--config.acis.critic_warmup=20",
        "--config.acis.critic_per_actor=2", "--config.acis.seq_lengths=(2,3)",
        "--config.acis.eval_blocks=()"]

# name -> (config argument, extra flags, the stage dirs whose metrics are compared)
ROWS = {
    "psl": ("configs/psl_embedded.py:runlocal", [], ["."]),
    "rss_pixel": ("configs/rss_embedded.py:pixel,runlocal", EMBEDDED, ["."]),
    "rss_image": ("configs/rss_embedded.py:psr_multi_psd,runlocal", EMBEDDED, ["."]),
    "ciss": ("configs/ciss_camvid.py:ciss,runlocal", CISS, ["trunk", "ciss"]),
    "acis_bl_trunc": ("configs/acis_cvppp.py:bl_trunc,cpu", ACIS,
                      ["preproc", "cvae", "bl_trunc"]),
    "acis_ac": ("configs/acis_cvppp.py:ac,cpu", ACIS, ["preproc", "cvae", "ac"]),
}
SKIP = {"train/steps_per_s", "train/images_per_s", "val/seconds"}


def last_metrics(path: pathlib.Path) -> dict[str, float]:
  """The last value of every key in a run's metrics.jsonl (timings dropped)."""
  out = {}
  for line in (path / "metrics.jsonl").read_text().splitlines():
    rec = json.loads(line)
    out.update({k: v for k, v in rec.items() if k != "step" and k not in SKIP})
  return out


def run_row(name: str, repo: pathlib.Path, workdir: pathlib.Path, log: pathlib.Path):
  config, extra, _ = ROWS[name]
  cmd = [sys.executable, "-m", "jaxseg.main", f"--config={repo / config}",
         f"--workdir={workdir}", *COMMON, *extra]
  env = {**os.environ, "PYTHONPATH": str(repo)}
  t0 = time.time()
  with open(log, "w") as f:
    rc = subprocess.call(cmd, cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT)
  if rc:
    raise SystemExit(f"row {name} failed (exit {rc}); see {log}")
  return time.time() - t0


def compare(before: dict, after: dict, rtol: float) -> bool:
  ok = True
  print("| row | stage | keys | max rel diff | worst key |\n|---|---|---|---|---|")
  for row, stages in after.items():
    for stage, m in stages.items():
      b = before.get(row, {}).get(stage)
      if b is None:
        print(f"| {row} | {stage} | - | missing before | |")
        ok = False
        continue
      keys = sorted(set(b) & set(m))
      diffs = {k: abs(m[k] - b[k]) / max(abs(b[k]), 1e-6) for k in keys}
      worst = max(diffs, key=diffs.get) if diffs else "-"
      d = diffs.get(worst, 0.0)
      missing = sorted(set(b) ^ set(m))
      ok &= d <= rtol and not missing
      print(f"| {row} | {stage} | {len(keys)} | {d:.2e} | {worst}"
            f"{' (keys differ: ' + ', '.join(missing) + ')' if missing else ''} |")
  return ok


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", type=pathlib.Path, required=True)
  p.add_argument("--repo", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[1])
  p.add_argument("--rows", default=",".join(ROWS))
  p.add_argument("--restore", type=pathlib.Path, default=None,
                 help="re-run on these finished work dirs (their checkpoints restore)")
  p.add_argument("--compare", type=pathlib.Path, default=None)
  p.add_argument("--rtol", type=float, default=1e-4)
  args = p.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  results = {}
  for name in args.rows.split(","):
    workdir = (args.restore or args.out) / name
    before = ({s: last_metrics(workdir / s) for s in ROWS[name][2]} if args.restore else None)
    secs = run_row(name, args.repo.resolve(), workdir, args.out / f"{name}.log")
    results[name] = {s: last_metrics(workdir / s) for s in ROWS[name][2]}
    if before is not None:  # the restored run appended one evaluation
      results[name] = {s: {**before[s], **{k: v for k, v in results[name][s].items()
                                           if k.startswith("val/")}}
                       for s in results[name]}
    print(f"{name}: {secs:.0f} s", flush=True)
  (args.out / "metrics.json").write_text(json.dumps(results, indent=1, sort_keys=True))
  ref = args.compare or (args.restore / "metrics.json" if args.restore else None)
  if ref is not None and not compare(json.loads(ref.read_text()), results, args.rtol):
    raise SystemExit("metrics differ")


if __name__ == "__main__":
  main()
