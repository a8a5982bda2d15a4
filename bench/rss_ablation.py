"""Benchmark: the RSS paper's ablation (Tables 1-3) on real CamVid at CPU scale.

    python bench/rss_ablation.py --out /tmp/rss_ablation [--steps 1000] \
        [--rows psl,pixel,...] [--seeds 1] [--key-seeds 3] [--resize 192,256]
    python bench/rss_ablation.py --embedded --out /tmp/rss_ablation_embedded \
        --steps 600 --rows psl,psr_multi_psd,psr_class
    python bench/rss_ablation.py --start model --out /tmp/rss_cold --steps 1500 \
        --rows psl,tab2_psr_multi_psd,scalar   # from the IDD-Lite PSL model (issue 36)

Trains every row of ROWS (configs/rss_camvid.py variants plus the extra rows
below) for the same number of steps, then writes into --out:
  results.md      variant, steps, wall time, val mIoU (mean ± std over seeds),
                  ratio to PSL
  results.json    the same, machine-readable, with per-seed numbers
  miou_curves.png val mIoU over training, one line per row (seed 0)
  psr_panel.png   for one val image: sampled action maps at two PSR scales and
                  the PSD advantage map (from the trained psr_multi_psd model)
`--embedded` runs the rows on the quick start instead (configs/rss_embedded.py,
PSL from configs/psl_embedded.py, no --root). Every row logs the per-class
collapse diagnostics (`rss.class_diagnostics`; plots: bench/rss_collapse.py).
Runs already finished under --out are reused, so the script can be re-run to
add rows or seeds (`--summary-only` tabulates what has finished). KEY_ROWS get --key-seeds seeds, the others --seeds.

`--start model|backbone` starts every row (PSL included) as the paper's two
columns do: from PSL on another dataset (`--pretrain-root`, IDD-Lite; the
configs' `start=` option, stage `cold`), the whole model but the classifier
(`model`, "w/ cold start") or its backbone alone (`backbone`, the stand-in for
an ImageNet-pretrained start). The pre-training is trained once into
`--pretrain-dir` and reused by every row. `tab2_*` rows use the paper's
last-layer factor of that column (Tab. 3's best: 40 without, 400 with cold start).
"""
from __future__ import annotations

import json
import pathlib
import statistics
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import algorithms
from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg import data as data_lib
from jaxseg import models, plots, rewards, trainers
from jaxseg.models import weights
from jaxseg.trainers import writer as writer_lib

ROOT = harness.ROOT

