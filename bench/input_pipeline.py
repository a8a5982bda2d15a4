"""Benchmark: the input pipeline against the train step, at each paper config's
settings, and start-up on a 20k-image tree.

    python bench/input_pipeline.py [--out /tmp/jaxseg_input] [--batches 4]
        [--workers 0,2] [--no-step] [--only rss_pascal,...] [--json out.json]

For each paper config a synthetic tree in that dataset's own layout is written
(`jaxseg.data.mock_trees`, images at the dataset's typical size), and the
config's own training stream (`train_dataset_from_config`: its crop, batch,
random scale, flip and photometric jitter, lazy decoding) is timed as images/s
after its first batch, with 0 grain worker processes (2 reader threads, the
default) and with the `--workers` counts. Beside it, the images/s the train
step consumes: the config's model and crop, the PSL step at batch 2 (RSS and
CiSS steps cost a small multiple of it: bench/train_step.py --rss --ciss),
compiled and timed on this machine. Loading keeps up where its images/s is at
least the step's.

Start-up: `get_source` (train and val, lazy as at ADE20K's own image size) on
an ADE20K-layout tree of 20,210 + 2,000 images, and the first batch after it.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp

from jaxseg import models, optim
from jaxseg import config as config_lib
from jaxseg.data import get_source, mock_trees, pascal, train_dataset_from_config
from jaxseg.trainers import psl

import train_step  # bench/train_step.py, beside this script

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
# config (file, arg) -> (writer, split sizes, image size (H, W))
ROWS = {
    "rss_pascal": ("rss_pascal.py", None, "pascal_context", (375, 500)),
    "rss_voc": ("rss_voc.py", None, "voc_aug", (375, 500)),
    "rss_cityscapes": ("rss_cityscapes.py", None, "cityscapes", (1024, 2048)),
    "ciss_ade20k": ("ciss_ade20k.py", "ciss", "ade20k", (512, 683)),
    "ciss_cityscapes": ("ciss_cityscapes.py", "ciss", "cityscapes", (1024, 2048)),
    "ciss_pascal_context": ("ciss_pascal_context.py", "ciss", "pascal_context", (375, 500)),
}


def write_tree(out: pathlib.Path, writer: str, size, n: int) -> pathlib.Path:
  root = out / f"{writer}_{size[0]}x{size[1]}_{n}"
  done = root / ".done"
  if writer == "voc_aug":
    if not done.exists():
      voc, sbd = mock_trees.voc_aug(root, train=n // 2, aug=n - n // 2, val=2, size=size)
      pascal.convert_sbd(sbd, voc)
      done.touch()
    return root / "VOCdevkit" / "VOC2012"
  splits = ({"training": n, "validation": 2} if writer in ("ade20k", "mapillary")
            else {"train": n, "val": 2})
  if not done.exists():
    base = mock_trees.WRITERS[writer](root, splits=splits, size=size)
    done.touch()
    return base
  return {"pascal_context": root / "VOCdevkit" / "VOC2010",
          "ade20k": root / "ADEChallengeData2016"}.get(writer, root)


def time_stream(config, source, *, batches: int, workers: int) -> dict:
  ds = train_dataset_from_config(config.data, source, global_batch_size=config.batch_size,
                                 seed=0, worker_count=workers)
  it = iter(ds)
  t0 = time.perf_counter()
  next(it)
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  elapsed = time.perf_counter() - t0
  return {"first_batch_s": first, "images_per_s": batches * config.batch_size / elapsed}


def time_step(config, num_classes: int, steps: int = 2, batch: int = 2) -> dict:
  h, w = config.data.crop_size
  c = config_lib.default_config()
  c.model, c.optim = config.model, config.optim
  c.data.crop_size, c.data.ignore_index = (h, w), 255
  model = models.build_model(c.model, num_classes)
  params = jax.jit(lambda r: model.init({"params": r}, jnp.zeros((1, h, w, 3)),
                                        train=False)["params"])(jax.random.key(0))
  tx, schedule = optim.make_optimizer(c.optim, params, total_steps=10_000,
                                      classifier_pattern=models.CLASSIFIER_PATTERN)

  class Info:
    ignore_index, class_weights = 255, None
  Info.num_classes = num_classes
  loss_fn = psl.make_loss(c, model=model, info=Info)
  step_ms, compile_s = train_step.time_update(
      *train_step.build_update(loss_fn, params, tx, schedule, batch=batch, height=h, width=w,
                               num_classes=num_classes), steps)
  return {"step_images_per_s": batch / step_ms * 1000, "step_batch": batch,
          "step_compile_s": compile_s}


def startup(out: pathlib.Path) -> dict:
  root = out / "ade20k_20k"
  if not (root / ".done").exists():
    t0 = time.perf_counter()
    mock_trees.ade20k(root, splits={"training": 20_210, "validation": 2_000}, size=(8, 8))
    (root / ".done").touch()
    print(f"wrote the 20k tree in {time.perf_counter() - t0:.0f} s")
  c = config_lib.load_config_file(CONFIGS / "ciss_ade20k.py", "ciss")
  c.data.root = str(root / "ADEChallengeData2016")
  c.data.crop_size, c.batch_size = (8, 8), 8
  # The tree's 8x8 images would fit the auto cache; ADE20K's own (~512x683) do not.
  c.data.cache = False
  t0 = time.perf_counter()
  train, _ = get_source(c.data, "train")
  val, _ = get_source(c.data, "val")
  index_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  next(iter(train_dataset_from_config(c.data, train, global_batch_size=8, seed=0)))
  return {"images": len(train) + len(val), "index_s": index_s,
          "first_batch_s": time.perf_counter() - t0}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/jaxseg_input"))
  p.add_argument("--batches", type=int, default=4, help="timed batches per stream")
  p.add_argument("--workers", default="2", help="grain worker counts beside 0")
  p.add_argument("--no-step", action="store_true", help="skip timing the train steps")
  p.add_argument("--only", default=",".join(ROWS))
  p.add_argument("--json", type=pathlib.Path)
  args = p.parse_args()
  workers = [0] + [int(w) for w in args.workers.split(",") if w]
  records = []
  header = ("| config | image | crop | batch | scale | " +
            " | ".join(f"load img/s ({w} workers)" for w in workers) +
            " | step img/s (batch 2) |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for name in filter(None, args.only.split(",")):
    file, arg, writer, size = ROWS[name]
    c = config_lib.load_config_file(CONFIGS / file, arg)
    c.data.root = str(write_tree(args.out, writer, size, n=max(2 * c.batch_size, 8)))
    source, info = get_source(c.data, c.data.train_split)
    rec = {"config": name, "image": list(size), "crop": list(c.data.crop_size),
           "batch": c.batch_size, "scale_range": list(c.data.scale_range)}
    for w in workers:
      rec[f"workers_{w}"] = time_stream(c, source, batches=args.batches, workers=w)
    if not args.no_step:
      rec.update(time_step(c, info.num_classes))
    records.append(rec)
    step = f"{rec['step_images_per_s']:.2f}" if "step_images_per_s" in rec else "-"
    lines.append(f"| {name} | {size[0]}x{size[1]} | {c.data.crop_size[0]}x{c.data.crop_size[1]}"
                 f" | {c.batch_size} | {c.data.scale_range[0]}-{c.data.scale_range[1]} | " +
                 " | ".join(f"{rec[f'workers_{w}']['images_per_s']:.1f}" for w in workers) +
                 f" | {step} |")
    print("\n".join(lines), flush=True)
  s = startup(args.out)
  print(f"\nstart-up on {s['images']} images (ADE20K layout): index {s['index_s']:.2f} s, "
        f"first batch {s['first_batch_s']:.2f} s")
  if args.json:
    args.json.write_text(json.dumps({"rows": records, "startup": s}, indent=1))


if __name__ == "__main__":
  main()
