"""Dataset statistics computed from the labels themselves."""
from __future__ import annotations

from typing import Any

import numpy as np


def class_pixel_counts(source: Any, *, num_classes: int, ignore_index: int
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Per class: pixels of that class, and pixels of images containing it."""
  counts = np.zeros(num_classes, np.int64)
  present_total = np.zeros(num_classes, np.int64)
  for i in range(len(source)):
    label = np.asarray(source[i]["label"]).ravel()
    label = label[(label != ignore_index) & (label < num_classes)]
    c = np.bincount(label, minlength=num_classes)[:num_classes]
    counts += c
    present_total += np.where(c > 0, label.size, 0)
  return counts, present_total


def median_frequency_weights(source: Any, *, num_classes: int, ignore_index: int,
                             power: float = 1.0) -> np.ndarray:
  """Median-frequency balancing (Eigen & Fergus 2015; SegNet's CamVid weights).

      freq(c) = pixels of class c / pixels of the images where c is present
      w(c)    = (median_c freq(c) / freq(c)) ** power

  `power=0.5` is the softer square-root variant. A class absent from every
  image gets weight 0.
  """
  counts, present = class_pixel_counts(source, num_classes=num_classes,
                                       ignore_index=ignore_index)
  freq = np.where(present > 0, counts / np.maximum(present, 1), np.nan)
  median = np.nanmedian(freq)
  w = np.where(present > 0, (median / np.where(present > 0, freq, 1.0)) ** power, 0.0)
  return w.astype(np.float32)


def check_trainable_labels(source: Any, *, num_classes: int, ignore_index: int,
                           split: str = "train", max_examples: int = 256) -> None:
  """Raises `DataError` when no labelled pixel is found in up to `max_examples`
  label maps spread over `source` (an all-ignore split trains with loss 0)."""
  from jaxseg.data.errors import DataError  # pylint: disable=g-import-not-at-top
  n = len(source)
  ids = np.unique(np.linspace(0, n - 1, min(n, max_examples)).round().astype(int))
  for i in ids:
    label = np.asarray(source[int(i)]["label"])
    if np.any((label != ignore_index) & (label >= 0) & (label < num_classes)):
      return
  raise DataError(
      f"the {split} split has no labelled pixel: all {len(ids)} label maps checked (of {n}) "
      f"hold only the ignore value {ignore_index} or values outside 0..{num_classes - 1}. "
      "Check config.data.ignore_index and the label files.")
