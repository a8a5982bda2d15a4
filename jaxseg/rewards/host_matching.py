"""The matching of `matching.max_matching` and `instance.matching_potentials`
solved on the host by scipy's `linear_sum_assignment`, called from jitted code
through `jax.pure_callback` (batched: under `vmap` the callback gets the whole
batch and loops over it in numpy).

Only the assignment crosses to the host; the totals and potentials are summed
from `scores` on device, so they are exact and differentiable as before
(gradient 1 at the matched pairs). scipy is 5-17× faster per matrix on CPU,
but whole ACIS train steps are no faster with it (`bench/matching.py
--steps`); on an accelerator every call is a device → host → device round trip.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxseg.rewards import matching

Array = jax.Array


def _assign(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """(R,) columns of scipy's max-weight matching among valid rows / columns, −1 else."""
  out = np.full(scores.shape[0], -1, np.int32)
  i, j = np.flatnonzero(rows), np.flatnonzero(cols)
  if i.size and j.size:
    r, c = linear_sum_assignment(scores[np.ix_(i, j)], maximize=True)
    out[i[r]] = j[c]
  return out


def _batched(fn, shape, scores, rows, cols):
  """`fn` on every matrix of the leading (batch) axes; (*lead, *shape) int32."""
  lead = scores.shape[:-2]
  out = np.empty((int(np.prod(lead)), *shape), np.int32)
  for k, args in enumerate(zip(scores.reshape(-1, *scores.shape[-2:]),
                               rows.reshape(-1, rows.shape[-1]),
                               cols.reshape(-1, cols.shape[-1]))):
    out[k] = fn(*args)
  return out.reshape(*lead, *shape)


def _prefix_assign(scores, rows, cols):
  """(T + 1, T): the matching of each prefix of the rows (row t of prefix p
  unmatched, −1, when t ≥ p)."""
  t = scores.shape[0]
  out = np.full((t + 1, t), -1, np.int32)
  for p in range(1, t + 1):
    out[p, :p] = _assign(scores[:p], rows[:p], cols)
  return out


def _call(fn, shape, scores, rows, cols):
  return jax.pure_callback(
      lambda s, r, c: _batched(fn, shape, np.asarray(s), np.asarray(r), np.asarray(c)),
      jax.ShapeDtypeStruct(shape, jnp.int32), scores, rows, cols,
      vmap_method="broadcast_all")


def host_max_matching(scores: Array, *, row_valid: Array | None = None,
                      col_valid: Array | None = None) -> tuple[Array, Array]:
  """`matching.max_matching` with the assignment from scipy (same contract)."""
  r, c = scores.shape
  s = matching.as_float(jax.lax.stop_gradient(scores))
  rows, cols = matching.valid_or_all(row_valid, r), matching.valid_or_all(col_valid, c)
  assignment = _call(_assign, (r,), s, rows, cols)
  picked = matching.as_float(scores)[jnp.arange(r), jnp.maximum(assignment, 0)]
  return assignment, jnp.sum(jnp.where(assignment >= 0, picked, 0))


def host_matching_potentials(scores: Array, *, pred_valid: Array | None = None,
                             gt_valid: Array | None = None) -> Array:
  """`instance.matching_potentials` (φ_0 … φ_T) from T scipy solves, one per prefix."""
  t, n = scores.shape
  s = matching.as_float(jax.lax.stop_gradient(scores))
  rows, cols = matching.valid_or_all(pred_valid, t), matching.valid_or_all(gt_valid, n)
  assignment = _call(_prefix_assign, (t + 1, t), s, rows, cols)
  picked = matching.as_float(scores)[jnp.arange(t), jnp.maximum(assignment, 0)]
  return jnp.sum(jnp.where(assignment >= 0, picked, 0), axis=-1)
