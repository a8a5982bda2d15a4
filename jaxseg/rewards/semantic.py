"""Rewards, advantages and action sampling for semantic segmentation (RSS, SPEC §1).

Pure functions of arrays: no flax, optax or config. Everything is jittable and
vmappable; functions documented "for one image" take (H, W) maps and are lifted
to a batch with `jax.vmap`. Notation: logits `z` (..., C), labels `y` int with
`ignore_index`, `valid = y != ignore_index`, `N` samples.
"""
from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]  # (actions (H, W), labels (H, W)) -> ()


# --- Sampling -------------------------------------------------------------------


def sample_actions(rng: Array, logits: Array, num_samples: int, *,
                   resample: float = 1.0) -> Array:
  """Draws `num_samples` actions per position from `Categorical(softmax(z))`.

  Inverse-CDF sampling: with `u ~ U[0, 1)` and `F_c = Σ_{k≤c} softmax(z)_k`,
  `a = #{c : F_c ≤ u}` (clipped to C−1 against rounding). One uniform per draw
  instead of `jax.random.categorical`'s Gumbel draw per class.

  `resample` < 1 couples the N draws by common random numbers: at each
  position a draw uses its own uniform with probability `resample`, else one
  uniform shared by all N. Every draw is still exactly Categorical(softmax(z))
  (its uniform is U[0, 1) either way), but two draws differ only where one of
  them redrew: with `resample` = ρ, at about `(2ρ − ρ²)·(1 − Σ_c π_c²)` of the
  positions instead of `1 − Σ_c π_c²`.

  Args:
    rng: PRNG key.
    logits: (..., C).
    num_samples: N.
    resample: ρ in (0, 1]; 1 = independent draws.
  Returns:
    (N, ...) int32 actions.
  """
  cdf = jnp.cumsum(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
  shape = (num_samples, *logits.shape[:-1], 1)
  if resample >= 1.0:
    u = jax.random.uniform(rng, shape, jnp.float32)
  else:
    k_own, k_shared, k_mask = jax.random.split(rng, 3)
    shared = jax.random.uniform(k_shared, (1, *shape[1:]), jnp.float32)
    own = jax.random.uniform(k_own, shape, jnp.float32)
    u = jnp.where(jax.random.bernoulli(k_mask, resample, shape), own, shared)
  a = jnp.sum((cdf[None] <= u).astype(jnp.int32), axis=-1)
  return jnp.minimum(a, logits.shape[-1] - 1)


def action_log_probs(logits: Array, actions: Array) -> Array:
  """`log softmax(z)[a]`: logits (..., C), actions (N, ...) in [0, C) -> (N, ...)
  float32."""
  # A gather from the flat log-probabilities: no N broadcast copies of them
  # (whose gradient is an (N, ..., C) scatter; 45× slower on CPU at N = 256).
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  c = logits.shape[-1]
  where = jnp.arange(logp.size // c, dtype=jnp.int32).reshape(logits.shape[:-1])
  return logp.reshape(-1)[where * c + actions]


def entropy(logits: Array) -> Array:
  """Policy entropy `-Σ_c p_c log p_c` per position: (..., C) -> (...)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


# --- Rewards ----------------------------------------------------------------------


def pixel_correctness(actions: Array, labels: Array, *,
                      ignore_index: int = 255) -> tuple[Array, Array]:
  """Pixel-level reward `r(p) = 1[a(p) == y(p)]` where `valid`, else 0.

  Args:
    actions: (..., H, W) int, e.g. (N, H, W) samples against (H, W) labels.
    labels: int, broadcastable to `actions`.
  Returns:
    (rewards float32, valid bool), both of the broadcast shape.
  """
  labels = jnp.broadcast_to(labels, actions.shape)
  valid = labels != ignore_index
  rewards = ((actions == labels) & valid).astype(jnp.float32)
  return rewards, valid


def class_iou(actions: Array, labels: Array, *, num_classes: int,
              ignore_index: int = 255, empty: float = 1.0) -> Array:
  """Per-class IoU of one action map against its label map: (C,) float32.

  Over valid pixels, for each class c: `I_c = #{a = c ∧ y = c}`,
  `U_c = #{a = c} + #{y = c} − I_c`, `IoU_c = I_c / U_c`, and `empty` where
  `U_c = 0` (c neither predicted nor present: a true negative, 1 by default).
  These are the terms an mIoU evaluator averages; each is still one number
  per map, not a pixel label.

  Args:
    actions: (H, W) int in [0, num_classes).
    labels: (H, W) int, `ignore_index` where unlabelled.
  Returns:
    (num_classes,) float32.
  """
  chex.assert_rank([actions, labels], 2)
  chex.assert_equal_shape([actions, labels])
  inter, union = _inter_union(actions, labels, num_classes, ignore_index)
  return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), empty)


def _inter_union(actions, labels, num_classes, ignore_index):
  valid = (labels != ignore_index).reshape(-1)
  a = actions.reshape(-1)
  y = jnp.where(valid, labels.reshape(-1), 0)
  w = valid.astype(jnp.float32)
  area_a = jnp.bincount(a, weights=w, length=num_classes)
  area_y = jnp.bincount(y, weights=w, length=num_classes)
  inter = jnp.bincount(y, weights=w * (a == y), length=num_classes)
  return inter, area_a + area_y - inter


def image_miou(actions: Array, labels: Array, *, num_classes: int,
               ignore_index: int = 255) -> Array:
  """mIoU of one action map against its label map: the image-level reward.

  `R = mean_{c : U_c > 0} I_c / U_c` (see `class_iou`), and 0.0 when the image
  has no valid pixel.

  Args:
    actions: (H, W) int in [0, num_classes).
    labels: (H, W) int, `ignore_index` where unlabelled.
  Returns:
    () float32.
  """
  chex.assert_rank([actions, labels], 2)
  chex.assert_equal_shape([actions, labels])
  inter, union = _inter_union(actions, labels, num_classes, ignore_index)
  present = union > 0
  iou = jnp.where(present, inter / jnp.maximum(union, 1.0), 0.0)
  return jnp.sum(iou) / jnp.maximum(jnp.sum(present), 1)


def host_score(fn: Callable[[np.ndarray, np.ndarray], float]) -> ScoreFn:
  """Wraps a non-jittable per-image scorer (numpy in, float out) as a `ScoreFn`.

  The scorer runs on the host through `jax.pure_callback`, so it can be any
  Python code (an external evaluator, a learned reward model served elsewhere).
  Under `vmap` it is called once per image.
  """

  def host(actions, labels):
    return np.asarray(fn(np.asarray(actions), np.asarray(labels)), np.float32)

  def score(actions: Array, labels: Array) -> Array:
    return jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32), actions,
                             labels, vmap_method="sequential")

  return score


def sample_scores(score_fn: ScoreFn, actions: Array, labels: Array) -> Array:
  """Scores every sampled map of every image: actions (B, N, H, W), labels (B, H, W)
  -> (B, N) rewards, `R[b, n] = score_fn(actions[b, n], labels[b])`."""
  chex.assert_rank([actions, labels], [4, 3])
  per_image = jax.vmap(score_fn, in_axes=(0, None))
  return jax.vmap(per_image)(actions, labels)


# --- Advantages -------------------------------------------------------------------


def normalize_advantages(rewards: Array, *, where: Array | None = None,
                         axis: int | tuple[int, ...] | None = None,
                         axis_name: str | tuple[str, ...] | None = None,
                         eps: float = 1e-6) -> Array:
  """GRPO-style advantages `A = (r − mean) / (std + eps)`, 0 outside `where`.

  mean and std are over the entries selected by `where` (all by default) along
  `axis` (all axes by default): `mean = S1/n`, `std = sqrt(max(S2/n − mean², 0))`
  with `S1 = Σ r`, `S2 = Σ r²`, `n = Σ 1`. With `axis_name` (inside `shard_map`
  or `pmap`), `(S1, S2, n)` are `psum`-ed over that mesh axis first: SyncAN,
  equal to normalising the global batch at once.
  """
  r = rewards.astype(jnp.float32)
  m = jnp.ones_like(r) if where is None else jnp.broadcast_to(where, r.shape).astype(jnp.float32)
  sums = (jnp.sum(r * m, axis=axis, keepdims=True),
          jnp.sum(r * r * m, axis=axis, keepdims=True),
          jnp.sum(m, axis=axis, keepdims=True))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  s1, s2, n = sums
  n = jnp.maximum(n, 1.0)
  mean = s1 / n
  std = jnp.sqrt(jnp.maximum(s2 / n - mean * mean, 0.0))
  return jnp.where(m > 0, (r - mean) / (std + eps), 0.0)


def leave_one_out_advantages(rewards: Array, *, axis: int = 0) -> Array:
  """RLOO advantages: `A_n = R_n − mean_{m ≠ n} R_m` over the N samples on
  `axis` (N ≥ 2), an unbiased baseline with no std division."""
  r = rewards.astype(jnp.float32)
  n = r.shape[axis]
  if n < 2:
    raise ValueError(f"leave_one_out_advantages needs N >= 2 samples, got {n}.")
  return (r - jnp.sum(r, axis=axis, keepdims=True) / n) * n / (n - 1)


def mid_ranks(rewards: Array, *, axis: int = -1) -> Array:
  """Rank of each reward among the N on `axis`, ties sharing their mean rank:
  `rank_n = #{m : R_m < R_n} + (#{m : R_m = R_n} − 1) / 2`, in [0, N − 1]."""
  r = jnp.moveaxis(rewards.astype(jnp.float32), axis, -1)
  less = jnp.sum(r[..., None, :] < r[..., :, None], axis=-1)
  ties = jnp.sum(r[..., None, :] == r[..., :, None], axis=-1)
  return jnp.moveaxis(less + (ties - 1) / 2.0, -1, axis)


def group_advantages(rewards: Array, *, estimator: str = "grpo", axis: int = -1,
                     eps: float = 1e-6) -> Array:
  """Advantages of the N rewards of one group (e.g. the N maps of an image) on `axis`:

      raw:     A_n = R_n                              (REINFORCE, no baseline)
      grpo:    A_n = (R_n − mean R) / (std R + eps)   (GRPO)
      drgrpo:  A_n = R_n − mean R                     (Dr. GRPO: no std division)
      rloo:    A_n = R_n − mean_{m≠n} R_m             (leave-one-out)
      rank:    grpo of `mid_ranks(R)`                 (rank-normalised)

  std is the population std over the N. A group whose N rewards are equal gets
  A = 0 from every estimator but `raw`.
  """
  if estimator not in ADVANTAGE_ESTIMATORS:
    raise ValueError(f"advantage estimator {estimator!r} is unknown; choose from "
                     f"{ADVANTAGE_ESTIMATORS}.")
  r = rewards.astype(jnp.float32)
  if estimator == "raw":
    return r
  if estimator == "rloo":
    return leave_one_out_advantages(r, axis=axis)
  if estimator == "drgrpo":
    return r - jnp.mean(r, axis=axis, keepdims=True)
  if estimator == "rank":
    r = mid_ranks(r, axis=axis)
  return normalize_advantages(r, axis=axis, eps=eps)


ADVANTAGE_ESTIMATORS = ("raw", "grpo", "drgrpo", "rloo", "rank")


def pairwise_spatial_difference(actions: Array, rewards: Array, *,
                                num_classes: int | None = None) -> Array:
  """PSD advantages of N action maps of one image.

  `A_i(p) = Σ_j (R_i − R_j) · 1[a_i(p) ≠ a_j(p)] / (N − 1)`: map i is credited
  (or blamed) for its reward difference to map j only where the two differ.
  Never the N×N×H×W tensor: by a scan over j with an (N, H, W) carry
  (O(N²·H·W) work), or, given `num_classes` C < N, from per-position class
  histograms — with `n_c(p) = #{j : a_j(p) = c}` and `S_c(p) = Σ_{j : a_j(p) = c} R_j`,

      A_i(p) = (R_i·(N − n_{a_i(p)}(p)) − (Σ_j R_j − S_{a_i(p)}(p))) / (N − 1)

  (O(N·C·H·W): large N made cheap).

  Args:
    actions: (N, H, W) int, N ≥ 2.
    rewards: (N,) float.
    num_classes: C, the actions' range (optional; enables the histogram form).
  Returns:
    (N, H, W) float32.
  """
  chex.assert_rank([actions, rewards], [3, 1])
  chex.assert_axis_dimension(rewards, 0, actions.shape[0])
  n = actions.shape[0]
  if n < 2:
    raise ValueError(f"pairwise_spatial_difference needs N >= 2 maps, got {n}.")
  r = rewards.astype(jnp.float32)
  if num_classes is not None and num_classes < n:
    # n_c and S_c by scatter-adds into (H·W·C) bins, read back at a_i(p): no
    # (N, H, W, C) one-hot (15× faster on CPU at N = 256).
    h, w = actions.shape[1:]
    idx = (jnp.arange(h * w, dtype=jnp.int32).reshape(h, w) * num_classes + actions).reshape(n, -1)
    counts = jnp.zeros(h * w * num_classes, jnp.float32).at[idx].add(1.0)
    sums = jnp.zeros(h * w * num_classes, jnp.float32).at[idx].add(
        jnp.broadcast_to(r[:, None], idx.shape))
    same = counts[idx].reshape(actions.shape)
    adv = (r[:, None, None] * (n - same) - (jnp.sum(r) - sums[idx].reshape(actions.shape))) / (n - 1)
    return jnp.where(same == n, 0.0, adv)  # exactly 0 where every map agrees

  def body(acc, j):
    a_j = actions[j]
    diff = (actions != a_j[None]).astype(jnp.float32)
    return acc + (r - r[j])[:, None, None] * diff, None

  acc, _ = jax.lax.scan(body, jnp.zeros(actions.shape, jnp.float32), jnp.arange(n))
  return acc / (n - 1)


# --- Progressive scale rewards: down-sampling -----------------------------------


def _block_factor(size: tuple[int, int], factor: int) -> None:
  if factor < 1 or size[0] % factor or size[1] % factor:
    raise ValueError(f"PSR down-sampling factor {factor} must divide the map size "
                     f"{tuple(size)}.")


def downsample_labels(labels: Array, factor: int, *, num_classes: int,
                      ignore_index: int = 255) -> Array:
  """Block mode of a label map: (..., H, W) -> (..., H/f, W/f).

  Each f×f block takes its most frequent valid class (the lowest class id on a
  tie); a block whose pixels are all `ignore_index` stays `ignore_index`.
  """
  h, w = labels.shape[-2:]
  _block_factor((h, w), factor)
  if factor == 1:
    return labels
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)  # ignore -> zeros
  lead = labels.shape[:-2]
  counts = onehot.reshape(*lead, h // factor, factor, w // factor, factor, num_classes)
  counts = counts.sum(axis=(-4, -2))
  mode = jnp.argmax(counts, axis=-1).astype(labels.dtype)
  return jnp.where(counts.sum(-1) > 0, mode, jnp.asarray(ignore_index, labels.dtype))


def downsample_logits(logits: Array, factor: int) -> Array:
  """Average pooling of logits over f×f blocks: (..., H, W, C) -> (..., H/f, W/f, C)."""
  h, w, c = logits.shape[-3:]
  _block_factor((h, w), factor)
  if factor == 1:
    return logits
  lead = logits.shape[:-3]
  x = logits.reshape(*lead, h // factor, factor, w // factor, factor, c)
  return x.mean(axis=(-4, -2))
