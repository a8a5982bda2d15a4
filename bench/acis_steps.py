"""What each step of an ACIS episode adds, averaged over a split: mask area,
the share already covered, the best ground-truth Dice, whether that leaf was
found before, and the termination's continue probability.

    python bench/acis_steps.py --stages PRE/preproc PRE/cvae PRE/actor_init
    python bench/acis_steps.py --stages PRE/preproc PRE/cvae RUN/ac_seed0/ac --block lstm

`--stages` are stage work dirs whose latest checkpoints are merged in order
(later ones win: the actor of the last). The table tells an actor that stops
finding leaves (best Dice falls, in_state and repeat rise to 1) from a
termination that stops too late or too early.
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
  p.add_argument("--root", default=None, help="the dataset folder (default: the config's)")
  p.add_argument("--split", default=None, help="default: the config's val split")
  p.add_argument("--block", default="none", choices=tuple(acis_eval.BLOCK_NAMES))
  args = p.parse_args(argv)
  c = config_lib.load_config_spec(args.config)
  if args.root:
    c.data.root = args.root
  source, _ = data_lib.get_source(c.data, args.split or c.data.val_split)
  params = {}
  for d in args.stages:
    params.update(ckpt_lib.load_params(d))
  nets = acis.build_nets(c)
  infer = acis_eval.make_infer(nets, c, args.block)
  rows, conts = [], []
  for i in range(len(source)):
    image, gt = acis_eval.resize_example(source[i], c.acis.image_size)
    masks, cont = jax.device_get(infer(params, image[None]))
    rows.append(infer_lib.step_stats(masks[:, 0], gt))
    conts.append(cont[:, 0])
  mean = {k: np.mean([r[k] for r in rows], 0) for k in rows[0]}
  mean["continue"] = np.mean(conts, 0)
  print(f"{len(source)} images, block={args.block}, stages: {' '.join(args.stages)}")
  print("| t | area (px) | in state | best Dice | repeat | continue |")
  print("|---|---|---|---|---|---|")
  for t in range(len(mean["area"])):
    print(f"| {t} | {mean['area'][t]:.0f} | {mean['in_state'][t]:.2f} | "
          f"{mean['best_dice'][t]:.2f} | {mean['repeat'][t]:.2f} | {mean['continue'][t]:.3f} |")


if __name__ == "__main__":
  main(sys.argv[1:])
