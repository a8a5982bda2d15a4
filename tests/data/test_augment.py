"""Training augmentation invariants."""

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import TrainAugmentation
from jaxseg.data import augment

IGNORE = 255


def _example(size=(30, 40), values=(0, 3, 7), seed=0):
  rng = np.random.default_rng(seed)
  label = rng.choice(np.asarray(values, np.uint8), size)
  image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
  return {"image": image, "label": label, "name": "x"}


@pytest.mark.parametrize("seed", range(5))
def test_output_shapes_and_dtypes(seed):
  transform = TrainAugmentation(crop_size=(24, 32), ignore_index=IGNORE)
  out = transform(_example(), np.random.default_rng(seed))
  assert set(out) == {"image", "label"}
  assert out["image"].shape == (24, 32, 3)
  assert out["image"].dtype == np.uint8
  assert out["label"].shape == (24, 32)
  assert out["label"].dtype == np.int32


def test_same_rng_same_output():
  transform = TrainAugmentation(crop_size=(16, 16))
  a = transform(_example(), np.random.default_rng(3))
  b = transform(_example(), np.random.default_rng(3))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_padding_uses_ignore_and_zero():
  transform = TrainAugmentation(crop_size=(40, 50), ignore_index=IGNORE,
                                scale_range=(1.0, 1.0), flip=False,
                                photometric=False)
  example = _example(size=(30, 40))
  out = transform(example, np.random.default_rng(0))
  np.testing.assert_array_equal(out["label"][:30, :40], example["label"])
  np.testing.assert_array_equal(out["image"][:30, :40], example["image"])
  assert np.all(out["label"][30:] == IGNORE)
  assert np.all(out["label"][:, 40:] == IGNORE)
  assert np.all(out["image"][30:] == 0)
  assert np.all(out["image"][:, 40:] == 0)


def test_flip_moves_image_and_label_together():
  transform = TrainAugmentation(crop_size=(30, 40), scale_range=(1.0, 1.0),
                                photometric=False)
  example = _example()
  example["image"][..., 0] = example["label"] * 30
  flipped = unflipped = 0
  for seed in range(20):
    out = transform(example, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["image"][..., 0], out["label"] * 30)
    if np.array_equal(out["label"], example["label"][:, ::-1]):
      flipped += 1
    elif np.array_equal(out["label"], example["label"]):
      unflipped += 1
  assert flipped > 0 and unflipped > 0 and flipped + unflipped == 20


def test_rotate_gives_all_eight_symmetries_together():
  transform = TrainAugmentation(crop_size=(30, 30), scale_range=(1.0, 1.0),
                                photometric=False, rotate=True)
  example = _example(size=(30, 30), values=tuple(range(50)))
  example["instances"] = example["label"].astype(np.int32) + 1
  example["image"][..., 0] = example["label"] * 5
  symmetries = [np.rot90(f, k) for f in (example["label"], example["label"][:, ::-1])
                for k in range(4)]
  seen = set()
  for seed in range(60):
    out = transform(example, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["image"][..., 0], out["label"] * 5)
    np.testing.assert_array_equal(out["instances"], out["label"] + 1)
    seen.add(next(i for i, s in enumerate(symmetries) if np.array_equal(out["label"], s)))
  assert seen == set(range(8))
  with pytest.raises(ValueError, match="square"):
    TrainAugmentation(crop_size=(30, 40), rotate=True)


@pytest.mark.parametrize("seed", range(8))
def test_scale_keeps_label_values(seed):
  transform = TrainAugmentation(crop_size=(32, 32), ignore_index=IGNORE)
  out = transform(_example(values=(0, 3, 7)), np.random.default_rng(seed))
  assert set(np.unique(out["label"]).tolist()) <= {0, 3, 7, IGNORE}


def test_instances_follow_label_and_pad_with_zero():
  transform = TrainAugmentation(crop_size=(64, 64), ignore_index=IGNORE,
                                scale_range=(0.5, 0.5))
  example = _example()
  example["instances"] = example["label"].astype(np.int32) + 1
  out = transform(example, np.random.default_rng(1))
  assert out["instances"].dtype == np.int32
  real = out["label"] != IGNORE
  np.testing.assert_array_equal(out["instances"][real], out["label"][real] + 1)
  assert np.all(out["instances"][~real] == 0)


def test_windowed_resize_matches_full_resize():
  """Resampling only the crop window equals rescaling then cropping."""
  example = _example(size=(60, 80))
  rng = np.random.default_rng(0)
  for _ in range(5):
    window = augment.sample_crop_window(rng, (60, 80), (32, 48), (1.2, 2.0))
    full = np.asarray(Image.fromarray(example["image"]).resize(
        (window.scaled[1], window.scaled[0]), Image.BILINEAR)).astype(float)
    expected = full[window.top:window.top + 32, window.left:window.left + 48]
    got = augment.crop_image(example["image"], window, (32, 48))
    assert np.abs(got.astype(float) - expected).mean() < 2.0
    label_full = example["label"][
        augment.nearest_indices(60, window.scaled[0])[:, None],
        augment.nearest_indices(80, window.scaled[1])[None, :]]
    np.testing.assert_array_equal(
        augment.crop_map(example["label"], window, (32, 48), IGNORE),
        label_full[window.top:window.top + 32, window.left:window.left + 48])


def test_photometric_identity_and_gray_preserved():
  image = _example()["image"]
  identity = (np.eye(3, dtype=np.float32), np.zeros(3, np.float32))
  np.testing.assert_array_equal(augment.apply_photometric(image, *identity),
                                image)
  gray = np.repeat(image[..., :1], 3, axis=-1)
  changed = 0
  for seed in range(10):
    matrix, offset = augment.sample_photometric(np.random.default_rng(seed))
    out = augment.apply_photometric(gray, matrix, offset)
    assert out.dtype == np.uint8
    # Gray has no chroma: saturation and hue leave it gray (up to rounding).
    assert np.abs(out.astype(int) - out[..., :1]).max() <= 1
    changed += not np.array_equal(out, gray)
  assert changed > 0


def test_photometric_off_keeps_pixels():
  transform = TrainAugmentation(crop_size=(30, 40), scale_range=(1.0, 1.0),
                                flip=False, photometric=False)
  example = _example()
  out = transform(example, np.random.default_rng(0))
  np.testing.assert_array_equal(out["image"], example["image"])


def test_bad_arguments():
  with pytest.raises(ValueError, match="crop_size"):
    TrainAugmentation(crop_size=(0, 4))
  with pytest.raises(ValueError, match="scale_range"):
    TrainAugmentation(crop_size=(4, 4), scale_range=(2.0, 1.0))
