"""Instance segmentation metrics of the CVPPP benchmark and Ren & Zemel (2017).

One image is a pair of instance label maps: 0 is background and every other
distinct id is one instance (ids need not be contiguous: {3, 17, 250} is three
instances). With predicted instances p ∈ P, ground-truth instances g ∈ G and
the overlap matrix I[p, g] = |p ∩ g| (one joint histogram of the two maps):

    Dice(p, g) = 2 I[p, g] / (|p| + |g|)
    IoU(p, g)  = I[p, g] / (|p| + |g| − I[p, g])
    BD(A, B)   = 1/|A| Σ_{a∈A} max_{b∈B} Dice(a, b)            (best Dice)
    SBD        = min(BD(P, G), BD(G, P))                       (symmetric)
    DiC        = |P| − |G|,   |DiC| = | |P| − |G| |
    MUCov      = 1/|G| Σ_g max_p IoU(p, g)
    MWCov      = Σ_g (|g| / Σ_g' |g'|) · max_p IoU(p, g)
    AvgFP      = 1/|P| · #{p : max_g IoU(p, g) ≤ 0.5}
    AvgFN      = 1/|G| · #{g : max_p IoU(p, g) ≤ 0.5}

AvgFP / AvgFN count instances without a match at IoU > 0.5. Within one label
map instances are disjoint, so the match is one-to-one without any assignment
step: IoU(p, g) > 0.5 implies |p ∩ g| > |p ∪ g| / 2 ≥ |g| / 2, and two disjoint
predictions cannot each cover more than half of g (nor, symmetrically, can one
prediction match two ground-truth instances). Hence the number of matched
predictions equals the number of matched ground-truth instances.

Empty images (no instance on a side), chosen so that predicting nothing for
an empty image is perfect and predicting anything else is not:

    SBD:          both empty → 1; exactly one empty → 0 (BD of a non-empty set
                  against an empty one is 0, and SBD takes the minimum).
    MUCov, MWCov: no ground truth → 1 if there are no predictions either, else 0.
    AvgFP:        no predictions → 0.  AvgFN: no ground truth → 0.

A dataset's numbers are the mean of the per-image values (as the CVPPP
benchmark reports them), see `mean_instance_metrics`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _instance_index(labels: np.ndarray) -> tuple[np.ndarray, int]:
  """Flat index map: 0 for background, 1..K for the K ids in ascending order."""
  flat = labels.reshape(-1)
  ids = np.unique(flat[flat != 0])
  index = np.where(flat != 0, np.searchsorted(ids, flat) + 1, 0)
  return index, len(ids)


def overlap_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """(P + 1, G + 1) int64 joint histogram of two instance maps.

  Row / column 0 is background and rows 1..P / columns 1..G are the predicted /
  ground-truth ids in ascending order, so `m[1:, 1:]` is I[p, g] = |p ∩ g|,
  `m[1:].sum(1)` the predicted sizes and `m[:, 1:].sum(0)` the GT sizes.
  """
  pred, gt = np.asarray(pred), np.asarray(gt)
  if pred.shape != gt.shape:
    raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
  for name, a in (("pred", pred), ("gt", gt)):
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
      raise ValueError(f"{name} must be an integer label map, got {a.dtype}")
  p, num_pred = _instance_index(pred)
  g, num_gt = _instance_index(gt)
  counts = np.bincount(p * (num_gt + 1) + g, minlength=(num_pred + 1) * (num_gt + 1))
  return counts.reshape(num_pred + 1, num_gt + 1)


def best_dice(dice: np.ndarray) -> float:
  """BD(A, B) = mean over rows a of max over columns b of Dice(a, b).

  1 when A and B are both empty, 0 when only one of them is.
  """
  if dice.shape[0] == 0:
    return 1.0 if dice.shape[1] == 0 else 0.0
  if dice.shape[1] == 0:
    return 0.0
  return float(dice.max(1).mean())


def instance_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
  """SBD, DiC, |DiC|, MUCov, MWCov, AvgFP and AvgFN of one image (module doc).

  `pred` and `gt` are same-shaped integer instance maps, typically (H, W), with
  0 as background. Cost O(H·W + P·G).
  """
  m = overlap_matrix(pred, gt)
  inter, size_p, size_g = m[1:, 1:], m[1:].sum(1), m[:, 1:].sum(0)
  num_pred, num_gt = inter.shape
  # Every listed instance has at least one pixel: no zero denominators.
  sizes = size_p[:, None] + size_g[None, :]
  union = sizes - inter
  dice = 2 * inter / sizes
  iou = inter / union
  matched = 2 * inter > union  # IoU > 0.5, exact in integers

  sbd = min(best_dice(dice), best_dice(dice.T))
  if num_gt:
    best_iou = iou.max(0) if num_pred else np.zeros(num_gt)
    mucov = float(best_iou.mean())
    mwcov = float(np.dot(size_g, best_iou) / size_g.sum())  # exactly 1 if all 1
  else:
    mucov = mwcov = 1.0 if num_pred == 0 else 0.0
  avg_fp = float(np.mean(~matched.any(1))) if num_pred else 0.0
  avg_fn = float(np.mean(~matched.any(0))) if num_gt else 0.0
  return {
      "sbd": float(sbd),
      "dic": float(num_pred - num_gt),
      "abs_dic": float(abs(num_pred - num_gt)),
      "mucov": mucov,
      "mwcov": mwcov,
      "avg_fp": avg_fp,
      "avg_fn": avg_fn,
  }


def mean_instance_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
  """Dataset metrics: the mean over images of each per-image value.

  So `abs_dic` is the mean of per-image |DiC| (the CVPPP |DiC|), not the
  absolute value of the mean `dic`; SBD, MUCov, ... are image-averaged too.
  """
  if not rows:
    raise ValueError("mean_instance_metrics needs at least one image")
  keys = rows[0].keys()
  for row in rows:
    if row.keys() != keys:
      raise ValueError(f"rows have different keys: {sorted(keys)} vs {sorted(row)}")
  return {k: float(np.mean([row[k] for row in rows])) for k in keys}
