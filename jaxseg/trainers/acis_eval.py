"""ACIS evaluation on the host: each stage's val metrics and the final
stage's prediction-order panel. Evaluators are built once per stage:
`evaluator(nets, config) -> fn(params, source, max_examples) -> metrics`.
With several processes each evaluates `cluster.share` of the split and the
per-image values (or integer sums) are combined exactly."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from jaxseg import algorithms
from jaxseg import plots
from jaxseg.algorithms.acis import episode as ep
from jaxseg.algorithms.acis import infer as infer_lib
from jaxseg.algorithms.acis import losses
from jaxseg.data import instance_targets
from jaxseg.data.images import resize_image, resize_nearest
from jaxseg.evaluation import instance as instance_eval
from jaxseg.trainers import cluster
from jaxseg.trainers import step as step_lib

# Tab. 2's names: which recurrent state is left when the other is zeroed.
BLOCK_NAMES = {"none": "", "lstm": "_mask_only", "mask": "_lstm_only"}
# The per-image values of an episode evaluation: the CVPPP metrics, Tab. 2's
# Dice*, the steps taken before the termination stopped (`steps` − the
# predicted count = masks the label map swallowed) and the foreground covered.
ROW_KEYS = (*instance_eval.instance_metrics(np.zeros((1, 1), np.int32),
                                            np.zeros((1, 1), np.int32)),
            "dice_gt_stop", "steps", "fg_coverage")


def resize_example(ex, size: int):
  return (resize_image(np.asarray(ex["image"]), (size, size)),
          resize_nearest(np.asarray(ex["instances"]), (size, size)))


def _first(source, max_examples: int) -> range:
  return range(len(source) if not max_examples else min(max_examples, len(source)))


def make_infer(nets: ep.Nets, config, block: str = "none"):
  """jit (params, uint8 (B, S, S, 3)) -> (mask probs (T, B, S, S), continue probs (T, B))."""
  a = config.acis
  return jax.jit(functools.partial(
      infer_lib.infer, nets, max_instances=a.max_instances, latent_dim=a.latent_dim,
      block=block, unroll=step_lib.rollout_unrolled(a.rollout, "acis.rollout")))


def episode_evaluator(nets: ep.Nets, config):
  """Instance metrics at the original resolution, plus Tab. 2's Dice* and |DiC|
  with each state of `acis.eval_blocks` zeroed."""
  a = config.acis
  infers = {b: make_infer(nets, config, b) for b in ("none", *a.eval_blocks)}

  blocks = [b for b in infers if b != "none"]
  width = len(ROW_KEYS) + 2 * len(blocks)

  def evaluate(params, source, max_examples: int = 0):
    ids, vals = [], []
    for i in tqdm.tqdm(cluster.share(len(_first(source, max_examples))), desc="eval",
                       leave=False, disable=not cluster.is_main()):
      ex = source[i]
      image, _ = resize_example(ex, a.image_size)
      gt = np.asarray(ex["instances"])
      count = instance_targets.count_instances(gt)
      row = {}
      for b, infer in infers.items():
        masks, cont = jax.device_get(infer(params, image[None]))
        k = infer_lib.num_predicted(cont[:, 0])
        full = infer_lib.paste_back(masks[:, 0], gt.shape)
        dice = float(infer_lib.gt_stop_dice(full, gt))
        if b == "none":
          labels = infer_lib.label_map(full[:k])
          row.update(instance_eval.instance_metrics(labels, gt), dice_gt_stop=dice,
                     steps=k, fg_coverage=infer_lib.fg_coverage(labels, gt))
        else:
          row[b] = (dice, abs(k - count))
      ids.append(i)
      vals.append([row[key] for key in ROW_KEYS] + [v for b in blocks for v in row[b]])
    # Per-image values from every process, in the split's order.
    _, vals = cluster.gather_rows(np.array(ids, np.int64),
                                  np.array(vals, np.float64).reshape(-1, width))
    metrics = instance_eval.mean_instance_metrics(
        [dict(zip(ROW_KEYS, v[:len(ROW_KEYS)].tolist())) for v in vals])
    for j, b in enumerate(blocks):
      col = len(ROW_KEYS) + 2 * j
      metrics[f"dice_gt_stop{BLOCK_NAMES[b]}"] = float(np.mean(vals[:, col]))
      metrics[f"abs_dic{BLOCK_NAMES[b]}"] = float(np.mean(vals[:, col + 1]))
    return metrics

  evaluate.infer = infers["none"]  # the panel's
  return evaluate


def order_panel(params, *, infer, config, source, count: int) -> np.ndarray:
  """Rows of image | ground truth | prediction coloured by time step
  (dark = first, yellow = last)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps["viridis"]
  a = config.acis
  rows = []
  for i in np.linspace(0, len(source) - 1, count).round().astype(int):
    image, inst = resize_example(source[int(i)], a.image_size)
    masks, cont = jax.device_get(infer(params, image[None]))
    k = infer_lib.num_predicted(cont[:, 0])
    order = infer_lib.label_map(masks[:k, 0])
    colours = (np.asarray(cmap(np.linspace(0, 1, max(k, 2))))[:, :3] * 255).astype(np.uint8)
    pred = np.where(order[..., None] > 0, colours[np.maximum(order - 1, 0)], 0)
    ids = np.unique(inst, return_inverse=True)[1].reshape(inst.shape)
    rows.append([image, plots.colorize(ids, int(ids.max()) + 1, 0), pred.astype(np.uint8)])
  return plots.tile_rows(rows)


