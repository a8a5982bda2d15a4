"""Several processes against one on this machine, through `launch/local_cpu.sh`.

    python bench/multiprocess.py equality [--methods psl rss ciss acis]
    python bench/multiprocess.py scaling [--processes 1 2 4] [--steps 40]

`equality`: every method's `:runlocal` config as 1 process × 2 CPU devices and
as 2 processes × 1 device (the same 2 devices' worth of work, the same global
batch): the final val metrics of every stage and the last logged train loss,
side by side, with the largest difference. `scaling`: `psl_camvid.py` (its
full model, `--steps` steps) on P processes × 1 device each, global batch 8:
images/s and step time from the metrics log (the first log window, which
holds the compilation, is left out).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "local_cpu.sh"
METHODS = {
    "psl": ("configs/psl_camvid.py:runlocal", ["--config.batch_size=4"]),
    "rss": ("configs/rss_camvid.py:psr_class,runlocal", ["--config.batch_size=4"]),
    "ciss": ("configs/ciss_camvid.py:ciss,runlocal", ["--config.batch_size=4"]),
    "acis": ("configs/acis_cvppp.py:ac,runlocal", ["--config.batch_size=4"]),
}


def launch(n: int, devices: int, workdir: pathlib.Path, args: list[str]) -> None:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(CPU_DEVICES=str(devices), PYTHON=sys.executable, LOG_DIR=str(workdir.parent))
  with open(workdir.parent / f"{workdir.name}.log", "w") as log:
    rc = subprocess.run([str(LAUNCH), str(n), *args, f"--workdir={workdir}"], cwd=ROOT,
                        env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
  if rc:
    raise SystemExit(f"{workdir}: exit {rc}; see {workdir.parent / (workdir.name + '.log')}")


def records(path: pathlib.Path) -> list[dict]:
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def finals(workdir: pathlib.Path) -> dict[str, float]:
  """stage/key -> final value: every stage's last val metrics and train loss."""
  out = {}
  for path in sorted(workdir.rglob("metrics.jsonl")):
    stage = str(path.parent.relative_to(workdir)) or "."
    rows = records(path)
    val = [r for r in rows if any(k.startswith("val/") for k in r)]
    train = [r for r in rows if "train/loss" in r]
    for k, v in (val[-1] if val else {}).items():
      if k.startswith("val/") and "/iou/" not in k and k != "val/seconds" and v is not None:
        out[f"{stage} {k}"] = v
    if train:
      out[f"{stage} train/loss@{train[-1]['step']}"] = train[-1]["train/loss"]
  return out


def equality(methods, out: pathlib.Path) -> str:
  lines = ["| method | stage and metric | 1 process × 2 | 2 processes × 1 | difference |",
           "|---|---|---|---|---|"]
  for m in methods:
    config, extra = METHODS[m]
    args = [f"--config={config}", *extra]
    one, two = out / f"{m}_1x2", out / f"{m}_2x1"
    launch(1, 2, one, args)
    launch(2, 1, two, args)
    a, b = finals(one), finals(two)
    for k in sorted(a):
      diff = abs(a[k] - b[k]) if k in b else float("nan")
      lines.append(f"| {m} | {k} | {a[k]:.6f} | {b.get(k, float('nan')):.6f} | {diff:.1e} |")
  return "\n".join(lines)


def scaling(processes, steps: int, out: pathlib.Path) -> str:
  lines = ["| processes × devices | global batch | images/s | step time (ms) |",
           "|---|---|---|---|"]
  for n in processes:
    work = out / f"scale_{n}"
    launch(n, 1, work, ["--config=configs/psl_camvid.py", f"--config.total_steps={steps}",
                        "--config.batch_size=8", "--config.log_every=10",
                        f"--config.eval_every={steps}", f"--config.checkpoint_every={steps}",
                        "--config.eval.max_examples=1"])
    rows = [r for r in records(work / "metrics.jsonl") if "train/images_per_s" in r][1:]
    ips = sum(r["train/images_per_s"] for r in rows) / len(rows)
    lines.append(f"| {n} × 1 | 8 | {ips:.1f} | {8 / ips * 1000:.0f} |")
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("what", choices=("equality", "scaling"))
  p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
  p.add_argument("--processes", nargs="+", type=int, default=[1, 2, 4])
  p.add_argument("--steps", type=int, default=40)
  p.add_argument("--out", default=None, help="work dir (default: a new temp dir)")
  args = p.parse_args()
  out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="jaxseg_mp_"))
  out.mkdir(parents=True, exist_ok=True)
  table = (equality(args.methods, out) if args.what == "equality"
           else scaling(args.processes, args.steps, out))
  print(table)
  print(f"\nruns in {out}")


if __name__ == "__main__":
  main()
