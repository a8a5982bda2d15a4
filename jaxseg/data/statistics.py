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