# name -> (configs/rss_camvid.py argument, {dotted config key: value}).
ROWS = {
    "psl": ("psl", {}),
    "pixel": ("pixel", {}),
    "pixel_nosync": ("pixel_nosync", {}),
    "naive": ("naive", {}),
    "psr_single": ("psr_single", {}),
    "psr_single_psd": ("psr_single_psd", {}),
    "psr_multi": ("psr_multi", {}),
    "psr_multi_psd": ("psr_multi_psd", {}),
    # The paper's rows as written: no entropy bonus, raw PSD advantages.
    "pixel_noent": ("pixel", {"rss.entropy_coef": 0.0}),
    "psr_single_psd_noent": ("psr_single_psd", {"rss.entropy_coef": 0.0,
                                                "rss.psd_std_normalize": False}),
    "psr_multi_psd_noent": ("psr_multi_psd", {"rss.entropy_coef": 0.0,
                                              "rss.psd_std_normalize": False}),
    # Making multi-scale work: the coarse-to-fine schedule, coarse-heavy weights.
    "psr_multi_psd_c2f": ("psr_multi_psd", {"rss.psr_schedule": "coarse_to_fine"}),
    "psr_multi_psd_coarse": ("psr_multi_psd", {"rss.psr_weights": (1.0, 1.0, 0.5, 0.25)}),
    # More samples per image (the image-level target probe).
    "psr_single_n8": ("psr_single", {"rss.num_samples": 8}),
    # Tab. 3: last-layer learning-rate factor (best image-level row).
    **{f"lr{f}": ("psr_single_psd,lr_factor=" + str(f), {}) for f in (1, 4, 40, 400)},
    # Cold start from PSL on the embedded dataset (trained first, see --cold-steps).
    "cold_psr_single_psd": ("psr_single_psd,cold=COLD", {}),
    # The recipe from that PSL run (issue 17): the whole model but the classifier
    # (init_from), its backbone from the checkpoint, and the same backbone exported
    # in timm's names and re-imported (model.pretrained); the last two must agree.
    "cold_psr_class": ("psr_class,cold=COLD", {}),
    "pre_ckpt_psr_class": ("psr_class", {"model.pretrained": "COLD"}),
    "pre_timm_psr_class": ("psr_class", {"model.pretrained": "COLD/backbone_timm.safetensors"}),
    # jaxseg's recipe and one component changed at a time (docs/rss_image_level.md).
    "psr_class": ("psr_class", {}),
    "psr_class_noeps": ("psr_class", {"rss.explore_eps": 0.0}),
    "psr_class_nocls": ("psr_class", {"rss.credit": "map"}),
    "psr_class_rloo": ("psr_class", {"rss.advantage": "rloo"}),
    "psr_class_n4": ("psr_class", {"rss.num_samples": 4}),
    "psr_class_n16": ("psr_class", {"rss.num_samples": 16}),
    "psr_class_multi": ("psr_class", {"rss.psr_scales": (1 / 8, 1 / 4)}),
    "psr_class_noent": ("psr_class", {"rss.entropy_coef": 0.0}),
    "psr_class_eps02": ("psr_class", {"rss.explore_eps": 0.2}),
    # Exploration alone on the paper's PSD row (N = 8 as the recipe).
    "psr_single_psd_eps": ("psr_single_psd", {"rss.explore_eps": 0.1, "rss.num_samples": 8}),
    # Issue 36: the paper's Tab. 2 rows with its last-layer factor of the --start
    # column (PAPER_FACTOR), and Tab. 3's factors on its full row.
    **{f"tab2_{v}": (f"{v},lr_factor=PAPER_FACTOR", {}) for v in (
        "naive", "psr_single", "psr_single_psd", "psr_multi", "psr_multi_psd")},
    **{f"tab3_f{f}": (f"psr_multi_psd,lr_factor={f}", {}) for f in (1, 4, 40, 400)},
    # jaxseg's scalar recipe (one scalar per map) and its stabilisers, one change
    # at a time (docs/rss_scalar.md).
    "scalar": ("scalar", {}),
    "scalar_n32": ("scalar", {"rss.num_samples": 32}),
    "scalar_n64": ("scalar", {"rss.num_samples": 64}),
    "scalar_two": ("scalar", {"rss.psr_scales": (1 / 8, 1 / 4)}),
    "scalar_coupled": ("scalar", {"rss.resample": 0.05}),
    "scalar_ema": ("scalar", {"optim.ema_decay": 0.99}),
    "scalar_noeps": ("scalar", {"rss.explore_eps": 0.0}),
    "scalar_noent": ("scalar", {"rss.entropy_coef": 0.0}),
    "scalar_ent05": ("scalar", {"rss.entropy_coef": 0.05}),
    "scalar_rawpsd": ("scalar", {"rss.psd_std_normalize": False}),
    "scalar_rank": ("scalar", {"rss.advantage": "rank"}),
    "scalar_grpo": ("scalar", {"rss.advantage": "grpo"}),
    "scalar_drop_flat": ("scalar", {"rss.drop_flat": True}),
    "scalar_map": ("scalar", {"rss.credit": "map", "rss.advantage": "grpo"}),
    "scalar_greedy": ("scalar", {"rss.credit": "greedy"}),
    "scalar_critic": ("scalar", {"rss.credit": "critic"}),
    "scalar_clip2": ("scalar", {"rss.policy_loss": "clip", "rss.epochs": 2}),
    "scalar_f4": ("scalar,lr_factor=4", {}),
    "scalar_f40": ("scalar,lr_factor=40", {}),
}
# Tab. 3's best last-layer factor per column of the paper (with / without cold start).
PAPER_FACTOR = {"model": 400, "backbone": 40, "none": 40}
DEFAULT_ROWS = ["psl", "pixel", "pixel_nosync", "naive", "psr_single", "psr_single_psd",
                "psr_multi", "psr_multi_psd", "psr_class"]
KEY_ROWS = ("psl", "pixel", "psr_single", "psr_single_psd", "psr_single_n8", "psr_class",
            "scalar")


def load_config(arg: str, args):
  """configs/rss_camvid.py:ARG on --root, or with --embedded the quick start's configs."""
  if not args.embedded:
    c = config_lib.load_config_file(ROOT / "configs/rss_camvid.py", arg)
    c.data.root = str(args.root)
  elif arg == "psl":
    c = config_lib.load_config_file(ROOT / "configs/psl_embedded.py")
  else:
    c = config_lib.load_config_file(ROOT / "configs/rss_embedded.py", arg)
    c.rss.compare_psl = False
  c.rss.class_diagnostics = True
  return c


