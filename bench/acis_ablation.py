"""Benchmark: ACIS's Tab. 1 (variants) and Tab. 2 (recurrent states) on CVPPP A1
at CPU scale, and the peak memory of BL vs BL-Trunc vs AC.

    python bench/acis_ablation.py --out /tmp/acis_ablation \
        [--rows bl,bl_trunc,ac,ac_nokl,ac_nosp] [--steps 800] [--scale cpu]
    python bench/acis_ablation.py --memory [--scale cpu]

Pre-trains once into OUT/pretrain or --pretrain (preproc, cvae, actor_init,
and their _nosp twins for the NoSP row), then trains every row from it for the
same number of steps on the train split and evaluates on the val split
(configs/acis_cvppp.py:ROW,SCALE; Tab. 2 on seed 0 only). The evaluation
cadence is the config's `eval_every` (`--set eval_every=N`); the shared
`--evals` flag is not read here. Writes
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

import functools
import json
import pathlib
import shutil
import subprocess
import sys
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import config as config_lib
from jaxseg.trainers import acis
from jaxseg.trainers import writer as writer_lib

ROOT = harness.ROOT
ROWS = tuple(config_lib.ACIS_VARIANTS)
NAMES = {"bl": "BL", "bl_trunc": "BL-Trunc", "ac": "AC-Dice", "ac_nokl": "AC-Dice-NoKL",
         "ac_nosp": "AC-Dice-NoSP"}
TAB1 = ("sbd", "abs_dic", "dic", "mwcov", "mucov", "avg_fp", "avg_fn")


def load_config(row: str, args):
  c = config_lib.load_config_file(ROOT / "configs/acis_cvppp.py",
                                  f"{row},{args.scale}" if args.scale else row)
  c.data.root = str(args.root)
  if args.steps:
    c.total_steps = args.steps
  return config_lib.apply_sets(c, args.set)


def pretrain(rows, args) -> None:
  """preproc + cvae + actor_init (+ the _nosp ones) into --pretrain (reused
  when finished)."""
  for row in sorted({"ac_nosp" if r == "ac_nosp" else "ac" for r in rows}):
    acis.train_and_evaluate(load_config(row, args), str(args.pretrain), pretrain_only=True)


def pretrain_metrics(pre: pathlib.Path) -> dict:
  metrics = {}
  for stage in ("preproc", "cvae", "cvae_nosp", "actor_init", "actor_init_nosp"):
    records = writer_lib.read_metrics(pre / stage) \
        if (pre / stage / "metrics.jsonl").exists() else []
    metrics[stage] = {k: v for r in records for k, v in r.items() if k.startswith("val/")}
  return metrics


def run_row(row: str, seed: int, workdir: pathlib.Path, args, rows) -> dict:
  if len(rows) > 1:  # a process per row: XLA:CPU keeps every compiled program mapped,
    # and five rows of unrolled episodes in one process ran out of memory.
    subprocess.run([sys.executable, __file__, "--out", str(args.out), "--rows", row,
                    "--root", str(args.root), "--steps", str(args.steps),
                    "--seeds", str(seed + 1), "--scale", args.scale,
                    "--train-split", args.train_split, "--pretrain", str(args.pretrain),
                    *(f"--set={x}" for x in args.set)],
                   check=True)
    return json.loads((workdir / "run.json").read_text())
  out = args.out
  c = load_config(row, args)
  c.seed = seed
  if seed:  # Tab. 2 (a state zeroed) on seed 0 only: it triples the evaluation's cost
    c.acis.eval_blocks = ()
  c.init_from = str(args.pretrain)
  t0 = time.time()
  result = acis.train_and_evaluate(c, str(workdir))
  metrics, final = result.metrics, result.workdir
  panels = sorted((final / "panels").glob("*.png"))
  if panels:
    shutil.copy(panels[-1], out / f"panel_{row}.png")
  updates = sum(acis.step_kind(c, i)[0] != "critic" for i in range(1, c.total_steps + 1))
  return {"metrics": metrics, "seconds": time.time() - t0, "steps": c.total_steps,
          "actor_updates": updates,
          "curve": [(r["step"], r["val/sbd"]) for r in writer_lib.read_metrics(final)
                    if r.get("val/sbd") is not None]}


def write_summary(out: pathlib.Path, results: dict, pre: dict, args) -> str:
  """Tab. 1 and Tab. 2 analogues, mean ± sd over the seeds run."""
  def cell(runs, key):
    xs = [r["metrics"][key] for r in runs if key in r["metrics"]]
    return harness.mean_std(xs) if xs else "–"

  lines = [f"# ACIS ablation on CVPPP A1 (train {args.train_split} → val), scale "
           f"`{args.scale or 'paper'}`", "",
           "Tab. 1 analogue (val split, termination by the model, masks pasted back to "
           "the original 500 × 530; mean ± sd over seeds):", "",
           "| row | steps | actor updates | seeds | SBD ↑ | abs DiC ↓ | DiC | MWCov ↑ | "
           "MUCov ↑ | AvgFP ↓ | AvgFN ↓ | min |", "|" + "---|" * 12]
  for row, runs in results.items():
    r = runs[0]
    lines.append(f"| {NAMES[row]} | {r['steps']} | {r.get('actor_updates', '')} | "
                 f"{len(runs)} | " + " | ".join(cell(runs, "val/" + k) for k in TAB1) +
                 f" | {sum(x['seconds'] for x in runs) / len(runs) / 60:.1f} |")
  lines += ["", "Tab. 2 analogue (Dice* = first #GT predictions max-matched to the "
            "ground truth; abs DiC with the model's termination; seed 0):", "",
            "| row | LSTM + mask Dice* | abs DiC | mask only Dice* | abs DiC | LSTM only Dice* "
            "| abs DiC |", "|---|---|---|---|---|---|---|"]
  for row, runs in results.items():
    cells = [cell(runs, f"val/{k}{suffix}") for suffix in ("", "_mask_only", "_lstm_only")
             for k in ("dice_gt_stop", "abs_dic")]
    lines.append(f"| {NAMES[row]} | " + " | ".join(cells) + " |")
  lines += ["", "Where the count comes from (steps until the termination stopped, of at "
            "most 21; the foreground share the label map covers; `–` for runs from before "
            "these metrics):", "", "| row | steps | DiC | fg coverage |", "|---|---|---|---|"]
  for row, runs in results.items():
    lines.append(f"| {NAMES[row]} | " + " | ".join(
        cell(runs, f"val/{k}") for k in ("steps", "dic", "fg_coverage")) + " |")
  lines += ["", "Pre-training and the actor init (val split):", ""]
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
  harness.line_plot(path, {NAMES[row]: tuple(zip(*runs[0]["curve"])) or ((), ())
                           for row, runs in results.items()},
                    xlabel="step", ylabel="val SBD")


def step_inputs(c):
  """(nets, fresh params, a batch of 15 random squares per image, the frozen
  groups) for timing or compiling one step of config `c`."""
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
  return nets, params, batch, {k: params[k] for k in ("preproc", "decoder")}


def memory_table(args) -> str:
  """Temp-buffer MiB and step time of each method's compiled step, per L."""
  c = load_config("ac", args)
  c.acis.rollout = "scan"
  nets, params, batch, frozen = step_inputs(c)
  s, b = c.acis.image_size, c.batch_size
  methods = {"BL (full BPTT)": ("bl", "actor"), "BL-Trunc (one step)": ("bl_trunc", "actor"),
             "AC actor step": ("actor", "actor"), "AC critic step": ("critic", "critic")}
  lengths = tuple(args.lengths)
  lines = [f"Peak working memory of one compiled step (XLA temp buffers, MiB), "
           f"{jax.default_backend()}, batch {b}, {s}×{s}, rollout=scan", "",
           "| method | " + " | ".join(f"L={n}" for n in lengths) + " |",
           "|---|" + "---|" * len(lengths)]
  for name, (kind, key) in methods.items():
    cells = []
    for n in lengths:
      fn = acis.grads_fn(nets, c, kind, frozen=frozen, length=n)
      g = jax.jit(lambda p, bt, r, fn=fn, key=key: fn({**params, key: p}, bt, r, 0)[1])
      compiled = g.lower(params[key], batch, jax.random.key(1)).compile()
      cells.append(compiled.memory_analysis().temp_size_in_bytes / 2 ** 20)
      print(f"{name} L={n}: {cells[-1]:.1f} MiB", flush=True)
    lines.append(f"| {name} | " + " | ".join(f"{x:.0f}" for x in cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  p = harness.parser(__doc__, out="/tmp/acis_ablation", data="cvppp_a1", rows=ROWS, steps=0)
  p.add_argument("--scale", default="cpu", help="config option: cpu | '' (paper)")
  p.add_argument("--train-split", default="train")
  p.add_argument("--pretrain", type=pathlib.Path, default=None,
                 help="the shared pre-training's work dir (default OUT/pretrain)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override of every row, e.g. acis.critic_warmup=600 "
                      "(pre-training is shared, so only final-stage keys belong here)")
  p.add_argument("--memory", action="store_true")
  p.add_argument("--lengths", type=int, nargs="+", default=[5, 10, 15])
  args = p.parse_args()
  if args.memory:
    print(memory_table(args))
    return
  if not args.root.is_dir():
    sys.exit(f"no CVPPP A1 copy at {args.root} (--root)")
  rows = harness.parse_rows(p, args, ROWS)
  args.out.mkdir(parents=True, exist_ok=True)
  args.pretrain = args.pretrain or args.out / "pretrain"
  if not args.summary_only:
    pretrain(rows, args)
  pre = pretrain_metrics(args.pretrain)
  results, _ = harness.run_rows(
      rows, lambda r, seed, workdir: run_row(r, seed, workdir, args, rows),
      lambda results: write_summary(args.out, results, pre, args), out=args.out,
      summary_only=args.summary_only, seeds=lambda r: args.seeds,
      first_seed=args.first_seed)
  plot_curves(args.out / "sbd_curves.png", results)
  print(write_summary(args.out, results, pre, args))


if __name__ == "__main__":
  main()
