"""ACIS inference: mean-action episodes until the termination unit stops, and
the host-side turning of masks into label maps and Tab. 2's Dice*."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from PIL import Image

from jaxseg.algorithms.acis import episode as ep


def infer(nets: ep.Nets, params, images, *, max_instances: int, latent_dim: int,
          block: str = "none", unroll: bool = False):
  """(params, uint8 (B, S, S, 3)) -> (mask probs (T, B, S, S), continue probs
  (T, B)) for T = `max_instances` mean-action steps (jit it)."""
  inputs = ep.make_inputs(nets, params["preproc"], images)
  eps = jnp.zeros((max_instances, images.shape[0], latent_dim))
  out = ep.rollout(nets, params["actor"], params["decoder"], inputs, eps, sample=False,
                   block=block, unroll=unroll)
  return out["mask"], jax.nn.sigmoid(out["cont"])


def num_predicted(cont) -> int:
  """Steps kept: up to and including the first step whose continue prob < 0.5."""
  stop = np.flatnonzero(np.asarray(cont) < 0.5)
  return int(stop[0]) + 1 if stop.size else len(cont)


def label_map(masks: np.ndarray) -> np.ndarray:
  """(n, H, W) probabilities -> instance ids (H, W): the most probable mask
  where it exceeds 0.5, else background."""
  if not len(masks):
    return np.zeros(masks.shape[1:], np.int32)
  best = masks.argmax(0)
  return np.where(masks.max(0) > 0.5, best + 1, 0).astype(np.int32)


def fg_coverage(labels: np.ndarray, gt: np.ndarray) -> float:
  """Fraction of the ground-truth foreground (gt > 0) that the predicted label
  map covers: with the termination never stopping, a low value says the
  actor repeats masks instead of moving on to uncovered leaves."""
  fg = gt > 0
  return float(np.sum((labels > 0) & fg) / max(int(fg.sum()), 1))


def paste_back(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear upsampling of (n, S, S) probabilities to the original (H, W)."""
  return np.stack([np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(
      (size[1], size[0]), Image.BILINEAR)) for m in masks]) if len(masks) else \
      np.zeros((0, *size), np.float32)


def gt_stop_dice(masks: np.ndarray, gt: np.ndarray) -> float:
  """Tab. 2's Dice*: the first #gt binarised masks max-matched to the ground
  truth by Dice; matched Dice summed over the ground-truth count.

      Dice*(m, G) = max_π Σ_{(t, j) ∈ π} 2|m_t ∩ G_j| / (|m_t| + |G_j|) / |G|

  On the host (numpy and scipy's assignment) at the original resolution: the
  shapes change with every image and count, and eager JAX ops would compile
  (and keep mapped) new programs for each, which ran a long run's process out
  of memory at its tenth evaluation.
  """
  ids = np.unique(gt[gt > 0])
  if not ids.size:
    return float(not len(masks))
  pred = (np.asarray(masks[:ids.size]) > 0.5).reshape(min(len(masks), ids.size), -1)
  truth = (gt.reshape(1, -1) == ids[:, None])
  inter = pred.astype(np.float64) @ truth.T.astype(np.float64)
  dice = 2 * inter / np.maximum(pred.sum(1)[:, None] + truth.sum(1)[None, :], 1)
  rows, cols = scipy.optimize.linear_sum_assignment(dice, maximize=True)
  return float(dice[rows, cols].sum()) / ids.size


def step_stats(masks: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
  """What each step of one episode adds, from its (T, H, W) probabilities:

      area[t]      |m_t|, m_t = masks[t] > 0.5
      in_state[t]  |m_t ∩ ∪_{i<t} m_i| / |m_t|          (0 for an empty mask)
      best_dice[t] max_j Dice(m_t, G_j) over ground-truth instances G_j
      repeat[t]    1 if that best G_j was the best of an earlier step
                   (an empty mask: best_dice = repeat = 0)

  An actor that moves on has in_state ≈ 0 and repeat = 0; one stuck on the
  leaves it has covered has both near 1 while the termination keeps going.
  """
  m = np.asarray(masks) > 0.5
  ids = np.unique(gt[gt > 0])
  g = gt[None] == ids[:, None, None]
  out = {k: np.zeros(len(m)) for k in ("area", "in_state", "best_dice", "repeat")}
  state, seen = np.zeros(gt.shape, bool), set()
  for t, mt in enumerate(m):
    area = int(mt.sum())
    out["area"][t] = area
    out["in_state"][t] = (mt & state).sum() / area if area else 0.0
    if ids.size and area:
      dice = 2 * (mt[None] & g).sum((1, 2)) / np.maximum(area + g.sum((1, 2)), 1)
      j = int(dice.argmax())
      out["best_dice"][t], out["repeat"][t] = dice[j], float(j in seen)
      seen.add(j)
    state |= mt
  return out
