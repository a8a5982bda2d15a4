"""Benchmark: compile time and images/s of the PSL train step.

    python bench/train_step.py [--json out.json] [--torch] [--rss [--methods M ...]] [--ciss]
        [--only NAME] [--steps N] [--malloc default|keep|hugepages]

Rows (all with AdamW and the full jitted, donated update the trainer uses):
  sfpnext_nano_512      SFPNeXt + ConvNeXt-V2-nano, 512×512, batch 2
  linear_nano_96x128    ConvNeXt-V2-nano + 1×1 head, 96×128, batch 8
  linear_nano_512       ConvNeXt-V2-nano + 1×1 head, 512×512, batch 2
  camvid_cpu            configs/psl_camvid.py's model, crop and batch
  deeplabv3_r101_512    DeepLabV3 + ResNet-101c (output stride 8, ASPP 512), 512×512, batch 2
  segmenter_vitb_512    Segmenter + ViT-B/16, 512×512, batch 2
  segmenter_vitl_512    Segmenter + ViT-L/16 (configs/rss_pascal.py:model=segmenter)

With `--torch` (needs `pip install torch==2.13.0`; timm for the Tab. 4 rows), the
ConvNeXt-V2-nano + 1×1 head rows and the Tab. 4 rows are also timed in PyTorch on
the same machine in the same run (bench/torch_reference.py: the same
architectures, AdamW, 2 threads); the ratio column is torch ms / jax ms.

All contenders of a row (jax, torch, the `--rss` / `--ciss` methods) are
compiled and warmed up first, then timed in `--steps` interleaved rounds (per
round, each in turn: one untimed step, one timed step; medians): on a shared
machine whose speed drifts by ±25 % over minutes, the ratio is then measured
under the same conditions.

`--malloc hugepages|keep` sets the host allocator's policy (jaxseg/host.py)
for both frameworks, which share the process.

With `--rss`, every row is also timed with the RSS losses on the same model,
batch and labels, in the same run (RSS_METHODS): pixel-level (N=4, SyncAN), the
paper's image-level row (PSR 1/16, 1/8, 1/4, 1 + PSD, N=4), jaxseg's per-class
recipe (`psr_class`), its scalar recipe (`scalar`; also with N = 64, with PSR
1/8 + 1/4, with N = 512) and the scalar recipe with PPO's clipped ratio over 2
epochs per draw; the last column is then the step
time as a multiple of the PSL step (targets: pixel ≤ 1.1×, image ≤ 1.25× at
nano 512×512; the recipes ≤ 1.2×, the scalar recipe ≤ 1.3× at camvid_cpu).

With `--ciss`, every row is also timed as a CiSS-Net step (T = 2, policy
context) on that model as its frozen trunk, against the PSL step of the same
trunk (configs/ciss_camvid.py's net widths and learning-rate factors on
camvid_cpu, the schema's paper values elsewhere).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

from jaxseg import host

# Before JAX, numpy or torch start a thread (jaxseg/host.py).
host.configure(host.argv_policy(sys.argv))

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import harness  # noqa: E402  (bench/)

from jaxseg import algorithms
from jaxseg import config as config_lib
from jaxseg import models, optim
from jaxseg.trainers import ciss, psl, rss
from jaxseg.trainers import step as step_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


class _Info:
  ignore_index = 255
  class_weights = None

  def __init__(self, num_classes):
    self.num_classes = num_classes


# RSS Tab. 4's other models (as configs/rss_pascal.py's `model=` options, no drop
# path or dropout so that the PyTorch equivalents do the same work).
TAB4_ROWS = {
    "deeplabv3_r101_512": {"name": "deeplabv3", "backbone": "resnet101c", "norm": "affine",
                           "fpn_dim": 512, "dropout": 0.0},
    "segmenter_vitb_512": {"name": "segmenter", "backbone": "vit_base_patch16",
                           "drop_path_rate": 0.0, "dropout": 0.0},
    "segmenter_vitl_512": {"name": "segmenter", "backbone": "vit_large_patch16",
                           "drop_path_rate": 0.0, "dropout": 0.0},
}
TORCH_ROWS = ("linear_nano_96x128", "linear_nano_512", *TAB4_ROWS)


def jax_config(name: str) -> tuple[ml_collections.ConfigDict, int, int, int]:
  c = config_lib.default_config()
  c.optim.warmup_steps = 0
  if name == "camvid_cpu":
    c = config_lib.load_config_file(CONFIGS / "psl_camvid.py")
    return c, *c.data.crop_size, c.batch_size
  if name in TAB4_ROWS:
    c.model.update(TAB4_ROWS[name])
    return c, 512, 512, 2
  c.model.backbone = "convnext_v2_nano"
  if name == "sfpnext_nano_512":
    c.model.name = "sfpnext"
    return c, 512, 512, 2
  c.model.name = "linear"
  return c, *{"linear_nano_96x128": (96, 128, 8), "linear_nano_512": (512, 512, 2)}[name]


# --rss: each method is a configs/rss_camvid.py variant's `config.rss` (with
# overrides) on the row's model, batch and labels.
RSS_METHODS = {
    "rss_pixel": ("pixel", {"rss.num_samples": 4}),
    "rss_paper": ("psr_multi_psd", {"rss.num_samples": 4}),  # Tab. 2's full row
    "rss_class": ("psr_class", {}),  # jaxseg's per-class recipe
    "rss_scalar": ("scalar", {}),  # jaxseg's scalar recipe
    "rss_scalar_n64": ("scalar", {"rss.num_samples": 64}),
    "rss_scalar_two": ("scalar", {"rss.psr_scales": (1 / 8, 1 / 4)}),
    "rss_scalar_n512": ("scalar", {"rss.num_samples": 512}),
    "rss_scalar_clip2": ("scalar", {"rss.policy_loss": "clip", "rss.epochs": 2}),
}
METHODS = ("psl", *RSS_METHODS, "ciss_t2")


def build_update(loss_fn, params, tx, schedule, *, batch: int, height: int, width: int,
                 num_classes: int):
  """(the trainer's jitted, donated update of `loss_fn` — or of a `step.Epochs`
  — its state, a fixed random batch)."""
  grads = loss_fn if isinstance(loss_fn, step_lib.Epochs) else algorithms.as_grads_fn(loss_fn)
  update = jax.jit(step_lib.make_update(grads, tx, schedule), donate_argnums=0)
  state = step_lib.init_state(params, tx=tx, rng=jax.random.key(1))
  rng = np.random.default_rng(0)
  data = {"image": jnp.asarray(rng.integers(0, 255, (batch, height, width, 3), dtype=np.uint8)),
          "label": jnp.asarray(rng.integers(0, num_classes, (batch, height, width),
                                            dtype=np.int32))}
  return update, state, data


def jax_stepper(update, state, batch) -> tuple[Callable[[], None], float]:
  """(a callable running one step of the jitted, donated `update(state, batch)
  -> (state, metrics, _)` and carrying its state on, compile s), after a
  warm-up step."""
  t0 = time.perf_counter()
  compiled = update.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  carry = [state]

  def step():
    new, m, _ = compiled(carry[0], batch)
    jax.block_until_ready((new, m))
    carry[0] = new

  step()
  return step, compile_s


def interleaved_ms(steps: list[Callable[[], None]], rounds: int, warm: int = 1) -> list[float]:
  """Median ms of each callable over `rounds` rounds; in each round every
  callable in turn runs `warm` untimed steps, then one timed step (a lone
  callable, with nothing between its steps, runs timed steps only).

  A slow spell of a shared machine then falls on every contender alike, so
  their ratios hold where one-after-the-other medians drift by ±25 %; the
  untimed steps keep out what one framework leaves behind for the other
  (memory the kernel must map afresh: a jax step timed right after a torch
  step took 2× its time with 2 MB pages, jaxseg/host.py)."""
  times = [[] for _ in steps]
  for _ in range(rounds):
    for t, step in zip(times, steps):
      for _ in range(warm if len(steps) > 1 else 0):
        step()
      t0 = time.perf_counter()
      step()
      t.append(time.perf_counter() - t0)
  return [1000 * statistics.median(t) for t in times]


def time_update(update, state, batch, steps: int) -> tuple[float, float]:
  """(median step ms after a warm-up step, compile s) of a jitted, donated
  `update(state, batch) -> (state, metrics, _)`."""
  step, compile_s = jax_stepper(update, state, batch)
  return interleaved_ms([step], steps)[0], compile_s


def make_row(name: str, num_classes: int = 19, method: str = "psl"):
  """(update, state, batch, (height, width, batch size)) of a row's step."""
  c, h, w, b = jax_config(name)
  if method == "ciss_t2":
    if name == "camvid_cpu":
      c.ciss = config_lib.load_config_file(CONFIGS / "ciss_camvid.py").ciss
    c.ciss.steps = 2
  c.data.crop_size = (h, w)
  if method in RSS_METHODS:
    variant, overrides = RSS_METHODS[method]
    c.rss = config_lib.load_config_file(CONFIGS / "rss_camvid.py", variant).rss
    c.update_from_flattened_dict(overrides)
  trainer = {"psl": "psl", "ciss_t2": "ciss"}.get(method, "rss")
  return (*config_update(c, num_classes, trainer=trainer, batch=b), (h, w, b))


