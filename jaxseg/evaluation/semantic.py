"""Semantic segmentation metrics, sliding-window and multi-scale + flip inference.

The confusion matrix is accumulated on device (jittable); mIoU and friends are
read off it on the host:

    IoU_c = CM[c, c] / (Σ_k CM[c, k] + Σ_k CM[k, c] − CM[c, c])
    mIoU  = mean of IoU_c over classes with a non-empty union
    aAcc  = Σ_c CM[c, c] / Σ CM

with CM[true, pred] counted over pixels whose label is not `ignore_index`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    pred: jax.Array, labels: jax.Array, *, num_classes: int,
    ignore_index: int = 255) -> jax.Array:
  """(C, C) int32 counts CM[true, pred] over valid pixels of any-shaped maps."""
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  idx = jnp.where(valid, labels * num_classes + pred, num_classes * num_classes)
  counts = jnp.bincount(idx.reshape(-1).astype(jnp.int32),
                        length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def metrics_from_confusion(
    cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, float]:
  """mIoU, pixel accuracy, mean class accuracy and per-class IoU (NaN if absent)."""
  cm = np.asarray(cm, np.float64)
  tp = np.diag(cm)
  gt = cm.sum(1)
  union = gt + cm.sum(0) - tp
  iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
  acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
  out = {
      "miou": float(np.nanmean(iou)) if np.any(union > 0) else 0.0,
      "pixel_acc": float(tp.sum() / max(cm.sum(), 1)),
      "mean_acc": float(np.nanmean(acc)) if np.any(gt > 0) else 0.0,
  }
  names = class_names or [str(i) for i in range(len(tp))]
  for name, v in zip(names, iou):
    out[f"iou/{name}"] = float(v)
  return out


def window_starts(size: int, crop: int, stride: int) -> list[int]:
  """Start offsets covering [0, size) with windows of `crop` (last one flush)."""
  if size <= crop:
    return [0]
  n = math.ceil((size - crop) / stride) + 1
  return sorted({min(i * stride, size - crop) for i in range(n)})


def sliding_window_logits(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    crop_size: tuple[int, int],
    stride: tuple[int, int],
    num_classes: int,
    batch_size: int = 8) -> np.ndarray:
  """Logits (H, W, C) of one image by averaging overlapping crop windows.

  Images smaller than the crop along an axis are zero-padded to the crop there
  (the padding is cut off again), so every forward pass sees the crop shape and
  `predict_fn` compiles once. `predict_fn` maps (n, ch, cw, 3) images to
  (n, ch, cw, C) logits.
  """
  h, w = image.shape[:2]
  ch, cw = crop_size
  ph, pw = max(h, ch), max(w, cw)
  padded = np.zeros((ph, pw) + image.shape[2:], image.dtype)
  padded[:h, :w] = image
  boxes = [(y, x) for y in window_starts(ph, ch, stride[0])
           for x in window_starts(pw, cw, stride[1])]
  batch_size = min(batch_size, len(boxes))  # fixed per image size: one compile
  acc = np.zeros((ph, pw, num_classes), np.float32)
  count = np.zeros((ph, pw, 1), np.float32)
  for i in range(0, len(boxes), batch_size):
    chunk = boxes[i:i + batch_size]
    crops = np.stack([padded[y:y + ch, x:x + cw] for y, x in chunk])
    n = len(chunk)
    if n < batch_size:  # keep one compiled shape
      crops = np.concatenate(
          [crops, np.zeros((batch_size - n,) + crops.shape[1:], crops.dtype)])
    logits = np.asarray(predict_fn(crops))[:n]
    for (y, x), lg in zip(chunk, logits):
      acc[y:y + ch, x:x + cw] += lg
      count[y:y + ch, x:x + cw] += 1
  return (acc / count)[:h, :w]


def instance_stats(pred: np.ndarray, labels: np.ndarray, instances: np.ndarray, *,
                   num_classes: int, ignore_index: int = 255
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Per-image counts for the instance-level IoU (iIoU) of Cityscapes.

  Returns `inst` (K, 3) int rows (class, size, true positives) for every
  ground-truth instance id > 0 (its class is the majority label of its
  pixels), and `fp` (C,) pixels predicted c whose valid label is not c.
  """
  pred, labels, instances = (np.asarray(a).reshape(-1) for a in (pred, labels, instances))
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  fp = np.bincount(pred[valid & (pred != labels)], minlength=num_classes)[:num_classes]
  rows = []
  for k in np.unique(instances[valid & (instances > 0)]):
    m = valid & (instances == k)
    c = int(np.bincount(labels[m]).argmax())
    rows.append((c, int(m.sum()), int(np.sum(pred[m] == c))))
  return np.asarray(rows, np.int64).reshape(-1, 3), fp.astype(np.int64)


