"""KITTI car instances in the layout the ACIS authors' code reads.

Their loader (visinf/acis `code/datasets/kitti-gen.lua`, `kitti.lua`) finds,
under ROOT/{split}/ and up to three folders deep::

  ROOT/{split}/**/X_rgb.png      the image
  ROOT/{split}/**/X_labels.png   8-bit instance ids, 0 = background, 1..N cars

(the archive the authors link in visinf/acis#1: Ren & Zemel's split of the
KITTI car annotations, 3,712 train / 144 val / 120 test images of ~370 × 1224).
Items are those of `folder.InstanceFolderSource`; the name is X's path under
the split folder. Their folder `AnnotMasksAll/` of replacement masks is not
read.
"""
from __future__ import annotations

import pathlib

from jaxseg.data import folder
from jaxseg.data.errors import DataError

_MAX_DEPTH = 3
IMAGE_SUFFIX, LABEL_SUFFIX = "_rgb", "_labels"


def pair_kitti_split(root: pathlib.Path, split: str) -> list[folder.FilePair]:
  """(image, label) pairs of ROOT/split/**/X_rgb.{png,jpg,jpeg} and X_labels.png."""
  base = root / split
  if not base.is_dir():
    present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    raise DataError(f"KITTI split folder not found: {base} (folders in {root}: "
                    f"{present or 'none'}); expected ROOT/{split}/**/X_rgb.png")
  pairs = []
  for image in sorted(base.rglob(f"*{IMAGE_SUFFIX}.*")):
    depth = len(image.relative_to(base).parts)
    if depth > _MAX_DEPTH + 1 or image.suffix.lower() not in folder.IMAGE_EXTENSIONS:
      continue
    stem = image.name[:-len(IMAGE_SUFFIX + image.suffix)]
    label = image.with_name(stem + LABEL_SUFFIX + folder.LABEL_EXTENSION)
    if not label.is_file():
      raise DataError(f"KITTI image {image} has no label {label.name} beside it")
    name = str(image.relative_to(base).with_name(stem))
    pairs.append(folder.FilePair(name, image, label))
  if not pairs:
    raise DataError(f"no KITTI images (*{IMAGE_SUFFIX}.png) under {base}")
  return pairs


class KittiInstanceSource(folder.InstanceFolderSource):
  """`InstanceFolderSource` over `pair_kitti_split`'s pairs."""

  def __init__(self, root, split: str, *, resize=None, cache: bool = True):
    root = pathlib.Path(root)
    folder._PairedSource.__init__(  # pylint: disable=protected-access
        self, pair_kitti_split(root, split), resize=resize, cache=cache,
        description=f"kitti/{split}")