def config_update(c: ml_collections.ConfigDict, num_classes: int, *, trainer: str,
                  batch: int):
  """(update, state, batch) of a semantic config's step (`trainer`: psl, rss or
  ciss), on a random batch of `batch` crops of `c.data.crop_size`."""
  h, w = c.data.crop_size
  if trainer == "ciss":
    c.optim.lr_multipliers = ciss.lr_multipliers(c)
    model = ciss.build_model(c, _Info(num_classes))
  else:  # RSS's critic credit: policy logits and critic values (trainers/rss.py)
    critic = trainer == "rss" and c.rss.credit == "critic"
    model = models.build_model(c.model, num_classes * (2 if critic else 1))
  params = jax.jit(lambda r: model.init({"params": r}, jnp.zeros((1, h, w, 3)),
                                        train=False)["params"])(jax.random.key(0))
  make_loss = {"psl": psl.make_loss, "ciss": ciss.make_loss, "rss": rss.make_loss}[trainer]
  loss_fn = make_loss(c, model=model, info=_Info(num_classes))
  tx, schedule = optim.make_optimizer(c.optim, params, total_steps=10_000,
                                      classifier_pattern=models.CLASSIFIER_PATTERN,
                                      updates_per_step=getattr(loss_fn, "epochs", 1))
  return build_update(loss_fn, params, tx, schedule, batch=batch, height=h, width=w,
                      num_classes=num_classes)


