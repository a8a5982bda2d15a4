"""Pascal Context and Pascal VOC 2012 (+ SBD) in their own layouts.

Pascal Context (`pascal_context`, 59 classes; `pascal_context60`, 60 with
background), ROOT = the VOC2010 folder as mmsegmentation's converter
(`tools/dataset_converters/pascal_context.py`) leaves it::

  ROOT/JPEGImages/X.jpg
  ROOT/SegmentationClassContext/X.png        0 = background, 1..59 the classes
  ROOT/ImageSets/SegmentationContext/{train,val}.txt   (4,998 / 5,105 stems)

59 classes: 0 -> ignore, k -> k - 1 (mmsegmentation's reduce_zero_label); 60:
as stored. Values above 59 are errors.

VOC 2012 with SBD (`voc_aug`, 21 classes), ROOT = the VOC2012 folder::

  ROOT/JPEGImages/X.jpg
  ROOT/SegmentationClass/X.png      palette PNGs, 255 = boundary (ignored)
  ROOT/SegmentationClassAug/X.png   SBD's labels as PNGs (`python -m jaxseg.data.pascal sbd`)
  ROOT/ImageSets/Segmentation/{train,val,aug}.txt

train = train.txt (labels from SegmentationClass, as mmsegmentation's
`voc12aug` config) ∪ aug.txt (from SegmentationClassAug); val = val.txt from
SegmentationClass; any other split S reads S.txt, from SegmentationClassAug
where it has the stem. `aug.txt` = SBD train ∪ val minus VOC train and val
(10,582 training images in all), written by the converter below.
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image

from jaxseg.data import layouts
from jaxseg.data.errors import DataError

CONTEXT_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood")
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor")

_CONTEXT_LAYOUT = ("the VOC2010 folder as mmsegmentation's converter leaves it: JPEGImages/, "
                   "SegmentationClassContext/, ImageSets/SegmentationContext/{train,val}.txt")
_VOC_LAYOUT = ("the VOC2012 folder: JPEGImages/, SegmentationClass/, SegmentationClassAug/, "
               "ImageSets/Segmentation/{train,val,aug}.txt")


def pascal_context(root, split: str, *, background: bool = False, resize=None,
                   cache: bool | None = None) -> layouts.EncodedSource:
  """Pascal Context 59 (`background=False`) or 60 classes, one split."""
  name = "pascal_context60" if background else "pascal_context"
  root = layouts.require_layout(
      root, ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"),
      dataset=name, expected=_CONTEXT_LAYOUT)
  list_file = root / "ImageSets" / "SegmentationContext" / f"{split}.txt"
  pairs = layouts.pair_listed(
      layouts.read_split_list(list_file), layouts.files_in(root / "JPEGImages", ".jpg"),
      layouts.files_in(root / "SegmentationClassContext", ".png"), where=str(list_file))
  if background:
    encoding = layouts.identity_encoding(60, void=(), stored="0 = background, 1..59")
    names = ("background", *CONTEXT_CLASSES)
  else:
    encoding, names = layouts.reduce_zero_encoding(59), CONTEXT_CLASSES
  return layouts.EncodedSource(pairs, encoding=encoding, class_names=names,
                               description=f"{name}/{split}", resize=resize, cache=cache)


def voc_aug(root, split: str, *, resize=None, cache: bool | None = None) -> layouts.EncodedSource:
  """VOC 2012 + SBD, 21 classes (see the module docstring for the splits)."""
  root = layouts.require_layout(root, ("JPEGImages", "SegmentationClass",
                                       "ImageSets/Segmentation"),
                                dataset="voc_aug", expected=_VOC_LAYOUT)
  lists = root / "ImageSets" / "Segmentation"
  images = layouts.files_in(root / "JPEGImages", ".jpg")
  plain = layouts.files_in(root / "SegmentationClass", ".png")
  aug_dir = root / "SegmentationClassAug"
  if split == "train":
    if not (lists / "aug.txt").is_file() or not aug_dir.is_dir():
      raise DataError(f"voc_aug: {lists / 'aug.txt'} or {aug_dir} not found; convert SBD "
                      f"first: python -m jaxseg.data.pascal sbd SBD_ROOT {root}")
    pairs = layouts.pair_listed(layouts.read_split_list(lists / "train.txt"), images, plain,
                                where=str(lists / "train.txt"))
    taken = {p.name for p in pairs}
    aug = [s for s in layouts.read_split_list(lists / "aug.txt") if s not in taken]
    pairs += layouts.pair_listed(aug, images, layouts.files_in(aug_dir, ".png"),
                                 where=str(lists / "aug.txt"))
  else:
    stems = layouts.read_split_list(lists / f"{split}.txt")
    labels = dict(plain)
    if split != "val" and aug_dir.is_dir():
      labels.update(layouts.files_in(aug_dir, ".png"))
    pairs = layouts.pair_listed(stems, images, labels, where=str(lists / f"{split}.txt"))
  encoding = layouts.identity_encoding(21, stored="0..20 + 255 = boundary")
  return layouts.EncodedSource(pairs, encoding=encoding, class_names=VOC_CLASSES,
                               description=f"voc_aug/{split}", resize=resize, cache=cache)


# ----------------------------------------------------------------------------
# SBD (benchmark_RELEASE) -> SegmentationClassAug + aug.txt.
# ----------------------------------------------------------------------------


def _sbd_dataset_dir(sbd_root: pathlib.Path) -> pathlib.Path:
  for candidate in (sbd_root / "dataset", sbd_root):
    if (candidate / "cls").is_dir():
      return candidate
  raise DataError(f"SBD: no cls/ folder in {sbd_root} or {sbd_root / 'dataset'}; expected "
                  "the benchmark_RELEASE folder of the SBD release (dataset/cls/*.mat)")


def read_sbd_mat(path: pathlib.Path) -> np.ndarray:
  """uint8 (H, W) class ids of one SBD `cls/*.mat` (GTcls.Segmentation)."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    segmentation = np.asarray(mat["GTcls"].Segmentation)
  except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
    raise DataError(f"cannot read SBD annotation {path}: {e!r}") from e
  if segmentation.ndim != 2 or segmentation.size == 0 or segmentation.max() > 20:
    raise DataError(f"{path}: GTcls.Segmentation is {segmentation.shape} with values up to "
                    f"{segmentation.max() if segmentation.size else None}; expected (H, W) "
                    "class ids 0..20")
  return segmentation.astype(np.uint8)


