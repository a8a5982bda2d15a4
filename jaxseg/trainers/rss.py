"""RSS: semantic segmentation trained from rewards (SPEC §1).

The whole method is a loss for `common.train_and_evaluate`, so sampling,
rewards, advantages and the losses over every scale sit inside the one jitted,
sharded train step. Two levels (`config.rss.level`):

* pixel: N actions per pixel, `r = 1[a == y]`, GRPO-normalised over the valid
  (pixel, sample) rewards of the global batch (SyncAN) or of each shard.
* image: per PSR scale, N whole action maps sampled from average-pooled logits,
  one reward per map (`rss.score`, default the image's mIoU against the block-
  mode label), advantages normalised over the N maps of the image (naive) or
  pair-wise spatial differences (PSD); one loss term per scale.

Policy-gradient loss at each scale: `-Σ stop_gradient(A)·log π(a) / (N·#valid)`
over valid positions, minus `rss.entropy_coef` × the mean policy entropy.
"""
from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp

from jaxseg import parallel
from jaxseg import plots
from jaxseg import rewards
from jaxseg.trainers import common
from jaxseg.trainers import psl
from jaxseg.trainers import writer as writer_lib

LEVELS = ("pixel", "image")
PIXEL_GROUPS = ("global", "per_pixel")
IMAGE_GROUPS = ("image", "global")
SCHEDULES = ("all", "coarse_to_fine")


# The ablation rows of the paper's Tables 1 and 2 (configs/rss_*.py:VARIANT).
VARIANTS = ("psl", "pixel", "pixel_nosync", "naive", "psr_single", "psr_single_psd",
            "psr_multi", "psr_multi_psd")
PSR_SINGLE = (1 / 8,)
PSR_MULTI = (1 / 16, 1 / 8, 1 / 4, 1.0)


