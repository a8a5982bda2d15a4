"""Diagnosis: how and when image-level RSS collapses onto a few classes.

    python bench/rss_collapse.py --config configs/rss_embedded.py:psr_multi_psd \
        --workdir /tmp/jaxseg_rss/rss --name quickstart --out docs [--root DIR]

Reads a run trained with `--config.rss.class_diagnostics=True` (its
`metrics.jsonl` has `train/cls/{pred,label,entropy,sampled}/<c>`) and writes
  OUT/rss_collapse_NAME.png      per class over training: predicted vs labelled
                                 pixel fraction, policy entropy on the class's
                                 pixels, fraction of sampled maps containing it,
                                 val IoU
  OUT/rss_sensitivity_NAME.png   the reward's sensitivity to one class being
                                 swapped for another, at the run's first PSR
                                 scale, on val images: ΔR = R(map with c painted
                                 d) − R(map), for the label map itself and for
                                 the trained policy's argmax map
and prints, per class, the first logged step at which the policy predicts it
on under a tenth of the pixels it labels ("collapsed at").
"""
from __future__ import annotations

import argparse
import pathlib

import harness
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import algorithms
from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg import data as data_lib
from jaxseg import models, rewards
from jaxseg.trainers import rss as rss_trainer
from jaxseg.trainers import writer as writer_lib

KINDS = ("pred", "label", "entropy", "sampled")


def series(records, kind: str, num_classes: int):
  """(steps, (T, C) values) of `train/cls/KIND/<c>` over the logged steps."""
  rows = [r for r in records if f"train/cls/{kind}/0" in r]
  steps = np.array([r["step"] for r in rows])
  vals = np.array([[np.nan if r.get(f"train/cls/{kind}/{c}") is None
                    else r[f"train/cls/{kind}/{c}"] for c in range(num_classes)] for r in rows])
  return steps, vals


def collapse_steps(records, num_classes: int) -> list[int | None]:
  """Per class: the first logged step with pred < label / 10 (None: never)."""
  steps, pred = series(records, "pred", num_classes)
  _, label = series(records, "label", num_classes)
  out = []
  for c in range(num_classes):
    hit = np.nonzero(pred[:, c] < label[:, c] / 10)[0]
    out.append(int(steps[hit[0]]) if hit.size else None)
  return out


def swap_sensitivity(maps, labels, *, factor, num_classes, ignore_index) -> np.ndarray:
  """(C, C) mean over images containing c in the map of
  `R(map with c → d) − R(map)`, R the image mIoU at pooling `factor`."""
  score = jax.jit(jax.vmap(lambda a, y: rewards.image_miou(
      a, y, num_classes=num_classes, ignore_index=ignore_index)))
  y = rewards.downsample_labels(jnp.asarray(labels), factor, num_classes=num_classes,
                                ignore_index=ignore_index)
  a = jnp.asarray(maps)
  base = np.asarray(score(a, y))
  out = np.full((num_classes, num_classes), np.nan)
  for c in range(num_classes):
    has = np.asarray(jnp.any((a == c) & (y != ignore_index), axis=(1, 2)))
    if not has.any():
      continue
    for d in range(num_classes):
      swapped = jnp.where(a == c, d, a)
      out[c, d] = float(np.mean((np.asarray(score(swapped, y)) - base)[has]))
  return out


