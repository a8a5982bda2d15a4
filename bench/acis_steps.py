"""What each step of an ACIS episode adds, averaged over a split: mask area,
the share already covered, the best ground-truth Dice, whether that leaf was
found before, and the termination's continue probability.

    python bench/acis_steps.py --stages PRE/preproc PRE/cvae PRE/actor_init
    python bench/acis_steps.py --stages PRE/preproc PRE/cvae RUN/ac_seed0/ac --block lstm
    python bench/acis_steps.py --stages PRE/preproc PRE/cvae RUN/bl_trunc_seed0/bl_trunc \
        --split train --metrics

`--stages` are stage work dirs whose latest checkpoints are merged in order
(later ones win: the actor of the last). The table tells an actor that stops
finding leaves (best Dice falls, in_state and repeat rise to 1) from a
termination that stops too late or too early. `--metrics` also prints the
split's Tab. 1 metrics (SBD, |DiC|, ...), the same numbers a stage's
evaluation writes: with `--split train` beside the val run's they tell a model
that over-fits the training images from one that under-fits both.
"""
from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg import data as data_lib
from jaxseg.algorithms.acis import infer as infer_lib
from jaxseg.trainers import acis, acis_eval


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--stages", nargs="+", required=True)
  p.add_argument("--config", default="configs/acis_cvppp.py:bl_trunc,cpu")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config overrides, as bench/acis_ablation.py takes them")
  p.add_argument("--root", default=None, help="the dataset folder (default: the config's)")
  p.add_argument("--split", default=None, help="default: the config's val split")
  p.add_argument("--block", default="none", choices=tuple(acis_eval.BLOCK_NAMES))
  p.add_argument("--metrics", action="store_true",
                 help="also the split's Tab. 1 metrics (the stage evaluation's numbers)")
  p.add_argument("--max-examples", type=int, default=0, help="the first N images (0: all)")
  args = p.parse_args(argv)
  c = config_lib.apply_sets(config_lib.load_config_spec(args.config), args.set)
  if args.root:
    c.data.root = args.root
  # At the original size, as the stages' evaluation reads it (masks pasted back).
  source, _ = data_lib.get_source(acis.unresized(c.data), args.split or c.data.val_split)
  params = {}
  for d in args.stages:
    params.update(ckpt_lib.load_params(d))
  nets = acis.build_nets(c)
  infer = acis_eval.make_infer(nets, c, args.block)
  rows, conts = [], []
  count = min(args.max_examples or len(source), len(source))
  for i in range(count):
    image, gt = acis_eval.resize_example(source[i], c.acis.image_size)
    masks, cont = jax.device_get(infer(params, image[None]))
    rows.append(infer_lib.step_stats(masks[:, 0], gt))
    conts.append(cont[:, 0])
  mean = {k: np.mean([r[k] for r in rows], 0) for k in rows[0]}
  mean["continue"] = np.mean(conts, 0)
  print(f"{count} images, block={args.block}, stages: {' '.join(args.stages)}")
  print("| t | area (px) | in state | best Dice | repeat | continue |")
  print("|---|---|---|---|---|---|")
  for t in range(len(mean["area"])):
    print(f"| {t} | {mean['area'][t]:.0f} | {mean['in_state'][t]:.2f} | "
          f"{mean['best_dice'][t]:.2f} | {mean['repeat'][t]:.2f} | {mean['continue'][t]:.3f} |")
  if args.metrics:
    c.acis.eval_blocks = ()  # Tab. 2's zeroed states: not needed here
    metrics = acis_eval.episode_evaluator(nets, c)(params, source, count)
    print("\n| metric | value |\n|---|---|")
    for key, value in metrics.items():
      print(f"| {key} | {value:.4f} |")


if __name__ == "__main__":
  main(sys.argv[1:])
