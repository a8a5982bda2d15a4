"""Synthetic folder datasets written into tmp_path."""

import pathlib
import types

import numpy as np
import pytest
from PIL import Image

NUM_CLASSES = 3
IGNORE = 255
SIZE = (20, 30)  # (H, W)


def write_image(path: pathlib.Path, size=SIZE, seed=0, mode="RGB") -> None:
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
  Image.fromarray(pixels).convert(mode).save(path)


def write_label(path: pathlib.Path, label: np.ndarray,
                palette: bool = True) -> None:
  image = Image.fromarray(label.astype(np.uint8))
  if palette:
    image = image.convert("P")
    colours = np.random.default_rng(1).integers(0, 256, 768).tolist()
    image.putpalette(colours)
  image.save(path)


def random_label(seed: int, size=SIZE, num_classes=NUM_CLASSES,
                 ignore=IGNORE) -> np.ndarray:
  rng = np.random.default_rng(seed)
  label = rng.integers(0, num_classes, size).astype(np.uint8)
  label[0, :3] = ignore
  return label


def make_semantic(root: pathlib.Path, splits=("train", "val"), count=3,
                  classes_text=None) -> pathlib.Path:
  """ROOT/{images,labels}/{split}/ with `count` examples per split."""
  (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
  (root / "classes.txt").write_text(
      classes_text or
      "0 sky (blue)\n1 road surface\n2 car\n255 void (ignored)\n")
  for split in splits:
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i in range(count):
      ext = ".jpg" if i % 2 else ".png"
      write_image(root / "images" / split / f"ex{i}{ext}", seed=i)
      write_label(root / "labels" / split / f"ex{i}.png", random_label(i))
  return root


def make_instance(root: pathlib.Path, count=4) -> pathlib.Path:
  """CVPPP-like: images/X_rgb.png, labels/X_label.png, splits/{split}.txt."""
  for folder in ("images", "labels", "splits"):
    (root / folder).mkdir(parents=True)
  stems = [f"plant{i:03d}" for i in range(count)]
  for i, stem in enumerate(stems):
    write_image(root / "images" / f"{stem}_rgb.png", seed=i, mode="RGBA")
    instances = np.zeros(SIZE, np.uint8)
    for k in range(1, i + 3):
      instances[k * 2:k * 2 + 2, k:k + 5] = k
    write_label(root / "labels" / f"{stem}_label.png", instances)
  (root / "splits" / "train.txt").write_text("\n".join(stems[:-1]) + "\n")
  (root / "splits" / "val.txt").write_text(stems[-1] + "\n")
  return root


@pytest.fixture
def semantic_root(tmp_path):
  return make_semantic(tmp_path / "semantic")


@pytest.fixture
def instance_root(tmp_path):
  return make_instance(tmp_path / "instance")


@pytest.fixture
def synth():
  """The writers above, for tests that build their own broken datasets."""
  return types.SimpleNamespace(
      write_image=write_image, write_label=write_label,
      random_label=random_label, make_semantic=make_semantic,
      make_instance=make_instance, NUM_CLASSES=NUM_CLASSES, IGNORE=IGNORE,
      SIZE=SIZE)