def sensitivity(config, workdir, *, num_images: int = 32):
  """Swap sensitivities of the label map and of the trained argmax map."""
  source, info = data_lib.get_source(config.data, config.data.val_split)
  factor = rss_trainer.scale_factors(config.rss, config.data.crop_size)[0]
  model = models.build_model(config.model, info.num_classes)
  params = ckpt_lib.load_params(workdir)
  apply = jax.jit(lambda p, x: algorithms.make_apply_fn(model)(p, x, train=False))
  exs = [source[i] for i in range(min(num_images, len(source)))]
  h, w = (min(e["image"].shape[k] for e in exs) // 32 * 32 for k in (0, 1))
  images = np.stack([e["image"][:h, :w] for e in exs])
  labels = np.stack([np.asarray(e["label"][:h, :w]).astype(np.int32) for e in exs])
  logits = apply(params, jnp.asarray(images))
  pred = np.asarray(jnp.argmax(rewards.downsample_logits(logits, factor), -1))
  y = np.asarray(rewards.downsample_labels(jnp.asarray(labels), factor,
                                           num_classes=info.num_classes,
                                           ignore_index=info.ignore_index))
  kw = dict(factor=1, num_classes=info.num_classes, ignore_index=info.ignore_index)
  # The pooled label map scored against itself (f=1: already at the scale).
  return info, factor, {"label map": swap_sensitivity(np.where(y == info.ignore_index, 0, y),
                                                      y, **kw),
                        "policy argmax map": swap_sensitivity(pred, y, **kw)}


def plot_collapse(records, names, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  c = len(names)
  colors = plt.cm.tab20(np.linspace(0, 1, 20))[:c] if c > 10 else plt.cm.tab10(range(c))
  fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
  steps, pred = series(records, "pred", c)
  _, label = series(records, "label", c)
  for k in range(c):
    axes[0].plot(steps, pred[:, k], color=colors[k], label=names[k])
    axes[0].plot(steps, label[:, k], color=colors[k], ls=":", lw=1)
  axes[0].set_title("predicted (solid) vs labelled (dotted) pixel fraction")
  for ax, kind, t in ((axes[1], "entropy", "policy entropy on the class's pixels (nats)"),
                      (axes[2], "sampled", "fraction of sampled maps containing it")):
    s, v = series(records, kind, c)
    for k in range(c):
      ax.plot(s, v[:, k], color=colors[k])
    ax.set_title(t)
  val = [r for r in records if "val/miou" in r]
  for k in range(c):
    key = f"val/iou/{names[k]}"
    axes[3].plot([r["step"] for r in val], [r.get(key) for r in val], "o-", color=colors[k])
  axes[3].set_title("val IoU")
  for ax in axes:
    ax.set_xlabel("step")
  axes[0].legend(fontsize=7, ncol=2)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_sensitivity(mats, names, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(mats), figsize=(5.5 * len(mats), 4.8))
  lim = max(np.nanmax(np.abs(m)) for m in mats.values()) or 1.0
  for ax, (name, m) in zip(np.atleast_1d(axes), mats.items()):
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("painted as d")
    ax.set_ylabel("class c in the map")
    ax.set_title(f"{name}: mean ΔR", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="CONFIG.py[:ARG] the run was trained with")
  p.add_argument("--workdir", required=True, type=pathlib.Path)
  p.add_argument("--name", required=True)
  p.add_argument("--out", type=pathlib.Path, default=harness.ROOT / "docs")
  p.add_argument("--root", default="", help="--config.data.root of the run")
  args = p.parse_args()
  config = config_lib.load_config_spec(args.config)
  if args.root:
    config.data.root = args.root
  records = writer_lib.read_metrics(args.workdir)
  if not any("train/cls/pred/0" in r for r in records):
    raise SystemExit(f"{args.workdir}/metrics.jsonl has no train/cls/* keys: train with "
                     "--config.rss.class_diagnostics=True")
  info, factor, mats = sensitivity(config, args.workdir)
  names = list(info.class_names)
  args.out.mkdir(parents=True, exist_ok=True)
  plot_collapse(records, names, args.out / f"rss_collapse_{args.name}.png",
                f"{args.name}: per-class collapse diagnostics ({args.config})")
  plot_sensitivity(mats, names, args.out / f"rss_sensitivity_{args.name}.png",
                   f"{args.name}: reward change when class c is painted d (PSR 1/{factor})")
  print("class | label frac (last) | pred frac (last) | collapsed at | ΔR c→other (label map)")
  _, pred = series(records, "pred", len(names))
  _, label = series(records, "label", len(names))
  for k, (n, s) in enumerate(zip(names, collapse_steps(records, len(names)))):
    off = np.delete(mats["label map"][k], k)
    print(f"{n} | {label[-1, k]:.3f} | {pred[-1, k]:.3f} | {s} | "
          f"{np.nanmean(off) if np.isfinite(off).any() else float('nan'):.3f}")


if __name__ == "__main__":
  main()