def iiou_from_stats(inst: np.ndarray, fp: np.ndarray, num_classes: int,
                    class_names: Sequence[str] | None = None) -> dict[str, float]:
  """Instance-level IoU (Cordts et al., 2016) from accumulated `instance_stats`:

      w_k    = S̄_c / |k|   (S̄_c: mean size of class-c instances over the split)
      iIoU_c = Σ_k w_k·TP_k / (Σ_k w_k·TP_k + FP_c + Σ_k w_k·(|k| − TP_k))

  over the instances k of class c; `iiou` averages classes with instances.
  (Cityscapes' script uses a fixed table of S̄_c; here it is measured on the
  evaluated split.)"""
  out, vals = {}, []
  names = class_names or [str(i) for i in range(num_classes)]
  for c in range(num_classes):
    rows = inst[inst[:, 0] == c]
    if not len(rows):
      continue
    w = rows[:, 1].mean() / rows[:, 1]
    tp, fn = np.sum(w * rows[:, 2]), np.sum(w * (rows[:, 1] - rows[:, 2]))
    vals.append(tp / (tp + fp[c] + fn))
    out[f"iiou/{names[c]}"] = float(vals[-1])
  out["iiou"] = float(np.mean(vals)) if vals else float("nan")
  return out


# ----------------------------------------------------------------------------
# Test-time scales and flips (SS and MF evaluation).
# ----------------------------------------------------------------------------


def resize_bilinear(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Bilinear resize of the first two axes, half-pixel centres, no antialiasing
  (PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`, which
  mmsegmentation uses to bring logits back to the label's size). Per axis:

      s   = clip((o + 0.5) · n_in / n_out − 0.5, 0, n_in − 1)
      out = (1 − (s − ⌊s⌋)) · x[⌊s⌋] + (s − ⌊s⌋) · x[min(⌊s⌋ + 1, n_in − 1)]
  """
  x = np.asarray(x, np.float32)
  for axis, n_out in ((0, int(size[0])), (1, int(size[1]))):
    n_in = x.shape[axis]
    if n_in == n_out:
      continue
    s = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(s).astype(np.int64)
    f = (s - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    x = np.take(x, i0, axis) * (1 - f) + np.take(x, np.minimum(i0 + 1, n_in - 1), axis) * f
  return x


def base_scale(size: Sequence[int], image_scale: Sequence[int] | None) -> float:
  """mmsegmentation's keep-ratio test resize to `image_scale` = (long, short):
  the factor min(long / max(h, w), short / min(h, w)); 1 when None."""
  if not image_scale:
    return 1.0
  long_side, short_side = max(image_scale), min(image_scale)
  return min(long_side / max(size), short_side / min(size))


def scaled_logits(predict_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, *,
                  scale: float, flip: bool, crop_size: tuple[int, int],
                  stride: tuple[int, int], num_classes: int,
                  batch_size: int = 8) -> np.ndarray:
  """(H, W, C) logits of `image` seen at `scale` (bilinear, int(h·s + 0.5) ×
  int(w·s + 0.5)) and, with `flip`, mirrored left-right; sliding windows where
  the scaled image is larger than the crop; mirrored back and resized back
  (`resize_bilinear`) to the image's own H × W."""
  from jaxseg.data.images import resize_image  # pylint: disable=g-import-not-at-top
  h, w = image.shape[:2]
  size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
  x = resize_image(np.asarray(image), size)
  if flip:
    x = np.ascontiguousarray(x[:, ::-1])
  logits = sliding_window_logits(predict_fn, x, crop_size=crop_size, stride=stride,
                                 num_classes=num_classes, batch_size=batch_size)
  if flip:
    logits = logits[:, ::-1]
  return resize_bilinear(logits, (h, w))


def softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def multi_scale_probs(logits_at: Callable[[float, bool], np.ndarray], *,
                      scales: Sequence[float], flip: bool, heads: int = 1) -> np.ndarray:
  """Multi-scale + flip (MF) probabilities (H, W, heads, C):

      P = 1 / |S × F| · Σ_{s ∈ S, f ∈ F} softmax(resize_back(logits(image at s, f)))

  with F = {no flip, flip} when `flip` (else {no flip}), softmax over each
  head's C classes, averaged at the image's own resolution. `logits_at(s, f)`
  is `scaled_logits` of one image."""
  total, count = None, 0
  for s in scales:
    for f in ((False, True) if flip else (False,)):
      lg = logits_at(s, f)
      p = softmax(lg.reshape(*lg.shape[:2], heads, -1))
      total = p if total is None else total + p
      count += 1
  return total / count
