"""RSS trainer: reads `config.rss` into `algorithms.rss.make_loss` and, with
`rss.compare_psl`, runs PSL on the same budget first (a stage) and writes a
comparison table and plot."""
from __future__ import annotations

from etils import epath

import jax

from jaxseg import algorithms
from jaxseg import config as config_lib
from jaxseg import models
from jaxseg import parallel
from jaxseg import plots
from jaxseg import rewards
from jaxseg.algorithms import policy
from jaxseg.algorithms import rss
from jaxseg.trainers import psl
from jaxseg.trainers import semantic
from jaxseg.trainers import stages
from jaxseg.trainers import step as step_lib
from jaxseg.trainers import writer as writer_lib


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
  for key, choices in (("level", rss.LEVELS), ("pixel_group", rss.PIXEL_GROUPS),
                       ("image_group", rss.IMAGE_GROUPS), ("psr_schedule", rss.SCHEDULES),
                       ("score", tuple(sorted(rss.SCORES))), ("credit", rss.CREDITS),
                       ("advantage", rewards.ADVANTAGE_ESTIMATORS)):
    config_lib.check_choice(f"rss.{key}", c[key], choices)
  if c.num_samples < 2:
    raise ValueError(f"config.rss.num_samples={c.num_samples}: advantages need N >= 2.")
  config_lib.check_choice("rss.policy_loss", c.policy_loss, policy.POLICY_LOSSES)
  if c.epochs < 1 or (c.epochs > 1 and c.level != "image"):
    raise ValueError(f"config.rss.epochs={c.epochs}: several updates per draw (>= 1) are "
                     "built for the image level.")
  if not 0.0 < c.clip_eps < 1.0:
    raise ValueError(f"config.rss.clip_eps={c.clip_eps} must lie in (0, 1).")
  if not 0.0 < c.resample <= 1.0:
    raise ValueError(f"config.rss.resample={c.resample} must lie in (0, 1].")
  if not 0.0 <= c.explore_eps < 1.0:
    raise ValueError(f"config.rss.explore_eps={c.explore_eps} must lie in [0, 1).")
  if c.image_group == "global" and (c.advantage != "grpo" or c.credit not in ("map", "psd")):
    raise ValueError(f"config.rss.image_group='global' normalises every map of the batch "
                     f"by GRPO: it needs config.rss.advantage='grpo' (not {c.advantage!r}) "
                     f"and a scalar credit (map or psd, not {c.credit!r}).")
  if c.psr_weights and len(c.psr_weights) != len(c.psr_scales):
    raise ValueError(f"config.rss.psr_weights has {len(c.psr_weights)} entries for "
                     f"{len(c.psr_scales)} config.rss.psr_scales.")
  if config.batch_size % num_shards:
    raise ValueError(f"config.batch_size={config.batch_size} does not split into "
                     f"{num_shards} SyncAN-off shards (config.rss.nosync_groups).")


def make_loss(config, *, model, info, mesh=None):
  """The RSS loss `(params, batch, rng, step) -> (loss, metrics)` of `config.rss`,
  or with `rss.epochs` > 1 a `step.Epochs` (the draw, then that many updates)."""
  c = config.rss
  num_devices = 1 if mesh is None else mesh.shape[parallel.DATA_AXIS]
  groups = 1 if c.sync_an else (c.nosync_groups or num_devices)
  validate(config, groups)
  apply_fn = algorithms.make_apply_fn(model)
  kwargs = dict(
      level=c.level, num_samples=c.num_samples,
      num_classes=info.num_classes, ignore_index=info.ignore_index, groups=groups,
      pixel_group=c.pixel_group, image_group=c.image_group,
      score_fn=rss.SCORES[c.score](info.num_classes, info.ignore_index),
      factors=scale_factors(c, config.data.crop_size), weights=tuple(c.psr_weights),
      schedule=c.psr_schedule, unlock_fraction=c.psr_unlock_fraction,
      total_steps=config.total_steps, credit=c.credit, advantage=c.advantage,
      psd_std_normalize=c.psd_std_normalize, entropy_coef=c.entropy_coef,
      explore_eps=c.explore_eps, drop_flat=c.drop_flat, resample=c.resample,
      policy_loss=c.policy_loss, clip_eps=c.clip_eps, critic_coef=c.critic_coef)
  loss_fn = rss.make_loss(apply_fn, diagnostics=c.class_diagnostics, **kwargs)
  if c.epochs == 1:
    return loss_fn
  return step_lib.Epochs(rss.make_rollout(apply_fn, **kwargs), algorithms.as_grads_fn(loss_fn),
                         c.epochs)


def train_rss(config, workdir, earlier=None):
  """The RSS run; with credit "critic" the model's classifier has 2·C outputs
  (policy logits, then the critic's values) and both are evaluated (`val/miou`
  of the policy, `val/miou_critic` of the critic's argmax)."""
  del earlier
  if config.rss.credit != "critic" or config.rss.level != "image":
    return semantic.train(config, workdir, make_loss=make_loss)

  def build_model(config, info):
    return models.build_model(config.model, 2 * info.num_classes)

  def make_predict(model, config):
    apply_fn = algorithms.make_apply_fn(model)
    return jax.jit(lambda params, images: apply_fn(params, images, train=False)), \
        ("", "critic"), 0

  return semantic.train(config, workdir, make_loss=make_loss, build_model=build_model,
                        make_predict=make_predict)


def train_and_evaluate(config, workdir, earlier=None):
  """Trains RSS; with `cold_start.root`, PSL on that dataset first (stage
  `cold`, its params — all but the classifier, or the backbone — start what
  follows); with `rss.compare_psl`, PSL on the
  same budget first (stage `psl`) and RSS into WORKDIR/rss, then a comparison.
  Finished stages are reused."""
  del earlier
  cold = stages.cold_stage(config, psl.train_psl)
  if not config.rss.compare_psl and not cold:
    return train_rss(config, workdir)
  workdir = epath.Path(workdir)
  plan = list(cold)
  if config.rss.compare_psl:
    plan.append(stages.Stage("psl", psl.train_psl,
                             stages.cold_init(config, cold, {"trainer": "psl"})))
  plan.append(stages.Stage("rss", train_rss, stages.cold_init(config, cold), final=True))
  runs = stages.run_stages(config, workdir, plan)
  runs.pop("cold", None)
  if config.rss.compare_psl:
    write_comparison(workdir, runs, title=f"RSS ({config.rss.level}-level) vs PSL")
  return runs["rss"]


def write_comparison(workdir: epath.Path, runs: dict, *, title: str) -> str:
  """Markdown table of final val metrics and a val-mIoU plot of several runs."""
  rows = ["| run | steps | val mIoU | pixel acc | ratio to psl |", "|---|---|---|---|---|"]
  base = runs["psl"].metrics.get("val/miou") if "psl" in runs else None
  for name, run in runs.items():
    m = run.metrics
    ratio = f"{m['val/miou'] / base:.2f}" if base else "-"
    rows.append(f"| {name} | {run.step} | {m['val/miou']:.3f} | "
                f"{m['val/pixel_acc']:.3f} | {ratio} |")
  table = "\n".join(rows)
  if jax.process_index() == 0:
    (workdir / "comparison.md").write_text(f"# {title}\n\n{table}\n")
    plots.learning_curves({k: writer_lib.read_metrics(r.workdir) for k, r in runs.items()},
                          workdir / "comparison.png", keys=("val/miou", "val/pixel_acc"),
                          title=title)
  print(f"\n{title}\n{table}\nplot: {workdir / 'comparison.png'}")
  return table
