"""Benchmark: ACIS's Tab. 1 (variants) and Tab. 2 (recurrent states) on CVPPP A1
at CPU scale, and the peak memory of BL vs BL-Trunc vs AC.

    python bench/acis_ablation.py --out /tmp/acis_ablation \
        [--rows bl,bl_trunc,ac,ac_nokl,ac_nosp] [--steps 800] [--scale cpu]
    python bench/acis_ablation.py --memory [--scale cpu]

Pre-trains once into OUT/pretrain (preproc, cvae, and cvae_nosp for the NoSP
row), then trains every row from it for the same number of steps on the train
split and evaluates on the val split (configs/acis_cvppp.py:ROW,SCALE). Writes
into --out:
  results.md    Tab. 1 (SBD, |DiC|, MWCov, MUCov, AvgFP, AvgFN), Tab. 2 (Dice* and
                |DiC| with the LSTM or the mask state zeroed), the pre-training
                numbers (foreground IoU, cVAE reconstruction Dice) and wall times
  results.json  the same numbers
  sbd_curves.png  val SBD over training, one line per row
  panel_ROW.png   the prediction order of each row (colour = time step)
Finished runs are reused, so re-running adds rows (`--summary-only` tabulates).

`--memory` compiles one train step of each method at each sequence length with
`acis.rollout=scan` and prints XLA's temporary-buffer size (the peak working
memory of the step, from `compiled.memory_analysis()`), side by side.
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxseg import config as config_lib  # noqa: E402
from jaxseg.trainers import acis  # noqa: E402
from jaxseg.trainers import writer as writer_lib  # noqa: E402

ROWS = acis.VARIANTS
NAMES = {"bl": "BL", "bl_trunc": "BL-Trunc", "ac": "AC-Dice", "ac_nokl": "AC-Dice-NoKL",
         "ac_nosp": "AC-Dice-NoSP"}
TAB1 = ("sbd", "abs_dic", "dic", "mwcov", "mucov", "avg_fp", "avg_fn")


def load_config(row: str, args):
  c = config_lib.load_config_file(ROOT / "configs/acis_cvppp.py",
                                  f"{row},{args.scale}" if args.scale else row)
  c.data.root = str(args.data)
  if args.steps:
    c.total_steps = args.steps
  return c


def pretrain(out: pathlib.Path, rows, args) -> None:
  """preproc + cvae (+ cvae_nosp) into OUT/pretrain (reused when finished)."""
  for row in sorted({"ac_nosp" if r == "ac_nosp" else "ac" for r in rows}):
    acis.train_and_evaluate(load_config(row, args), str(out / "pretrain"),
                            pretrain_only=True)


def pretrain_metrics(out: pathlib.Path) -> dict:
  metrics = {}
  for stage in ("preproc", "cvae", "cvae_nosp"):
    records = writer_lib.read_metrics(out / "pretrain" / stage) \
        if (out / "pretrain" / stage / "metrics.jsonl").exists() else []
    metrics[stage] = {k: v for r in records for k, v in r.items() if k.startswith("val/")}
  return metrics


def run_row(row: str, out: pathlib.Path, args) -> dict:
  c = load_config(row, args)
  c.init_from = str(out / "pretrain")
  workdir = out / row
  t0 = time.time()
  metrics = acis.train_and_evaluate(c, str(workdir))
  final = workdir / acis.stage_plan(c)[-1].name
  panels = sorted((final / "panels").glob("*.png"))
  if panels:
    shutil.copy(panels[-1], out / f"panel_{row}.png")
  return {"metrics": metrics, "seconds": time.time() - t0, "steps": c.total_steps,
          "curve": [(r["step"], r["val/sbd"]) for r in writer_lib.read_metrics(final)
                    if r.get("val/sbd") is not None]}


def write_summary(out: pathlib.Path, results: dict, pre: dict, args) -> str:
  lines = [f"# ACIS ablation on CVPPP A1 (train {args.train_split} → val), scale "
           f"`{args.scale or 'paper'}`", "",
           "Tab. 1 analogue (val split, termination by the model, masks pasted back to "
           "the original 500 × 530):", "",
           "| row | steps | SBD ↑ | abs DiC ↓ | DiC | MWCov ↑ | MUCov ↑ | AvgFP ↓ | AvgFN ↓ "
           "| min |", "|---|---|---|---|---|---|---|---|---|---|"]
  for row, r in results.items():
    m = r["metrics"]
    lines.append(f"| {NAMES[row]} | {r['steps']} | " + " | ".join(
        f"{m.get('val/' + k, float('nan')):.3f}" for k in TAB1) + f" | {r['seconds'] / 60:.1f} |")
  lines += ["", "Tab. 2 analogue (Dice* = first #GT predictions max-matched to the "
            "ground truth; abs DiC with the model's termination):", "",
            "| row | LSTM + mask Dice* | abs DiC | mask only Dice* | abs DiC | LSTM only Dice* "
            "| abs DiC |", "|---|---|---|---|---|---|---|"]
  for row, r in results.items():
    m = r["metrics"]
    cells = [m.get(f"val/{k}{suffix}", float("nan")) for suffix in ("", "_mask_only",
                                                                     "_lstm_only")
             for k in ("dice_gt_stop", "abs_dic")]
    lines.append(f"| {NAMES[row]} | " + " | ".join(f"{x:.3f}" for x in cells) + " |")
  lines += ["", "Pre-training (val split, at S × S):", ""]
  for stage, m in pre.items():
    if m:
      lines.append(f"- {stage}: " + ", ".join(f"{k[4:]} {v:.3f}" for k, v in m.items()
                                              if k != "val/seconds"))
  text = "\n".join(lines) + "\n"
  (out / "results.md").write_text(text)
  (out / "results.json").write_text(json.dumps({"rows": results, "pretrain": pre},
                                               indent=1))
  return text


def plot_curves(path: pathlib.Path, results: dict) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for row, r in results.items():
    if r["curve"]:
      ax.plot(*zip(*r["curve"]), marker="o", label=NAMES[row])
  ax.set_xlabel("step")
  ax.set_ylabel("val SBD")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def memory_table(args) -> str:
  """Temp-buffer MiB and step time of each method's compiled step, per L."""
  c = load_config("ac", args)
  c.acis.rollout = "scan"
  nets = acis.build_nets(c)
  params = jax.jit(functools.partial(acis.init_params, nets, c))(jax.random.key(0))
  s, b = c.acis.image_size, c.batch_size
  rng = np.random.default_rng(0)
  inst = np.zeros((b, s, s), np.int32)
  for i in range(b):
    for k in range(1, 16):
      y, x = rng.integers(0, s - s // 6, 2)
      inst[i, y:y + s // 6, x:x + s // 6] = k
  batch = {"image": jnp.asarray(rng.integers(0, 255, (b, s, s, 3)), jnp.uint8),
           "instances": jnp.asarray(inst)}
  frozen = {k: params[k] for k in ("preproc", "decoder")}
  methods = {"BL (full BPTT)": (acis.bl_grads, "actor"),
             "BL-Trunc (one step)": (acis.bl_trunc_grads, "actor"),
             "AC actor step": (acis.ac_actor_grads, "actor"),
             "AC critic step": (acis.ac_critic_grads, "critic")}
  lengths = tuple(args.lengths)
  lines = [f"Peak working memory of one compiled step (XLA temp buffers, MiB), "
           f"{jax.default_backend()}, batch {b}, {s}×{s}, rollout=scan", "",
           "| method | " + " | ".join(f"L={n}" for n in lengths) + " |",
           "|---|" + "---|" * len(lengths)]
  for name, (fn, key) in methods.items():
    cells = []
    for n in lengths:
      g = jax.jit(lambda p, bt, r, fn=fn, key=key, n=n: fn(
          nets, c, {**params, key: p}, bt, r, frozen, n)[1])
      compiled = g.lower(params[key], batch, jax.random.key(1)).compile()
      cells.append(compiled.memory_analysis().temp_size_in_bytes / 2 ** 20)
      print(f"{name} L={n}: {cells[-1]:.1f} MiB", flush=True)
    lines.append(f"| {name} | " + " | ".join(f"{x:.0f}" for x in cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/acis_ablation"))
  parser.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared/data/cvppp_a1")
  parser.add_argument("--rows", default=",".join(ROWS))
  parser.add_argument("--steps", type=int, default=0, help="0: the config's total_steps")
  parser.add_argument("--scale", default="cpu", help="config option: cpu | '' (paper)")
  parser.add_argument("--train-split", default="train")
  parser.add_argument("--summary-only", action="store_true")
  parser.add_argument("--memory", action="store_true")
  parser.add_argument("--lengths", type=int, nargs="+", default=[5, 10, 15])
  args = parser.parse_args()
  if args.memory:
    print(memory_table(args))
    return
  if not args.data.is_dir():
    sys.exit(f"no CVPPP A1 copy at {args.data} (--data)")
  rows = [r for r in args.rows.split(",") if r]
  unknown = set(rows) - set(ROWS)
  if unknown:
    sys.exit(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
  args.out.mkdir(parents=True, exist_ok=True)
  if not args.summary_only:
    pretrain(args.out, rows, args)
  pre = pretrain_metrics(args.out)
  results = {}
  for row in rows:
    done = (args.out / row / "result.json")
    if not done.exists() and not args.summary_only:
      if len(rows) == 1:
        done.write_text(json.dumps(run_row(row, args.out, args)))
      else:  # a process per row: XLA:CPU keeps every compiled program mapped,
        # and five rows of unrolled episodes in one process ran out of memory.
        subprocess.run([sys.executable, __file__, "--out", str(args.out), "--rows", row,
                        "--data", str(args.data), "--steps", str(args.steps),
                        "--scale", args.scale, "--train-split", args.train_split],
                       check=True)
    if done.exists():
      results[row] = json.loads(done.read_text())
  plot_curves(args.out / "sbd_curves.png", results)
  print(write_summary(args.out, results, pre, args))


if __name__ == "__main__":
  main()
