"""Tiny synthetic copies of the papers' datasets, each in its exact layout and
label encoding: for the tests, the input-pipeline benchmark and for trying a
paper config's `:runlocal` variant without the data.

    python -m jaxseg.data.mock_trees pascal_context /tmp/mock   # prints the root

Every image is a few flat-coloured blocks whose colour is a function of the
block's class, plus noise, so a model learns them in a few hundred steps. The
stored label values cover the dataset's encoding, void values included.
"""
from __future__ import annotations

import argparse
import functools
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

_PALETTE_SEED = 1234


@functools.lru_cache(maxsize=1)
def _colours() -> np.ndarray:
  return np.random.default_rng(_PALETTE_SEED).integers(0, 256, (65536, 3))


def scene(rng: np.random.Generator, size: Sequence[int], values: Sequence[int],
          blocks: int = 4) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 RGB image, int stored-label map) of `blocks`×`blocks` tiles, each a
  value drawn from `values` and painted in that value's colour."""
  h, w = size
  colours = _colours()
  tiles = rng.choice(np.asarray(values), (blocks, blocks))
  rows = np.minimum(np.arange(h) * blocks // h, blocks - 1)
  cols = np.minimum(np.arange(w) * blocks // w, blocks - 1)
  label = tiles[rows[:, None], cols[None, :]]
  noise = rng.normal(0, 8, (h, w, 3))
  image = np.clip(colours[label % len(colours)] + noise, 0, 255).astype(np.uint8)
  return image, label


def _save(path: pathlib.Path, array: np.ndarray, mode: str | None = None) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if mode == "I;16":
    Image.fromarray(array.astype(np.uint16)).save(path)
  else:
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path, quality=95)


def _stems(prefix: str, n: int) -> list[str]:
  return [f"{prefix}_{i:06d}" for i in range(n)]


def pascal_context(root, *, splits=None, size=(48, 64), seed: int = 0) -> pathlib.Path:
  """ROOT/VOCdevkit/VOC2010 with SegmentationClassContext (values 0..59)."""
  splits = splits or {"train": 8, "val": 4}
  base = pathlib.Path(root) / "VOCdevkit" / "VOC2010"
  rng = np.random.default_rng(seed)
  for split, n in splits.items():
    stems = _stems(f"2008_{split}", n)
    for s in stems:
      image, label = scene(rng, size, (0, 1, 5, 15, 30, 59))
      _save(base / "JPEGImages" / f"{s}.jpg", image)
      _save(base / "SegmentationClassContext" / f"{s}.png", label)
    lists = base / "ImageSets" / "SegmentationContext"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
  return base


def voc_aug(root, *, train: int = 4, aug: int = 4, val: int = 4, size=(48, 64),
            seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
  """(ROOT/VOCdevkit/VOC2012 with palette SegmentationClass PNGs, ROOT/
  benchmark_RELEASE with SBD's dataset/cls/*.mat for the aug images and two
  of the VOC train ones); run `pascal.convert_sbd` to add the aug split."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  base = pathlib.Path(root) / "VOCdevkit" / "VOC2012"
  sbd = pathlib.Path(root) / "benchmark_RELEASE" / "dataset"
  rng = np.random.default_rng(seed)
  palette = np.random.default_rng(_PALETTE_SEED).integers(0, 256, 768).tolist()
  lists = base / "ImageSets" / "Segmentation"
  lists.mkdir(parents=True, exist_ok=True)
  named = {"train": _stems("2007_train", train), "val": _stems("2007_val", val)}
  for split, stems in named.items():
    for s in stems:
      image, label = scene(rng, size, (0, 1, 7, 15, 20, 255))
      _save(base / "JPEGImages" / f"{s}.jpg", image)
      png = Image.fromarray(label.astype(np.uint8), mode="P")
      png.putpalette(palette)
      (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
      png.save(base / "SegmentationClass" / f"{s}.png")
    (lists / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
  aug_stems = _stems("2011_aug", aug)
  for s in aug_stems + named["train"][:2]:
    image, label = scene(rng, size, (0, 3, 12, 20))
    if s in aug_stems:
      _save(base / "JPEGImages" / f"{s}.jpg", image)
    (sbd / "cls").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(sbd / "cls" / f"{s}.mat", {"GTcls": {
        "Segmentation": label.astype(np.uint8), "Boundaries": np.zeros((1, 1)),
        "CategoriesPresent": np.unique(label)}})
  half = len(aug_stems) // 2
  (sbd / "train.txt").write_text("".join(f"{s}\n" for s in aug_stems[:half] + named["train"][:2]))
  (sbd / "val.txt").write_text("".join(f"{s}\n" for s in aug_stems[half:]))
  return base, sbd.parent


# Label ids of Cityscapes' thing classes that carry instance ids.
CITYSCAPES_THINGS = (24, 25, 26, 27, 28, 31, 32, 33)


def cityscapes(root, *, splits=None, size=(64, 128), cities=("aachen", "bremen"),
               seed: int = 0) -> pathlib.Path:
  """ROOT/{leftImg8bit,gtFine}/{split}/{city}/... with labelIds 0..33 and
  instanceIds (id·1000 + k for thing tiles, the label id elsewhere)."""
  splits = splits or {"train": 8, "val": 4}
  base = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  for split, n in splits.items():
    for i in range(n):
      city = cities[i % len(cities)]
      stem = f"{city}_{i:06d}_000019"
      image, label = scene(rng, size, (0, 7, 8, 11, 21, 23, 24, 26, 33))
      h, w = size
      tile = (np.arange(h) * 4 // h)[:, None] * 4 + (np.arange(w) * 4 // w)[None, :]
      instances = np.where(np.isin(label, CITYSCAPES_THINGS), label * 1000 + tile, label)
      _save(base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
      _save(base / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
      _save(base / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", instances,
            mode="I;16")
  return base


def ade20k(root, *, splits=None, size=(48, 64), seed: int = 0) -> pathlib.Path:
  """ROOT/ADEChallengeData2016/{images,annotations}/{training,validation}."""
  splits = splits or {"training": 8, "validation": 4}
  base = pathlib.Path(root) / "ADEChallengeData2016"
  rng = np.random.default_rng(seed)
  for split, n in splits.items():
    for s in _stems(f"ADE_{split[:5]}", n):
      image, label = scene(rng, size, (0, 1, 3, 13, 150))
      _save(base / "images" / split / f"{s}.jpg", image)
      _save(base / "annotations" / split / f"{s}.png", label)
  return base


def mapillary(root, *, splits=None, size=(48, 64), seed: int = 0) -> pathlib.Path:
  """ROOT/{training,validation}/{images,v1.2/labels} with values 0..65."""
  splits = splits or {"training": 8, "validation": 4}
  base = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  for split, n in splits.items():
    for s in _stems(split[:5], n):
      image, label = scene(rng, size, (2, 13, 15, 17, 27, 30, 55, 65))
      _save(base / split / "images" / f"{s}.jpg", image)
      _save(base / split / "v1.2" / "labels" / f"{s}.png", label)
  return base


WRITERS = {"pascal_context": pascal_context, "voc_aug": voc_aug, "cityscapes": cityscapes,
           "ade20k": ade20k, "mapillary": mapillary}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m jaxseg.data.mock_trees",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("dataset", choices=sorted(WRITERS))
  parser.add_argument("root")
  args = parser.parse_args(argv)
  out = WRITERS[args.dataset](args.root)
  if args.dataset == "voc_aug":
    from jaxseg.data import pascal  # pylint: disable=g-import-not-at-top
    pascal.convert_sbd(out[1], out[0])
    out = out[0]
  print(out)


if __name__ == "__main__":
  main()