def apply_variant(c, variant: str):
  """Sets `c.trainer` and the `c.rss` fields of one ablation row, in place."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown RSS variant {variant!r}; choose from {VARIANTS}.")
  c.trainer = "psl" if variant == "psl" else "rss"
  if variant.startswith("pixel"):
    c.rss.level = "pixel"
    c.rss.sync_an = variant == "pixel"
  elif variant != "psl":
    c.rss.level = "image"
    c.rss.psr_scales = {"naive": (1.0,), "psr_single": PSR_SINGLE,
                        "psr_multi": PSR_MULTI}[variant.removesuffix("_psd")]
    c.rss.psd = variant.endswith("_psd")
  return c


# `--config=configs/rss_*.py:VARIANT,OPTION...` options (besides VARIANT).
CONFIG_OPTIONS = ("runlocal", "lr_factor", "cold")


def apply_options(c, args: dict[str, str]):
  """`lr_factor=F` (Tab. 3: the classifier's learning-rate factor) and
  `cold=DIR` (cold start from another run's checkpoint), in place."""
  if "lr_factor" in args:
    c.optim.last_layer_lr_factor = float(args["lr_factor"])
  if "cold" in args:
    c.init_from = args["cold"]
  return c


def _accuracy_score(actions, labels, *, ignore_index):
  r, valid = rewards.pixel_correctness(actions, labels, ignore_index=ignore_index)
  return jnp.sum(r) / jnp.maximum(jnp.sum(valid), 1)


# Per-image score functions `(actions (H, W), labels (H, W)) -> ()`, built from
# (num_classes, ignore_index). Register another (e.g. `rewards.host_score(fn)`
# around an external evaluator) to train on it.
SCORES = {
    "miou": lambda num_classes, ignore_index: functools.partial(
        rewards.image_miou, num_classes=num_classes, ignore_index=ignore_index),
    "pixel_accuracy": lambda num_classes, ignore_index: functools.partial(
        _accuracy_score, ignore_index=ignore_index),
}


def scale_factors(c, crop_size) -> list[int]:
  """`rss.psr_scales` (fractions of the label map) -> integer pooling factors."""
  factors = []
  for s in c.psr_scales:
    f = round(1 / s) if s > 0 else 0
    if s <= 0 or s > 1 or abs(f * s - 1) > 1e-6:
      raise ValueError(f"config.rss.psr_scales entry {s} must be 1/k for an integer k "
                       "(e.g. 0.125 for 1/8 of the label map).")
    if any(d % f for d in crop_size):
      raise ValueError(f"config.rss.psr_scales entry {s} (pooling {f}) must divide "
                       f"config.data.crop_size={tuple(crop_size)}.")
    factors.append(f)
  return factors


def validate(config, num_shards: int) -> None:
  c = config.rss
  if c.level not in LEVELS:
    raise ValueError(f"config.rss.level={c.level!r} is unknown; choose from {LEVELS}.")
  if c.pixel_group not in PIXEL_GROUPS:
    raise ValueError(f"config.rss.pixel_group={c.pixel_group!r}; choose from {PIXEL_GROUPS}.")
  if c.image_group not in IMAGE_GROUPS:
    raise ValueError(f"config.rss.image_group={c.image_group!r}; choose from {IMAGE_GROUPS}.")
  if c.psr_schedule not in SCHEDULES:
    raise ValueError(f"config.rss.psr_schedule={c.psr_schedule!r}; choose from {SCHEDULES}.")
  if c.score not in SCORES:
    raise ValueError(f"config.rss.score={c.score!r} is unknown; choose from {sorted(SCORES)}.")
  if c.num_samples < 2:
    raise ValueError(f"config.rss.num_samples={c.num_samples}: advantages need N >= 2.")
  if c.psr_weights and len(c.psr_weights) != len(c.psr_scales):
    raise ValueError(f"config.rss.psr_weights has {len(c.psr_weights)} entries for "
                     f"{len(c.psr_scales)} config.rss.psr_scales.")
  if config.batch_size % num_shards:
    raise ValueError(f"config.batch_size={config.batch_size} does not split into "
                     f"{num_shards} SyncAN-off shards (config.rss.nosync_groups).")


def _sharded_normalize(r, where=None, *, groups: int):
  """`normalize_advantages` per shard: the batch axis (axis 0 of `r`) split
  into `groups` contiguous shards, each normalised on its own (SyncAN off).
  With `groups == 1` this is the global (SyncAN) statistic: under `jit` with a
  sharded batch XLA all-reduces the sums, as `psum` does inside `shard_map`."""
  split = lambda x: x.reshape(groups, r.shape[0] // groups, *r.shape[1:])
  adv = rewards.normalize_advantages(split(r), where=None if where is None else split(where),
                                     axis=tuple(range(1, r.ndim + 1)))
  return adv.reshape(r.shape)


def _sample(rng, logits, num_samples):
  """N actions per position and their log-probs, both (B, N, ...)."""
  a = rewards.sample_actions(rng, jax.lax.stop_gradient(logits), num_samples)
  logp = rewards.action_log_probs(logits, a)
  return jnp.moveaxis(a, 0, 1), jnp.moveaxis(logp, 0, 1)


def _masked_std(x, mask):
  """Standard deviation of `x` over the entries where `mask` holds."""
  n = jnp.maximum(jnp.sum(mask), 1)
  mean = jnp.sum(jnp.where(mask, x, 0)) / n
  return jnp.sqrt(jnp.sum(jnp.where(mask, (x - mean) ** 2, 0)) / n)


def _policy_loss(adv, logp, valid, num_samples):
  """`-Σ stop_gradient(A)·log π(a) / (N·#valid)`; adv/logp (B, N, ...), valid (B, ...)."""
  valid = valid[:, None].astype(jnp.float32)
  count = jnp.maximum(jnp.sum(valid), 1.0)
  return -jnp.sum(jax.lax.stop_gradient(adv) * logp * valid) / (num_samples * count)


def pixel_level_loss(logits, labels, rng, *, num_samples, ignore_index, group="global",
                     groups=1):
  """Pixel-level RSS (SPEC §1.1). logits (B, H, W, C), labels (B, H, W).

  `a_n ~ π(z)` per pixel, `r_n(p) = 1[a_n(p) = y(p)]` on valid pixels,
  `A = (r − mean) / (std + eps)` over every valid (pixel, sample) of the batch
  (`groups` shards alone when SyncAN is off; `group="per_pixel"`: over the N
  samples of each pixel), loss `-Σ A·log π(a_n) / (N·#valid)`.
  """
  a, logp = _sample(rng, logits, num_samples)  # (B, N, H, W)
  r, valid = rewards.pixel_correctness(a, labels[:, None], ignore_index=ignore_index)
  if group == "per_pixel":
    adv = rewards.normalize_advantages(r, where=valid, axis=1)
  else:
    adv = _sharded_normalize(r, valid, groups=groups)
  loss = _policy_loss(adv, logp, valid[:, 0], num_samples)
  metrics = {"train/reward": jnp.sum(r) / jnp.maximum(jnp.sum(valid), 1),
             "train/adv_std": _masked_std(adv, valid)}
  return loss, metrics


def image_level_loss(logits, labels, rng, *, factor, num_samples, score_fn, num_classes,
                     ignore_index, psd, psd_std_normalize=False, group="image", groups=1):
  """Image-level RSS at one PSR scale `s = 1/factor` (SPEC §1.2).

  `z_s = avgpool_f(z)`, `y_s = blockmode_f(y)`, `a_n ~ π(z_s)` for n < N,
  `R_n = score(a_n, y_s)`. Advantages, broadcast over (h, w) unless PSD:
    naive: `A_n = (R_n − mean_n R) / (std_n R + eps)` over the N maps of an
           image (`group="image"`) or every map of the (shard's) batch;
    PSD:   `A_i(p) = Σ_j (R_i − R_j)·1[a_i(p) ≠ a_j(p)] / (N − 1)`, optionally
           divided by the std of its non-zero entries.
  Loss `-Σ_{n,p valid} A_n(p)·log π(a_n(p)) / (N·#valid)`. Returns (loss, metrics).
  """
  z = rewards.downsample_logits(logits, factor)
  y = rewards.downsample_labels(labels, factor, num_classes=num_classes,
                                ignore_index=ignore_index)
  a, logp = _sample(rng, z, num_samples)  # (B, N, h, w)
  r = rewards.sample_scores(score_fn, a, y)  # (B, N)
  valid = y != ignore_index  # (B, h, w)
  metrics = {}
  if psd:
    adv = jax.vmap(rewards.pairwise_spatial_difference)(a, r)  # (B, N, h, w)
    mask = valid[:, None] & (adv != 0)
    metrics["psd_nonzero"] = jnp.sum(mask) / jnp.maximum(num_samples * jnp.sum(valid), 1)
    if psd_std_normalize:
      m = mask.astype(jnp.float32)
      std = jnp.sqrt(jnp.sum(adv * adv * m) / jnp.maximum(jnp.sum(m), 1.0))
      adv = adv / (std + 1e-6)
  else:
    if group == "image":
      adv_img = rewards.normalize_advantages(r, axis=1)
    else:
      adv_img = _sharded_normalize(r, groups=groups)
    adv = jnp.broadcast_to(adv_img[:, :, None, None], a.shape)
  loss = _policy_loss(adv, logp, valid, num_samples)
  metrics["reward"] = jnp.mean(r)
  metrics["adv_std"] = _masked_std(adv, jnp.broadcast_to(valid[:, None], adv.shape))
  return loss, metrics


def scale_weights(c, factors, step, total_steps):
  """Per-scale loss weights at `step`: `rss.psr_weights` (default 1 each),
  zeroed for scales not yet unlocked by the coarse-to-fine schedule (scales
  unlock coarsest first, evenly over the first `psr_unlock_fraction` of training)."""
  w = jnp.asarray(c.psr_weights or [1.0] * len(factors), jnp.float32)
  if c.psr_schedule == "coarse_to_fine" and len(factors) > 1:
    rank = jnp.asarray([sorted(factors, reverse=True).index(f) for f in factors])
    span = c.psr_unlock_fraction * total_steps / len(factors)
    w = w * (step >= rank * span)
  return w


def make_loss(*, config, apply_fn, info, mesh=None):
  """The RSS loss `(params, batch, rng, step) -> (loss, metrics)`."""
  c = config.rss
  num_devices = 1 if mesh is None else mesh.shape[parallel.DATA_AXIS]
  groups = 1 if c.sync_an else (c.nosync_groups or num_devices)
  validate(config, groups)
  factors = scale_factors(c, config.data.crop_size)
  score_fn = SCORES[c.score](info.num_classes, info.ignore_index)
  ignore = info.ignore_index

  def loss_fn(params, batch, rng, step):
    rng_model, rng_sample = jax.random.split(rng)
    labels = batch["label"]
    logits = apply_fn(params, batch["image"], train=True, rng=rng_model)
    valid = labels != ignore
    ent = jnp.sum(jnp.where(valid, rewards.entropy(logits), 0)) / jnp.maximum(jnp.sum(valid), 1)
    metrics = {"train/entropy": ent}
    if c.level == "pixel":
      loss, m = pixel_level_loss(logits, labels, rng_sample, num_samples=c.num_samples,
                                 ignore_index=ignore, group=c.pixel_group, groups=groups)
      metrics.update(m)
    else:
      weights = scale_weights(c, factors, step, config.total_steps)
      loss = 0.0
      for k, (f, key) in enumerate(zip(factors, jax.random.split(rng_sample, len(factors)))):
        loss_k, m = image_level_loss(
            logits, labels, key, factor=f, num_samples=c.num_samples, score_fn=score_fn,
            num_classes=info.num_classes, ignore_index=ignore, psd=c.psd,
            psd_std_normalize=c.psd_std_normalize, group=c.image_group, groups=groups)
        loss = loss + weights[k] * loss_k
        metrics.update({f"train/{name}_s{f}": v for name, v in m.items()})
        metrics[f"train/pg_loss_s{f}"] = loss_k
    return loss - c.entropy_coef * ent, metrics

  return loss_fn


def train_and_evaluate(config, workdir):
  """Trains RSS; with `rss.compare_psl`, also PSL on the same budget (in
  `workdir/psl`, reused when already trained) and writes a comparison."""
  if not config.rss.compare_psl:
    return common.train_and_evaluate(config, workdir, make_loss=make_loss)
  workdir = pathlib.Path(workdir)
  psl_config = config.copy_and_resolve_references()
  psl_config.trainer = "psl"
  runs = {"psl": common.train_and_evaluate(psl_config, workdir / "psl",
                                           make_loss=psl.make_loss)}
  runs["rss"] = common.train_and_evaluate(config, workdir / "rss", make_loss=make_loss)
  write_comparison(workdir, runs, title=f"RSS ({config.rss.level}-level) vs PSL")
  return runs["rss"]


def write_comparison(workdir: pathlib.Path, runs: dict, *, title: str) -> str:
  """Markdown table of final val metrics and a val-mIoU plot of several runs."""
  rows = ["| run | steps | val mIoU | pixel acc | ratio to psl |", "|---|---|---|---|---|"]
  base = runs["psl"].metrics.get("val/miou") if "psl" in runs else None
  for name, run in runs.items():
    m = run.metrics
    ratio = f"{m['val/miou'] / base:.2f}" if base else "-"
    rows.append(f"| {name} | {int(run.state['step'])} | {m['val/miou']:.3f} | "
                f"{m['val/pixel_acc']:.3f} | {ratio} |")
  table = "\n".join(rows)
  if jax.process_index() == 0:
    (workdir / "comparison.md").write_text(f"# {title}\n\n{table}\n")
    plots.learning_curves({k: writer_lib.read_metrics(r.workdir) for k, r in runs.items()},
                          workdir / "comparison.png", keys=("val/miou", "val/pixel_acc"),
                          title=title)
  print(f"\n{title}\n{table}\nplot: {workdir / 'comparison.png'}")
  return table
