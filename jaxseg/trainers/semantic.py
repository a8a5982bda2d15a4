"""Semantic segmentation runs (PSL, RSS, CiSS-Net): model, optimizer, mIoU.

`train(config, workdir, make_loss=...)` builds the `loop.Task` of a semantic
method: the model (`build_model`, default `models.build_model`), its params
(cold start from `config.init_from`, or `init_params`), the optimizer with
the per-parameter learning-rate factors, the method's loss as the step
contract, and sliding-window mIoU evaluation (`make_predict` may return
several heads, e.g. CiSS-Net's steps t = 0, 2, ...) with a panel
(`make_panel`, default image | label | prediction). A method supplies

    make_loss(config, *, model, info, mesh) -> loss_fn(params, batch, rng, step)

(or a `step.Epochs` of a draw and its grads: several updates per draw).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from jaxseg import algorithms
from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg import models as models_lib
from jaxseg import optim as optim_lib
from jaxseg import parallel
from jaxseg import plots
from jaxseg.data import statistics as data_statistics
from jaxseg.evaluation import semantic
from jaxseg.models import weights
from jaxseg.trainers import cluster
from jaxseg.trainers import loop
from jaxseg.trainers import step as step_lib

CLASS_WEIGHTINGS = {"none": None, "median_frequency": 1.0, "sqrt_median_frequency": 0.5}


def class_weights(c: ml_collections.ConfigDict, source, info) -> tuple[float, ...] | None:
  """Explicit `data.class_weights`, or median-frequency weights of the labels."""
  if c.data.class_weights is not None:
    return tuple(float(w) for w in c.data.class_weights)
  power = CLASS_WEIGHTINGS[c.data.class_weighting]
  if power is None:
    return None
  w = data_statistics.median_frequency_weights(
      source, num_classes=info.num_classes, ignore_index=info.ignore_index, power=power)
  return tuple(float(x) for x in w)


def validate_config(c: ml_collections.ConfigDict, info, mesh) -> None:
  """Checks that need the data: fail with the culprit key before compiling."""
  stride = models_lib.model_stride(c.model)
  if stride > 1:
    for name, size in (("data.crop_size", c.data.crop_size),
                       ("eval.crop_size", c.eval.crop_size or c.data.crop_size)):
      if any(s % stride for s in size):
        raise ValueError(f"config.{name}={tuple(size)} must be divisible by {stride} "
                         f"(the {c.model.name} backbone's output stride).")
  parallel.check_batch_size(c.batch_size, mesh)
  if not c.init_from:
    weights.check_pretrained(c.model)
  if c.data.class_weights is not None and len(c.data.class_weights) != info.num_classes:
    raise ValueError(f"config.data.class_weights has {len(c.data.class_weights)} "
                     f"entries; the dataset has {info.num_classes} classes.")
  config_lib.check_choice("data.class_weighting", c.data.class_weighting, CLASS_WEIGHTINGS)
  if c.total_steps <= 0 or c.log_every <= 0:
    raise ValueError("config.total_steps and config.log_every must be positive.")


def cold_start(params, config: ml_collections.ConfigDict):
  """Params of `config.init_from` merged into `params` (classifier re-initialised);
  else the backbone from `config.model.pretrained` (jaxseg.models.weights)."""
  if not config.init_from:
    return weights.load_pretrained(params, config.model)
  loaded = ckpt_lib.load_params(config.init_from)
  merged, reinit = ckpt_lib.merge_init(
      params, loaded, reinit_pattern=models_lib.CLASSIFIER_PATTERN)
  logging.info("cold start from %s; re-initialised: %s%s", config.init_from,
               reinit or "nothing", "; model.pretrained not used" if
               config.model.pretrained not in ("", "none") else "")
  return merged


EVAL_MODES = {"ss": ("",), "mf": ("", "mf")}


def predictor(params, predict_fn, config, num_outputs: int, heads: int):
  """image -> {"": single-scale (H, W, heads) class ids[, "mf": multi-scale +
  flip ones]} at the image's own resolution (`semantic.scaled_logits`: the
  image rescaled by `eval.image_scale` × each scale, sliding windows where it
  is larger than the crop, logits resized back)."""
  crop = tuple(config.eval.crop_size or config.data.crop_size)
  stride = tuple(max(1, int(s * config.eval.stride_fraction)) for s in crop)
  fn = functools.partial(predict_fn, params)

  def predict(image, multi_scale: bool = config.eval.mode == "mf"):
    image = np.asarray(image)
    base = semantic.base_scale(image.shape[:2], config.eval.image_scale)

    def compute(scale, flip):
      return semantic.scaled_logits(
          fn, image, scale=base * scale, flip=flip, crop_size=crop, stride=stride,
          num_classes=num_outputs, batch_size=config.eval.batch_size)

    ss = compute(1.0, False)  # reused by MF; other passes are not kept (H·W·C each)

    def logits_at(scale, flip):
      return ss if (scale, flip) == (1.0, False) else compute(scale, flip)

    out = {"": ss.reshape(*ss.shape[:2], heads, -1).argmax(-1)}
    if multi_scale:
      out["mf"] = semantic.multi_scale_probs(logits_at, scales=tuple(config.eval.scales),
                                             flip=config.eval.flip, heads=heads).argmax(-1)
    return out

  return predict


def evaluate(params, *, predict_fn, source, info, config, max_examples: int = 0,
             panel_examples: int = 0, desc: str = "eval",
             heads: tuple[str, ...] = ("",), main_head: int = 0):
  """mIoU over `source` at full label resolution, sliding windows where an
  image is larger than the crop; with `eval.mode="mf"` also multi-scale + flip
  (`miou_mf`, `pixel_acc_mf`, `mean_acc_mf`).

  `predict_fn` may return several predictions as `len(heads)` blocks of C
  logits (CiSS-Net's steps t = 0, 2, ...): each named head adds `miou_NAME`,
  `pixel_acc_NAME` and `mean_acc_NAME` (and `miou_mf_NAME`); the plain keys
  (and the panel) are those of `heads[main_head]`. Examples with an
  "instances" map (ids > 0 per object, Cityscapes-style) add the
  instance-level single-scale `iiou` of the main head. With several processes
  each evaluates `cluster.share(n)` of the examples and the integer counts are
  summed across them: the metrics equal the one-process ones exactly.
  Returns (metrics dict, panel image (process 0) or None).
  """
  config_lib.check_choice("eval.mode", config.eval.mode, EVAL_MODES)
  modes = EVAL_MODES[config.eval.mode]
  n = len(source) if not max_examples else min(max_examples, len(source))
  k = len(heads)
  cms = np.zeros((len(modes), k, info.num_classes, info.num_classes), np.int64)
  inst_keys, inst_rows = [], [np.zeros((0, 3), np.int64)]
  fps = np.zeros(info.num_classes, np.int64)
  # Spread the panel over the split: neighbouring video frames look alike.
  panel_ids = (np.linspace(0, n - 1, panel_examples).round().astype(int).tolist()
               if panel_examples else [])
  mine = cluster.share(n)  # each process its share; the sums are combined below
  predicted = {}

  predict_modes = predictor(params, predict_fn, config, k * info.num_classes, k)

  for i in tqdm.tqdm(mine, desc=desc, leave=False, disable=not cluster.is_main()):
    ex = source[i]
    by_mode = predict_modes(ex["image"])
    preds = by_mode[""]
    label = np.asarray(ex["label"]).astype(np.int32)
    if "instances" in ex:  # instance ids (Cityscapes-style): iIoU of the main head
      inst, fp = semantic.instance_stats(preds[..., main_head], label, ex["instances"],
                                         num_classes=info.num_classes,
                                         ignore_index=info.ignore_index)
      inst_keys.append(np.full(len(inst), i))
      inst_rows.append(inst)
      fps += fp
    for m, mode in enumerate(modes):
      for h in range(k):
        cms[m, h] += np.asarray(semantic.confusion_matrix(
            by_mode[mode][..., h], label, num_classes=info.num_classes,
            ignore_index=info.ignore_index))
    if i in panel_ids and cluster.is_main():
      predicted[i] = (ex["image"], ex["label"], preds[..., main_head])
  cms, fps = cluster.sum_over_processes(cms), cluster.sum_over_processes(fps)
  _, inst = cluster.gather_rows(np.concatenate([np.zeros(0, np.int64), *inst_keys]),
                                np.concatenate(inst_rows))
  panel = None
  if panel_ids and cluster.is_main():  # process 0 predicts what other processes had
    for i in panel_ids:
      if i not in predicted:
        ex = source[i]
        predicted[i] = (ex["image"], ex["label"], predict_modes(ex["image"], multi_scale=False)[""][..., main_head])
    panel = plots.prediction_panel(*zip(*(predicted[i] for i in panel_ids)),
                                   num_classes=info.num_classes,
                                   ignore_index=info.ignore_index)
  metrics = semantic.metrics_from_confusion(cms[0, main_head], info.class_names)
  if cluster.sum_over_processes(np.array([len(inst_keys)], np.int64))[0]:
    metrics.update(semantic.iiou_from_stats(inst, fps, info.num_classes, info.class_names))
  for mode, mode_cms in zip(modes, cms):
    for h, (name, cm) in enumerate(zip(heads, mode_cms)):
      suffix = "".join(f"_{x}" for x in (mode, name) if x)
      if suffix and (name or h == main_head):
        m = semantic.metrics_from_confusion(cm)
        metrics.update({f"{key}{suffix}": m[key] for key in ("miou", "pixel_acc", "mean_acc")})
  return metrics, panel


def panel_examples(source, config, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
  """`eval.panel_examples` val images spread over the split, centre-cropped
  (or zero/ignore-padded) to the eval crop: (n, h, w, 3), (n, h, w)."""
  crop = tuple(config.eval.crop_size or config.data.crop_size)
  n = config.eval.panel_examples
  ids = np.linspace(0, len(source) - 1, n).round().astype(int)
  images, labels = [], []
  for i in ids:
    ex = source[int(i)]
    img, lab = np.asarray(ex["image"]), np.asarray(ex["label"])
    y0, x0 = (max(0, (s - c) // 2) for s, c in zip(lab.shape, crop))
    img, lab = img[y0:y0 + crop[0], x0:x0 + crop[1]], lab[y0:y0 + crop[0], x0:x0 + crop[1]]
    pi = np.zeros((*crop, 3), img.dtype)
    pl = np.full(crop, ignore_index, lab.dtype)
    pi[:img.shape[0], :img.shape[1]], pl[:lab.shape[0], :lab.shape[1]] = img, lab
    images.append(pi)
    labels.append(pl)
  return np.stack(images), np.stack(labels)


def train(config: ml_collections.ConfigDict, workdir, *, make_loss: Callable,
          build_model: Callable | None = None, init_params: Callable | None = None,
          make_predict: Callable | None = None,
          make_panel: Callable | None = None) -> loop.Result:
  """Trains a semantic method `config.total_steps` steps (resuming), evaluates.

  build_model(config, info) -> module            default: `models.build_model`
  init_params(fresh host params, config) -> params  default: `cold_start`
  make_predict(model, config) -> (predict_fn(params, uint8 images) -> logits
      (n, h, w, K·C), heads (K names), main head index)   default: the logits
  make_panel(model, config, info) -> fn(params, images, labels) -> uint8 (H, W, 3)
  """
  run = loop.open_run(config, workdir)
  validate_config(config, run.info, run.mesh)
  data_statistics.check_trainable_labels(run.train_source, num_classes=run.info.num_classes,
                                         ignore_index=run.info.ignore_index,
                                         split=config.data.train_split)
  info = dataclasses.replace(run.info, class_weights=class_weights(
      config, run.train_source, run.info))
  if info.class_weights is not None:
    logging.info("class weights: %s", {n: round(w, 3) for n, w in
                                        zip(info.class_names, info.class_weights)})
  model = (build_model(config, info) if build_model
           else models_lib.build_model(config.model, info.num_classes))
  dummy = jnp.zeros((1, *config.data.crop_size, 3), jnp.float32)
  rng = jax.random.key(config.seed)
  params = jax.jit(lambda r: model.init({"params": r}, dummy, train=False)["params"],
                   out_shardings=parallel.replicated(run.mesh))(rng)
  logging.info("model: %s/%s, %.2fM parameters", config.model.name,
               config.model.backbone, models_lib.param_count(params) / 1e6)
  loss_fn = make_loss(config, model=model, info=info, mesh=run.mesh)
  # A method's loss, or `step.Epochs` (several updates on one draw, its grads ready).
  grads_fn = (loss_fn if isinstance(loss_fn, step_lib.Epochs)
              else algorithms.as_grads_fn(loss_fn))
  tx, schedule = optim_lib.make_optimizer(
      config.optim, params, total_steps=config.total_steps,
      classifier_pattern=models_lib.CLASSIFIER_PATTERN,
      updates_per_step=getattr(grads_fn, "epochs", 1))
  if make_predict:
    predict_fn, heads, main_head = make_predict(model, config)
  else:
    apply_fn = algorithms.make_apply_fn(model)
    predict_fn, heads, main_head = jax.jit(
        lambda params, images: apply_fn(params, images, train=False)), ("",), 0
  panel_fn = make_panel(model, config, info) if make_panel else None

  def run_eval(step, params):
    metrics, panel = evaluate(
        params, predict_fn=predict_fn, source=run.val_source, info=info, config=config,
        max_examples=config.eval.max_examples,
        panel_examples=0 if panel_fn else config.eval.panel_examples,
        desc=f"eval@{step}", heads=heads, main_head=main_head)
    if panel_fn and config.eval.panel_examples and cluster.is_main():
      panel = panel_fn(params, *panel_examples(run.val_source, config, info.ignore_index))
    return metrics, panel

  return run.train(loop.Task(
      params=params, tx=tx, grads=lambda _: grads_fn, evaluate=run_eval,
      rng=jax.random.fold_in(rng, 1), schedule=schedule,
      init_params=lambda p: (init_params or cold_start)(p, config),
      log_keys=("miou", "pixel_acc"), title=f"{config.trainer} on {info.name}"))