def convert_sbd(sbd_root, voc_root) -> tuple[int, int]:
  """Writes VOC2012/SegmentationClassAug/X.png for every SBD `cls/X.mat` and
  `ImageSets/Segmentation/aug.txt` = SBD train ∪ val − VOC train − VOC val.

  Returns (PNGs written, stems in aug.txt). Existing PNGs are overwritten.
  """
  sbd = _sbd_dataset_dir(pathlib.Path(sbd_root))
  voc = layouts.require_layout(voc_root, ("JPEGImages", "ImageSets/Segmentation"),
                               dataset="voc_aug", expected=_VOC_LAYOUT)
  lists = voc / "ImageSets" / "Segmentation"
  out = voc / "SegmentationClassAug"
  out.mkdir(exist_ok=True)
  mats = sorted((sbd / "cls").glob("*.mat"))
  if not mats:
    raise DataError(f"SBD: no .mat files in {sbd / 'cls'}")
  for mat in mats:
    tmp = out / f".{mat.stem}.png.tmp"
    Image.fromarray(read_sbd_mat(mat), mode="L").save(tmp, format="PNG")
    tmp.replace(out / f"{mat.stem}.png")
  sbd_stems = {s for name in ("train", "val") if (sbd / f"{name}.txt").is_file()
               for s in layouts.read_split_list(sbd / f"{name}.txt")}
  voc_stems = {s for name in ("train", "val")
               for s in layouts.read_split_list(lists / f"{name}.txt")}
  aug = sorted(sbd_stems - voc_stems)
  (lists / "aug.txt").write_text("".join(f"{s}\n" for s in aug))
  return len(mats), len(aug)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m jaxseg.data.pascal",
      description="Converts SBD's cls/*.mat into VOC2012/SegmentationClassAug/*.png and "
                  "writes ImageSets/Segmentation/aug.txt (for data.name=voc_aug).")
  sub = parser.add_subparsers(dest="command", required=True)
  sbd = sub.add_parser("sbd", help="convert the SBD release (benchmark_RELEASE)")
  sbd.add_argument("sbd_root", help="benchmark_RELEASE (holding dataset/cls/*.mat)")
  sbd.add_argument("voc_root", help="VOCdevkit/VOC2012")
  args = parser.parse_args(argv)
  try:
    written, listed = convert_sbd(args.sbd_root, args.voc_root)
  except DataError as e:
    raise SystemExit(f"error: {e}") from None
  print(f"wrote {written} PNGs to {pathlib.Path(args.voc_root) / 'SegmentationClassAug'}; "
        f"aug.txt lists {listed} images")


if __name__ == "__main__":
  main()