def cold_start_checkpoint(out: pathlib.Path, steps: int) -> pathlib.Path:
  """PSL on the embedded dataset with the CamVid rows' model: the cold start."""
  c = config_lib.load_config_file(ROOT / "configs/psl_embedded.py")
  c.total_steps = steps
  c.eval_every = c.checkpoint_every = steps
  workdir = out / "cold_source_psl_embedded"
  trainers.get_trainer("psl")(c, str(workdir))
  weights.main(["export", str(workdir), str(workdir / "backbone_timm.safetensors")])
  return workdir


def start_config(c, args) -> None:
  """Every row from the --start pre-training (a shared, reused stage `cold`)."""
  if args.start == "none":
    return
  c.cold_start.update(root=str(args.pretrain_root), load=args.start,
                      workdir=str(args.pretrain_dir), steps=args.pretrain_steps)


def run_row(name: str, seed: int, workdir: pathlib.Path, args,
            cold: pathlib.Path | None) -> dict:
  arg, overrides = ROWS[name]
  arg = arg.replace("PAPER_FACTOR", str(PAPER_FACTOR[args.start]))
  c = load_config(arg.replace("COLD", str(cold)), args)
  start_config(c, args)
  c.seed = seed
  c.total_steps = args.steps
  c.eval_every = max(args.steps // args.evals, 1)
  c.checkpoint_every = args.steps
  c.keep_checkpoints = 1
  if args.resize:
    c.data.resize = args.resize
    c.data.crop_size = tuple(s * 4 // 5 // 32 * 32 for s in args.resize)
    c.eval.crop_size = tuple(-(-s // 32) * 32 for s in args.resize)
  c.update_from_flattened_dict({k: v.replace("COLD", str(cold)) if isinstance(v, str) else v
                                for k, v in overrides.items()})
  t0 = time.time()
  run = trainers.get_trainer(c.trainer)(c, str(workdir))
  return {"row": name, "seed": seed, "steps": run.step, "workdir": str(run.workdir),
            "wall_s": time.time() - t0, "miou": run.metrics["val/miou"],
            "pixel_acc": run.metrics["val/pixel_acc"],
            "iou": {k[8:]: v for k, v in run.metrics.items() if k.startswith("val/iou/")}}


def psr_panel(out: pathlib.Path, args, scales=(1 / 8, 1 / 4), n: int = 4) -> None:
  """Sampled action maps at two PSR scales and the PSD advantage map of map 0."""
  workdir = out / "psr_multi_psd_seed0"
  if not (workdir / "checkpoints").exists():
    return
  c = load_config("psr_multi_psd", args)
  if args.resize:
    c.data.resize = args.resize
  source, info = data_lib.get_source(c.data, c.data.val_split)
  model = models.build_model(c.model, info.num_classes)
  params = ckpt_lib.load_params(workdir)
  ex = source[len(source) // 2]
  h, w = (s // 32 * 32 for s in ex["image"].shape[:2])
  image, label = ex["image"][:h, :w], np.asarray(ex["label"][:h, :w]).astype(np.int32)
  logits = algorithms.make_apply_fn(model)(params, jnp.asarray(image)[None], train=False)
  score = lambda a, y: rewards.image_miou(a, y, num_classes=info.num_classes,
                                          ignore_index=info.ignore_index)
  tiles, titles = [image, plots.colorize(label, info.num_classes, info.ignore_index)], \
      ["image", "label"]
  for k, s in enumerate(scales):
    f = round(1 / s)
    z = rewards.downsample_logits(logits, f)[0]
    y = rewards.downsample_labels(jnp.asarray(label), f, num_classes=info.num_classes,
                                  ignore_index=info.ignore_index)
    a = rewards.sample_actions(jax.random.key(k), z, n)
    r = jax.vmap(score, in_axes=(0, None))(a, y)
    adv = rewards.pairwise_spatial_difference(a, r)
    for i in range(n):
      tiles.append(np.kron(plots.colorize(np.asarray(a[i]), info.num_classes,
                                          info.ignore_index), np.ones((f, f, 1), np.uint8)))
      titles.append(f"1/{f} map {i}: R={float(r[i]):.3f}")
    tiles.append(np.kron(np.asarray(adv[0]), np.ones((f, f))))
    titles.append(f"1/{f} PSD advantage of map 0")
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cols = n + 1
  fig, axes = plt.subplots(3, cols, figsize=(2.6 * cols, 2.2 * 3))
  layout = [[0, 1] + [None] * (cols - 2)] + [
      list(range(2 + k * cols, 2 + (k + 1) * cols)) for k in range(len(scales))]
  for row, ids in zip(axes, layout):
    for ax, i in zip(row, ids):
      ax.axis("off")
      if i is None:
        continue
      tile = tiles[i]
      if tile.ndim == 2:
        lim = float(np.abs(tile).max()) or 1.0
        im = ax.imshow(tile, cmap="RdBu", vmin=-lim, vmax=lim)
        fig.colorbar(im, ax=ax, fraction=0.046)
      else:
        ax.imshow(tile)
      ax.set_title(titles[i], fontsize=7)
  fig.suptitle("PSR action maps (psr_multi_psd model) and PSD advantages")
  fig.tight_layout()
  fig.savefig(out / "psr_panel.png", dpi=110)
  plt.close(fig)


def write_summary(out: pathlib.Path, results: dict, args) -> str:
  """results.md / results.json / miou_curves.png from the runs so far."""
  psl = statistics.mean(x["miou"] for x in results["psl"]) if "psl" in results else None
  data = "the embedded quick start" if args.embedded else "CamVid"
  lines = [f"RSS ablation on {data} ({args.resize or 'config'} resolution), "
           f"{args.steps} steps per row, batch 8", "",
           "| row | seeds | steps | wall time / run | val mIoU | ratio to PSL | classes IoU>0.05 |",
           "|---|---|---|---|---|---|---|"]
  for r, runs in results.items():
    m = [x["miou"] for x in runs]
    ratio = f"{statistics.mean(m) / psl:.2f}" if psl else "-"
    lines.append(f"| {r} | {len(m)} | {runs[0]['steps']} | "
                 f"{statistics.mean(x['wall_s'] for x in runs) / 60:.1f} min | "
                 f"{harness.mean_std(m)} | {ratio} | "
                 f"{sum(v > 0.05 for v in runs[0]['iou'].values())}/{len(runs[0]['iou'])} |")
  table = "\n".join(lines)
  (out / "results.md").write_text(table + "\n")
  (out / "results.json").write_text(json.dumps(results, indent=1))
  plots.learning_curves(
      {r: writer_lib.read_metrics(pathlib.Path(runs[0].get("workdir", out / f"{r}_seed0")))
       for r, runs in results.items()},
      out / "miou_curves.png", keys=("val/miou",), title=f"RSS ablation on {data}: val mIoU")
  return table


def main():
  p = harness.parser(__doc__, out="/tmp/rss_ablation", data="camvid", rows=DEFAULT_ROWS,
                     steps=1000)
  p.add_argument("--key-seeds", type=int, default=3, help="seeds of the KEY_ROWS")
  p.add_argument("--cold-steps", type=int, default=600)
  p.add_argument("--resize", default="", help="H,W at load (default: the config's 120,160)")
  p.add_argument("--embedded", action="store_true",
                 help="the quick start's dataset and configs instead of CamVid")
  p.add_argument("--start", choices=("none", "model", "backbone"), default="none",
                 help="start every row from PSL on --pretrain-root: the whole model but the "
                      "classifier (model) or its backbone (backbone)")
  p.add_argument("--pretrain-root", type=pathlib.Path, default=harness.SHARED / "idd_lite")
  p.add_argument("--pretrain-dir", type=pathlib.Path, default=None,
                 help="where the pre-training is trained once and reused "
                      "(default: OUT/../pretrain_<root name>)")
  p.add_argument("--pretrain-steps", type=int, default=3000)
  args = p.parse_args()
  if args.pretrain_dir is None:
    args.pretrain_dir = args.out.parent / f"pretrain_{args.pretrain_root.name}"
  args.resize = tuple(int(x) for x in args.resize.split(",")) if args.resize else None
  args.out.mkdir(parents=True, exist_ok=True)
  rows = harness.parse_rows(p, args, ROWS)
  cold = cold_start_checkpoint(args.out, args.cold_steps) if any(
      r.startswith(("cold", "pre_")) for r in rows) and not args.summary_only else None
  _, table = harness.run_rows(
      rows, lambda r, seed, workdir: run_row(r, seed, workdir, args, cold),
      lambda results: write_summary(args.out, results, args), out=args.out,
      summary_only=args.summary_only,
      seeds=lambda r: args.key_seeds if r in KEY_ROWS else args.seeds,
      first_seed=args.first_seed)
  psr_panel(args.out, args)
  print(table)


if __name__ == "__main__":
  main()
