"""Pictures of a run: prediction panels and learning curves (PNG files)."""
from __future__ import annotations

import io
import pathlib
from typing import Any, Sequence

import numpy as np
from etils import epath


def class_palette(num_classes: int) -> np.ndarray:
  """(C, 3) uint8 colours: the PASCAL VOC bit-interleaved palette."""
  pal = np.zeros((max(num_classes, 1), 3), np.uint8)
  for c in range(num_classes):
    v, r, g, b = c + 1, 0, 0, 0  # +1: class 0 gets a colour, not black
    for i in range(8):
      r |= ((v >> 0) & 1) << (7 - i)
      g |= ((v >> 1) & 1) << (7 - i)
      b |= ((v >> 2) & 1) << (7 - i)
      v >>= 3
    pal[c] = (r, g, b)
  return pal


def colorize(label: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
  """(H, W) ids -> (H, W, 3) uint8; the ignore value (and anything else) is black."""
  pal = class_palette(num_classes)
  label = np.asarray(label)
  ok = (label >= 0) & (label < num_classes) & (label != ignore_index)
  out = np.zeros(label.shape + (3,), np.uint8)
  out[ok] = pal[label[ok]]
  return out


def tile_rows(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
  """Rows of (H, W_i, 3) uint8 tiles as one image: tiles side by side with 4 px
  white separators, rows padded to the widest, each followed by a 4 px gap."""
  out = []
  for tiles in rows:
    sep = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    out.append(np.concatenate(
        [x for t in tiles for x in (np.asarray(t, np.uint8), sep)][:-1], axis=1))
  width = max(r.shape[1] for r in out)
  out = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255)
         for r in out]
  return np.concatenate(out, axis=0)


def prediction_panel(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
    preds: Sequence[np.ndarray], *, num_classes: int, ignore_index: int) -> np.ndarray:
  """Rows of [image | label | prediction] as one uint8 (H, W, 3) array."""
  return tile_rows([[img, colorize(lab, num_classes, ignore_index),
                     colorize(pr, num_classes, ignore_index)]
                    for img, lab, pr in zip(images, labels, preds)])


def _write_png(path, write) -> None:
  """`write(file object)` into `path` (any etils.epath path: local or gs://)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  write(buf)
  path.write_bytes(buf.getvalue())


def save_png(path: str | pathlib.Path, image: np.ndarray) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  _write_png(path, lambda f: Image.fromarray(np.asarray(image, np.uint8)).save(f, "png"))


def learning_curves(
    runs: dict[str, list[dict[str, Any]]], path: str | pathlib.Path, *,
    keys: Sequence[str] = ("train/loss", "val/miou"), title: str = "") -> None:
  """One subplot per key, one line per run, from metrics.jsonl records."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
  for ax, key in zip(axes[0], keys):
    for name, records in runs.items():
      pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if key.startswith("val") else None,
                markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.grid(alpha=0.3)
    if len(runs) > 1:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _write_png(path, lambda f: fig.savefig(f, dpi=110, format="png"))
  plt.close(fig)
