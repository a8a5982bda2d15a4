"""Metric output: `WORKDIR/metrics.jsonl` and TensorBoard events, process 0 only.

The log stays one clean record per (step, key): a record rewritten for a step
(a resumed run replaying steps past its checkpoint, a finished run evaluated
again) replaces the old values, and steps past the state a run resumes from
are dropped when it opens. The file is rewritten whole through a temporary
file and a rename, so a crash or a full disk mid-write never leaves a partial
line; one left by an older writer is skipped with a warning. Paths are
`etils.epath` paths (local or gs://; TensorBoard through tensorboardX, which
writes gs:// too).
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath


def _scalar(v: Any) -> float | int:
  v = np.asarray(v).item()
  return v if isinstance(v, int) else float(v)


class MetricWriter:
  """Writes one JSON object per (step, group of keys), mirrored to TensorBoard.

  Every object has `step` and flat keys such as `train/loss`, `val/miou`,
  `val/iou/<class>`. Non-finite values are written as null (valid JSON).
  `resume_step`: records of later steps (not seen by the resumed state) go.
  """

  def __init__(self, workdir, *, enabled: bool | None = None, resume_step: int | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = epath.Path(workdir) / "metrics.jsonl"
    self._tb = None
    self.records: list[dict[str, Any]] = []
    if self.enabled:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self.records = read_metrics(workdir)
      if resume_step is not None:
        kept = [r for r in self.records if r["step"] <= resume_step]
        if len(kept) < len(self.records):
          logging.info("metrics.jsonl: dropped %d records past step %d (replayed now)",
                       len(self.records) - len(kept), resume_step)
          self.records = kept
          self._save()
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    record: dict[str, Any] = {"step": int(step)}
    for k, v in metrics.items():
      x = _scalar(v)
      record[k] = x if math.isfinite(x) else None
      if math.isfinite(x):
        self._tb.add_scalar(k, x, int(step))
    same = [r for r in self.records if r["step"] == record["step"] and set(r) & set(metrics)]
    if same:
      same[0].update(record)
    else:
      self.records.append(record)
    self._save()

  def _save(self) -> None:
    tmp = self.path.parent / (self.path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
    tmp.replace(self.path)

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._tb.add_image(name, np.asarray(image), int(step), dataformats="HWC")

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir) -> list[dict[str, Any]]:
  """The records of `WORKDIR/metrics.jsonl` (lines that do not parse, e.g. a
  partial last line, are skipped with a warning)."""
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  out = []
  for i, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      logging.warning("%s line %d is not JSON (a write cut short?); skipped", path, i)
  return out
