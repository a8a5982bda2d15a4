"""Metric output: `WORKDIR/metrics.jsonl` and TensorBoard events, process 0 only."""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping

import jax
import numpy as np


def _scalar(v: Any) -> float | int:
  v = np.asarray(v).item()
  return v if isinstance(v, int) else float(v)


class MetricWriter:
  """Appends one JSON object per `write` call, mirrored to TensorBoard.

  Every object has `step` and flat keys such as `train/loss`, `val/miou`,
  `val/iou/<class>`. Non-finite values are written as null in JSON (valid JSON).
  """

  def __init__(self, workdir: str | pathlib.Path, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = None
    if self.enabled:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    record: dict[str, Any] = {"step": int(step)}
    for k, v in metrics.items():
      x = _scalar(v)
      record[k] = x if math.isfinite(x) else None
      if math.isfinite(x):
        self._tb.add_scalar(k, x, int(step))
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._tb.add_image(name, np.asarray(image), int(step), dataformats="HWC")

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