def jax_row(name: str, num_classes: int = 19, method: str = "psl"):
  """(record without its time, one-step callable) of a row's jax step."""
  update, state, batch, (h, w, b) = make_row(name, num_classes, method)
  step, compile_s = jax_stepper(update, state, batch)
  return {"name": name, "framework": "jax", "method": method, "height": h, "width": w,
          "batch": b, "compile_s": compile_s}, step


def torch_row(name: str, num_classes: int = 19):
  """The PyTorch equivalent of a row (bench/torch_reference.py) as `jax_row`'s
  pair, None without torch."""
  try:
    import torch_reference  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  _, h, w, b = jax_config(name)
  return ({"name": name, "framework": "torch", "method": "psl", "height": h, "width": w,
           "batch": b, "compile_s": 0.0},
          torch_reference.make_step(name, h, w, b, num_classes))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              parents=[host.malloc_flag()])
  p.add_argument("--json", help="also write the records to this file")
  p.add_argument("--torch", action="store_true", help="time the PyTorch reference too")
  p.add_argument("--rss", action="store_true", help="time the RSS steps beside PSL")
  p.add_argument("--ciss", action="store_true", help="time the CiSS-Net T=2 step beside PSL")
  p.add_argument("--only", nargs="*", help="row names to run")
  p.add_argument("--methods", nargs="*", help="with --rss: only these RSS_METHODS")
  p.add_argument("--steps", type=int, default=5)
  args = p.parse_args()
  print(f"malloc policy (jaxseg/host.py): {host.describe(args.malloc)}")
  names = args.only or ["camvid_cpu", "linear_nano_96x128", "linear_nano_512",
                        "sfpnext_nano_512", "deeplabv3_r101_512", "segmenter_vitb_512"]
  records = []
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({jax.device_count()} device(s))", flush=True)
  header = (f"| {'name':<20} | {'fw':<5} | {'method':<10} | {'H×W':>8} | {'B':>2} "
            f"| {'step ms':>8} | {'img/s':>7} | {'compile s':>9} | {'ratio':>9} |")
  harness.print_header(header)
  for name in names:
    pairs = [jax_row(name)]
    if args.rss:
      unknown = set(args.methods or ()) - set(RSS_METHODS)
      if unknown:
        raise SystemExit(f"--methods {sorted(unknown)}: choose from {list(RSS_METHODS)}")
      pairs += [jax_row(name, method=m) for m in RSS_METHODS
                if not args.methods or m in args.methods]
    if args.ciss:
      pairs.append(jax_row(name, method="ciss_t2"))
    if args.torch and name in TORCH_ROWS:
      ref = torch_row(name)
      if ref is None:
        print("torch is not installed: pip install torch==2.13.0", file=sys.stderr)
      else:
        pairs.append(ref)
    # Every contender of a row is timed in the same rounds (interleaved_ms).
    rows = [dict(r, step_ms=ms, images_per_s=r["batch"] / ms * 1000) for (r, _), ms in
            zip(pairs, interleaved_ms([step for _, step in pairs], args.steps))]
    for r in rows:
      ratio = ""  # torch/jax on the PSL row, or ×PSL on an RSS row
      torch_rows = [x for x in rows if x["framework"] == "torch"]
      if r["method"] != "psl":
        ratio = f"{r['step_ms'] / rows[0]['step_ms']:.2f}×PSL"
      elif torch_rows and r["framework"] == "jax":
        ratio = f"{torch_rows[0]['step_ms'] / r['step_ms']:.2f}×"
      print(f"| {r['name']:<20} | {r['framework']:<5} | {r['method']:<10} "
            f"| {r['height']:>3}×{r['width']:<4} "
            f"| {r['batch']:>2} | {r['step_ms']:8.1f} | {r['images_per_s']:7.2f} "
            f"| {r['compile_s']:9.1f} | {ratio:>9} |", flush=True)
    records += rows
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
  main()
