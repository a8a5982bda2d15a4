"""Jittable maximum-weight bipartite matching (ACIS's Kuhn-Munkres, SPEC §3).

The linear assignment problem restricted to valid rows and columns, with
maximum cardinality: for scores `s` (R, C), valid rows `I` (k of them) and
valid columns `J` (m of them),

    max_{π}  Σ_{(i, j) ∈ π} s_ij    over matchings π ⊆ I × J with |π| = min(k, m),

the same problem as `scipy.optimize.linear_sum_assignment(s[I][:, J],
maximize=True)`, solved exactly on device with no host round trip.

Algorithm: shortest augmenting paths with row and column duals (Jonker &
Volgenant 1987; Crouse 2016, the algorithm of scipy's C++ implementation).
Rows are added one at a time; each addition is a Dijkstra search over columns
on the reduced costs `c_ij − u_i − v_j ≥ 0`, then the duals are updated and the
matching is augmented along the shortest path. After every added row the
partial matching is optimal for the rows added so far (the potentials of ACIS
use this, see `instance.matching_potentials`).

Implementation: one flat `lax.while_loop` whose every iteration is one
Dijkstra step, O(n) vector work; the augmentation is vectorised by keeping, for
every column reached in the current search, the set of columns on its tree path
(an n×n boolean table), so the step that reaches a free column also updates the
duals, augments and starts the next row (a `lax.cond`, a select under
`vmap`). Under `vmap` the loop runs until the slowest item of the batch
finishes. If k > m the problem is solved transposed (chosen on device), so
only min(k, m) rows are ever added and invalid rows cost nothing.

Complexity: at most q(q+1)/2 loop iterations with q = min(k, m), each O(n)
with n = max(R, C): O(q²·n) ≤ O(n³) work, O(n²) memory. Searches usually stop
early (uniform random scores: ~68 iterations at 21×21 against the bound 231,
~330 at 64×64 against 2080). The loop is sequential and its cost is mostly
per-iteration overhead (a few µs on CPU, kernel launches on an accelerator),
so batch with `vmap`; `bench/matching.py` times it against scipy.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def as_float(x: Array) -> Array:
  """float32 or wider (float64 stays under x64; ints and bools become float32)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def valid_or_all(valid: Array | None, size: int) -> Array:
  """A (size,) bool padding mask; None = all valid."""
  if valid is None:
    return jnp.ones((size,), bool)
  chex.assert_shape(valid, (size,))
  return jnp.asarray(valid).astype(bool)


def shortest_augmenting_paths(cost: Array, row_ok: Array, col_ok: Array
                              ) -> tuple[Array, Array, Array]:
  """Min-cost assignment of every valid row to a distinct valid column.

      min_{π}  Σ_{i ∈ I} c_{i, π(i)}    over injections π: I → J,

  requiring `Σ row_ok ≤ Σ col_ok` (else the result is unspecified, but the
  loop still ends: its trip count is capped at nr(nr+1)/2 + 1). Rows are
  added in index order (invalid rows skipped); `history[p]` is `col4row` once
  the first p valid rows are added, an optimal matching of those rows: the
  successive-shortest-path invariant gives it for free. The outputs are
  integers: differentiate through a gather of the costs at them (the
  envelope theorem), never through the loop.

  Args:
    cost: (nr, nc) float, finite on `row_ok × col_ok`; other entries are
      never used (any value, NaN included).
    row_ok: (nr,) bool. col_ok: (nc,) bool.
  Returns:
    col4row (nr,) int32 (−1 for a skipped row), row4col (nc,) int32 (−1 for
    an unmatched column) and history (nr + 1, nr) int32, history[0] = −1.
  """
  chex.assert_rank(cost, 2)
  nr, nc = cost.shape
  chex.assert_shape([row_ok, col_ok], [(nr,), (nc,)])
  row_ok, col_ok = jnp.asarray(row_ok).astype(bool), jnp.asarray(col_ok).astype(bool)
  cost = jax.lax.stop_gradient(as_float(cost))
  dtype = cost.dtype
  if nr == 0 or nc == 0:
    return (jnp.full((nr,), -1, jnp.int32), jnp.full((nc,), -1, jnp.int32),
            jnp.full((nr + 1, nr), -1, jnp.int32))
  inf = jnp.array(jnp.inf, dtype)
  rows, cols = jnp.arange(nr, dtype=jnp.int32), jnp.arange(nc, dtype=jnp.int32)
  # Valid rows first, in their index order (a stable sort), so that step p of
  # the outer iteration adds the p-th valid row.
  order = jnp.argsort((~row_ok).astype(jnp.int32), stable=True).astype(jnp.int32)
  num_rows = jnp.sum(row_ok, dtype=jnp.int32)
  max_iters = nr * (nr + 1) // 2 + 1  # q(q+1)/2 steps at most; a guard only

  def search_state(cur):
    root = order[jnp.minimum(cur, nr - 1)]
    return (root, jnp.zeros((), dtype), jnp.full((nc,), inf), jnp.zeros((nr,), bool),
            jnp.zeros((nc,), bool))

  # One iteration = one Dijkstra step. `tree[j]` marks the columns on the
  # search-tree path from the root row to settled column j, so the matching is
  # augmented in one vectorised scatter instead of a pointer walk.
  def body(state):
    (cur, it, (i, min_val, spc, sr, sc), u, v, path, tree, col4row, row4col,
     history) = state
    root = order[cur]
    # Dijkstra step from row i: relax its edges, then settle the closest column,
    # preferring a free one among ties (it ends the search).
    sr = sr.at[i].set(True)
    remaining = col_ok & ~sc
    reduced = min_val + cost[i] - u[i] - v
    better = remaining & (reduced < spc)
    path = jnp.where(better, i, path)
    spc = jnp.where(better, reduced, spc)
    key = jnp.where(remaining, spc, inf)
    lowest = jnp.min(key)
    ties = remaining & (key == lowest)
    free_ties = ties & (row4col < 0)
    j = jnp.where(jnp.any(free_ties), jnp.argmax(free_ties), jnp.argmax(ties))
    j = j.astype(jnp.int32)
    sc = sc.at[j].set(True)
    pred = col4row[path[j]]  # the column through which row path[j] was reached
    on_path = jnp.where(pred >= 0, tree[jnp.maximum(pred, 0)], False) | (cols == j)
    tree = tree.at[j].set(on_path)
    found = row4col[j] < 0

    def finish_row(_):
      # A free column is reached: update the duals (every settled column and
      # every scanned row), then flip the matching along the tree path to j.
      du = jnp.where(sr, lowest - spc[jnp.maximum(col4row, 0)], 0)
      du = jnp.where(rows == root, lowest, du)
      dv = jnp.where(sc, lowest - spc, 0)
      flip_rows = jnp.where(on_path, path, nr)
      new_col4row = col4row.at[flip_rows].set(cols, mode="drop")
      new_row4col = jnp.where(on_path, path, row4col)
      return (cur + 1, search_state(cur + 1), u + du, v - dv, new_col4row, new_row4col,
              history.at[cur + 1].set(new_col4row))

    def continue_search(_):
      return (cur, (row4col[j], lowest, spc, sr, sc), u, v, col4row, row4col, history)

    cur, search, u, v, col4row, row4col, history = jax.lax.cond(
        found, finish_row, continue_search, None)
    return (cur, it + 1, search, u, v, path, tree, col4row, row4col, history)

  def cond(state):
    cur, it = state[:2]
    return (cur < num_rows) & (it < max_iters)

  init = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
          search_state(jnp.zeros((), jnp.int32)),
          jnp.zeros((nr,), dtype), jnp.zeros((nc,), dtype),
          jnp.full((nc,), -1, jnp.int32), jnp.zeros((nc, nc), bool),
          jnp.full((nr,), -1, jnp.int32), jnp.full((nc,), -1, jnp.int32),
          jnp.full((nr + 1, nr), -1, jnp.int32))
  out = jax.lax.while_loop(cond, body, init)
  return out[7], out[8], out[9]