def preproc_evaluator(nets: ep.Nets, config):
  """Foreground IoU and angle-bin accuracy on foreground pixels, at S × S."""
  a = config.acis

  @jax.jit
  def predict(p, image, inst):
    logits = nets.preproc.apply({"params": p}, algorithms.normalize_images(image[None]))[0]
    fg, angles = instance_targets.angle_targets(inst, a.max_instances,
                                                num_bins=a.num_angle_bins)
    return logits, fg, angles

  def evaluate(params, source, max_examples: int = 0):
    inter = union = correct = total = 0
    for i in cluster.share(len(_first(source, max_examples))):
      image, inst = resize_example(source[i], a.image_size)
      logits, fg, angles = jax.device_get(predict(params["preproc"], image, inst))
      pred, truth = logits[..., 0] > 0, fg > 0
      inter += np.sum(pred & truth)
      union += np.sum(pred | truth)
      correct += np.sum((logits[..., 1:].argmax(-1) == angles.argmax(-1)) & truth)
      total += truth.sum()
    inter, union, correct, total = cluster.sum_over_processes(
        np.array([inter, union, correct, total], np.int64)).tolist()
    return {"fg_iou": inter / max(union, 1), "angle_acc": correct / max(total, 1)}

  return evaluate


def cvae_evaluator(nets: ep.Nets, config):
  """Mean Dice of D(μ(x, T)) > 0.5 against T over every val instance, at S × S."""
  a = config.acis

  @jax.jit
  def dice(p, image, inst):
    """Hard Dice of every padded instance (K,) and which are real."""
    masks, valid = instance_targets.instance_masks(inst, a.max_instances)
    one = ep.make_inputs(nets, p["preproc"], image[None])  # the K instances share it
    inputs = ep.Inputs(*(jnp.broadcast_to(v, (a.max_instances, *v.shape[1:]))
                         for v in (one.x, one.angles, one.fg)))
    target = masks.astype(jnp.float32)
    _, (mu, _, _) = nets.actor.apply({"params": p["actor"]}, inputs.actor(target),
                                     nets.actor.initial_carry(a.max_instances))
    logits = nets.decoder.apply({"params": p["decoder"]}, mu, inputs.cond)
    return losses.hard_dice(logits, target), valid

  def evaluate(params, source, max_examples: int = 0):
    ids, dices = [], []
    for i in cluster.share(len(_first(source, max_examples))):
      d, valid = jax.device_get(dice(params, *resize_example(source[i], a.image_size)))
      ids += [i] * int(valid.sum())
      dices += list(d[valid])
    _, dices = cluster.gather_rows(np.array(ids, np.int64), np.array(dices, np.float32))
    return {"recon_dice": float(np.mean(dices)) if len(dices) else float("nan")}

  return evaluate
