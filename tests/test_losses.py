import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses


def reference_ce(logits, labels, ignore, weights):
  num, den = 0.0, 0.0
  for idx in np.ndindex(labels.shape):
    y = labels[idx]
    if y == ignore:
      continue
    z = logits[idx].astype(np.float64)
    logp = z - (np.log(np.sum(np.exp(z - z.max()))) + z.max())
    w = 1.0 if weights is None else weights[y]
    num += -w * logp[y]
    den += w
  return num / den if den else 0.0


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_numpy_loop(weighted):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32) * 3
  labels = rng.integers(0, 4, size=(2, 5, 6))
  labels[rng.random(labels.shape) < 0.3] = 255
  weights = rng.random(4).astype(np.float32) + 0.1 if weighted else None
  loss, n = losses.softmax_cross_entropy(
      jnp.asarray(logits), jnp.asarray(labels), ignore_index=255,
      class_weights=None if weights is None else jnp.asarray(weights))
  np.testing.assert_allclose(loss, reference_ce(logits, labels, 255, weights), rtol=1e-5)
  assert int(n) == int((labels != 255).sum())


def test_cross_entropy_all_ignored_is_zero_with_zero_grad():
  logits = jnp.ones((1, 3, 3, 5))
  labels = jnp.full((1, 3, 3), 255)
  loss, g = jax.value_and_grad(
      lambda z: losses.softmax_cross_entropy(z, labels)[0])(logits)
  assert float(loss) == 0.0 and not np.any(np.asarray(g))


def test_cross_entropy_rejects_bad_shapes():
  with pytest.raises(AssertionError):
    losses.softmax_cross_entropy(jnp.ones((2, 3, 3, 5)), jnp.ones((2, 3, 4), jnp.int32))