def max_matching(scores: Array, *, row_valid: Array | None = None,
                 col_valid: Array | None = None) -> tuple[Array, Array]:
  """Maximum-weight matching of maximum cardinality among valid rows and columns.

      π* = argmax_{π ⊆ I × J matching, |π| = min(|I|, |J|)}  Σ_{(i, j) ∈ π} s_ij,
      total = Σ_{(i, j) ∈ π*} s_ij

  with I = {i : row_valid_i}, J = {j : col_valid_j}: what
  `scipy.optimize.linear_sum_assignment(s[I][:, J], maximize=True)` solves.
  Exact (see the module docstring for the algorithm and its cost); ties may
  pick a different optimal matching than scipy, never a worse one.

  Args:
    scores: (R, C) float, finite on valid rows × valid columns (other entries
      are never read, so padding may hold anything).
    row_valid: (R,) bool padding mask, None = all valid.
    col_valid: (C,) bool padding mask, None = all valid.
  Returns:
    assignment: (R,) int32, the column matched to each row, −1 for an invalid
      or unmatched row.
    total: () float, Σ of the matched scores (0 when nothing is valid);
      differentiable in `scores`, with gradient 1 at the matched pairs.
  """
  chex.assert_rank(scores, 2)
  r, c = scores.shape
  row_valid, col_valid = valid_or_all(row_valid, r), valid_or_all(col_valid, c)
  s = as_float(scores)
  n = max(r, c)
  if n == 0 or min(r, c) == 0:
    return jnp.full((r,), -1, jnp.int32), jnp.zeros((), s.dtype)
  # Square padding lets the device pick the orientation with rows ≤ columns.
  valid = row_valid[:, None] & col_valid[None, :]
  cost = jnp.pad(jnp.where(valid, -s, 0), ((0, n - r), (0, n - c)))
  rv, cv = jnp.pad(row_valid, (0, n - r)), jnp.pad(col_valid, (0, n - c))
  flip = jnp.sum(rv) > jnp.sum(cv)
  col4row, row4col, _ = shortest_augmenting_paths(
      jnp.where(flip, cost.T, cost), jnp.where(flip, cv, rv), jnp.where(flip, rv, cv))
  assignment = jnp.where(flip, row4col, col4row)[:r]
  safe = jnp.clip(assignment, 0, c - 1)
  matched = (assignment >= 0) & row_valid & col_valid[safe]
  assignment = jnp.where(matched, assignment, -1).astype(jnp.int32)
  total = jnp.sum(jnp.where(matched, s[jnp.arange(r), safe], 0), dtype=s.dtype)
  return assignment, total
