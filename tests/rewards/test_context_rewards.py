"""CiSS-Net's context reward and returns against slow numpy loops."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxseg import rewards

IGNORE = 255


def ref_context_reward(pred_t, pred_next, context, labels, window, b1, b2):
  h, w = labels.shape
  ch, cw = window
  out = np.zeros((h, w), np.float64)
  for i in range(h):
    for j in range(w):
      if labels[i, j] == IGNORE:
        continue
      scores = []
      for di in range(-(ch // 2), ch // 2 + 1):
        for dj in range(-(cw // 2), cw // 2 + 1):
          y, x = i + di, j + dj
          if not (0 <= y < h and 0 <= x < w) or labels[y, x] == IGNORE:
            continue
          before = pred_t[y, x] == labels[y, x]
          after = pred_next[y, x] == labels[y, x]
          scores.append({(False, True): 1.0, (True, False): -1.0,
                         (True, True): 0.5, (False, False): 0.0}[(before, after)])
      out[i, j] = (np.mean(scores) + b1 * (context[i, j] == labels[i, j] + 1)
                   + b2 * (context[i, j] == 0))
  return out


def ref_returns(r, bootstrap, gamma):
  t = len(r)
  out = np.zeros_like(r, dtype=np.float64)
  for s in range(t):
    acc = sum(gamma ** (l - s) * r[l] for l in range(s, t))
    out[s] = acc + gamma ** (t - s) * bootstrap
  return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(1, 9), w=st.integers(1, 9),
       c=st.integers(1, 4), window=st.sampled_from([(1, 1), (3, 3), (5, 5), (3, 7)]),
       ignore_frac=st.sampled_from([0.0, 0.3, 1.0]))
def test_context_reward_matches_numpy(seed, h, w, c, window, ignore_frac):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, (h, w))
  labels[rng.random((h, w)) < ignore_frac] = IGNORE
  pred_t, pred_next = rng.integers(0, c, (2, h, w))
  context = (pred_t + 1) * rng.integers(0, 2, (h, w))
  got = rewards.context_reward(pred_t, pred_next, context, labels, window=window,
                               beta_correct=0.4, beta_uncertain=0.2,
                               ignore_index=IGNORE)
  want = ref_context_reward(pred_t, pred_next, context, labels, window, 0.4, 0.2)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)


def test_context_reward_cases_by_hand():
  labels = np.array([[0, 1]])
  # position 0: incorrect -> correct (+1); position 1: correct -> incorrect (-1).
  pred_t, pred_next = np.array([[1, 1]]), np.array([[0, 0]])
  context = np.array([[1, 0]])  # correct context at 0, uncertain at 1
  r = rewards.context_reward(pred_t, pred_next, context, labels, window=(1, 1))
  np.testing.assert_allclose(np.asarray(r), [[1.0 + 0.4, -1.0 + 0.2]], atol=1e-6)
  # 1x3 window: both average (+1 - 1) / 2 = 0.
  r = rewards.context_reward(pred_t, pred_next, context, labels, window=(1, 3))
  np.testing.assert_allclose(np.asarray(r), [[0.4, 0.2]], atol=1e-6)


def test_context_reward_jit_vmap_and_bad_window():
  rng = np.random.default_rng(0)
  maps = jnp.asarray(rng.integers(0, 3, (4, 2, 6, 5)))
  fn = jax.jit(jax.vmap(functools.partial(rewards.context_reward, window=(3, 3))))
  out = fn(maps[0], maps[1], maps[2], maps[3])
  assert out.shape == (2, 6, 5) and out.dtype == jnp.float32
  for b in range(2):
    np.testing.assert_allclose(
        np.asarray(out[b]),
        ref_context_reward(*(np.asarray(m[b]) for m in maps), (3, 3), 0.4, 0.2), atol=1e-6)
  with pytest.raises(ValueError, match="odd"):
    rewards.context_reward(maps[0, 0], maps[1, 0], maps[2, 0], maps[3, 0], window=(4, 5))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.integers(1, 6),
       gamma=st.sampled_from([0.0, 0.1, 0.9, 1.0]))
def test_nstep_returns_matches_numpy(seed, t, gamma):
  rng = np.random.default_rng(seed)
  r, boot = rng.normal(size=(t, 3, 2)), rng.normal(size=(3, 2))
  got = rewards.nstep_returns(jnp.asarray(r, jnp.float32), jnp.asarray(boot, jnp.float32),
                              gamma=gamma)
  np.testing.assert_allclose(np.asarray(got), ref_returns(r, boot, gamma), rtol=1e-5,
                             atol=1e-5)
