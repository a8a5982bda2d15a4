"""Multi-scale + flip evaluation against a slow numpy reference of the same
averaging (explicit loops for the resize, a whole-image forward pass)."""
import math

import numpy as np
import pytest

from jaxseg.data.images import resize_image
from jaxseg.evaluation import semantic


def _resize_reference(x, size):
  """Per output pixel, PyTorch's bilinear (align_corners=False) by hand."""
  h, w = x.shape[:2]
  out = np.zeros((size[0], size[1]) + x.shape[2:], np.float64)

  def src(o, n_in, n_out):
    s = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
    i0 = int(math.floor(s))
    return i0, min(i0 + 1, n_in - 1), s - i0

  for oy in range(size[0]):
    y0, y1, fy = src(oy, h, size[0])
    for ox in range(size[1]):
      x0, x1, fx = src(ox, w, size[1])
      out[oy, ox] = ((1 - fy) * ((1 - fx) * x[y0, x0] + fx * x[y0, x1])
                     + fy * ((1 - fx) * x[y1, x0] + fx * x[y1, x1]))
  return out


@pytest.mark.parametrize("shape,size", [((5, 7, 3), (9, 4)), ((6, 6, 2), (6, 13)),
                                        ((4, 9, 1), (2, 3))])
def test_resize_bilinear_matches_the_loop_reference(shape, size):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  np.testing.assert_allclose(semantic.resize_bilinear(x, size), _resize_reference(x, size),
                             atol=1e-5)


def _pixelwise_model(num_classes, flip_sensitive):
  """Logits as a fixed function of each pixel's colour and (with `parity`) its
  column's parity in the window, so that a flip changes them; without it a
  crop sees exactly what the whole image sees."""
  weights = np.random.default_rng(1).normal(size=(4, num_classes)).astype(np.float32)

  def predict(images):
    images = np.asarray(images, np.float32) / 255.0
    parity = (np.arange(images.shape[2]) % 2).astype(np.float32) * float(flip_sensitive)
    feats = np.concatenate([images, np.broadcast_to(parity[None, None, :, None],
                                                    images.shape[:3] + (1,))], -1)
    return feats @ weights
  return predict


def _mf_reference(predict, image, scales, flip, heads, c):
  h, w = image.shape[:2]
  total = np.zeros((h, w, heads, c))
  n = 0
  for s in scales:
    for f in ([False, True] if flip else [False]):
      x = resize_image(image, (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))))
      if f:
        x = x[:, ::-1]
      logits = predict(x[None])[0]
      if f:
        logits = logits[:, ::-1]
      logits = _resize_reference(logits, (h, w)).reshape(h, w, heads, c)
      for y in range(h):
        for xx in range(w):
          for k in range(heads):
            e = np.exp(logits[y, xx, k] - logits[y, xx, k].max())
            total[y, xx, k] += e / e.sum()
      n += 1
  return total / n


# crop (32, 32): one window at every scale, a flip-sensitive model; crop (8, 8):
# sliding windows at most scales, a model that every window sees alike.
@pytest.mark.parametrize("flip,heads,crop", [(True, 1, (32, 32)), (False, 2, (32, 32)),
                                             (True, 2, (8, 8))])
def test_multi_scale_flip_equals_the_reference(flip, heads, crop):
  c = 3
  image = np.random.default_rng(2).integers(0, 255, (11, 14, 3), dtype=np.uint8)
  predict = _pixelwise_model(heads * c, flip_sensitive=crop[0] > 14 * 1.75)
  scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

  def logits_at(s, f):
    return semantic.scaled_logits(predict, image, scale=s, flip=f, crop_size=crop,
                                  stride=(5, 5), num_classes=heads * c, batch_size=2)

  got = semantic.multi_scale_probs(logits_at, scales=scales, flip=flip, heads=heads)
  want = _mf_reference(predict, image, scales, flip, heads, c)
  assert got.shape == (11, 14, heads, c)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # Not the single-scale answer: the test would notice a no-op averaging.
  ss = semantic.softmax(logits_at(1.0, False).reshape(11, 14, heads, c))
  assert np.abs(got - ss).max() > 1e-3


def test_base_scale_is_mmsegmentations_keep_ratio_resize():
  assert semantic.base_scale((512, 683), (2048, 512)) == 1.0
  assert semantic.base_scale((1024, 2048), (2048, 512)) == 0.5
  assert semantic.base_scale((375, 500), None) == 1.0
