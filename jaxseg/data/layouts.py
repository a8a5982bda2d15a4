"""What the papers' datasets share: label encodings, root checks, split lists
and the lazy source every one of them is read through.

A dataset in its own layout is a list of `folder.FilePair`s (image, label and,
for Cityscapes, an instance-id file) plus an `Encoding` from the values stored
in its label files to jaxseg's train ids (0..C-1, `IGNORE` for pixels without
a class). Listing a split only reads folder listings and split files, never
the images (20k ADE20K images index in about a second); every file is decoded
on access, in the input pipeline's workers, and a bad file raises `DataError`
naming it there.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from jaxseg.data import folder
from jaxseg.data.errors import DataError
from jaxseg.data.images import decode_label

IGNORE = 255
Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Encoding:
  """Stored label value v -> train id `lut[v]`; values outside `valid` are errors.

  `stored` names the encoding in error messages (e.g. "labelIds 0..33").
  """
  stored: str
  lut: Array  # (V,) uint8 train ids, IGNORE for void
  valid: Array  # (V,) bool

  def decode(self, path: pathlib.Path, stored: Array) -> Array:
    """uint8 (H, W) train ids of a decoded label file."""
    stored = np.asarray(stored)
    values = np.unique(stored)
    bad = values[(values < 0) | (values >= len(self.lut))]
    if not bad.size:
      bad = values[~self.valid[values]]
    if bad.size:
      raise DataError(f"{path}: label values {bad[:10].tolist()} are not in this "
                      f"dataset's encoding ({self.stored})")
    return self.lut[stored]


def identity_encoding(num_classes: int, *, void: Iterable[int] = (IGNORE,),
                      stored: str = "") -> Encoding:
  """Values 0..C-1 are the classes, `void` values are ignored: v -> v."""
  lut = np.full(256, IGNORE, np.uint8)
  lut[:num_classes] = np.arange(num_classes)
  valid = np.zeros(256, bool)
  valid[:num_classes] = True
  valid[list(void)] = True
  return Encoding(stored or f"0..{num_classes - 1} + void {sorted(void)}", lut, valid)


def reduce_zero_encoding(num_classes: int) -> Encoding:
  """0 is void, 1..C are the classes: 0 -> IGNORE, k -> k - 1
  (mmsegmentation's `reduce_zero_label`)."""
  lut = np.full(256, IGNORE, np.uint8)
  lut[1:num_classes + 1] = np.arange(num_classes)
  valid = np.zeros(256, bool)
  valid[:num_classes + 1] = True
  return Encoding(f"0 = void, 1..{num_classes} = classes", lut, valid)


def table_encoding(train_ids: Sequence[int], *, stored: str) -> Encoding:
  """Value v -> `train_ids[v]` (IGNORE entries are void); v >= len is an error."""
  lut = np.full(256, IGNORE, np.uint8)
  lut[:len(train_ids)] = train_ids
  valid = np.zeros(256, bool)
  valid[:len(train_ids)] = True
  return Encoding(stored, lut, valid)


# ----------------------------------------------------------------------------
# Roots, folders and split lists.
# ----------------------------------------------------------------------------


def _has(path: pathlib.Path, required: Sequence[str]) -> bool:
  return all((path / r).exists() for r in required)


def require_layout(root, required: Sequence[str], *, dataset: str,
                   expected: str) -> pathlib.Path:
  """`root` when it holds every `required` entry; otherwise a `DataError` that
  names a folder up to two levels below (or above) that does, e.g. "found
  VOCdevkit/VOC2010 ...: did you mean --config.data.root=.../VOC2010?"."""
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    raise DataError(f"{dataset}: config.data.root={root} is not a folder; "
                    f"expected {expected}")
  if _has(root, required):
    return root
  below = [p for pattern in ("*", "*/*") for p in sorted(root.glob(pattern))
           if p.is_dir() and _has(p, required)]
  above = [p for p in list(root.parents)[:2] if _has(p, required)]
  for candidate in below + above:
    raise DataError(
        f"{dataset}: {root} is not the dataset folder, but {candidate} holds "
        f"{', '.join(required)}: did you mean --config.data.root={candidate}?")
  missing = [r for r in required if not (root / r).exists()]
  present = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
  raise DataError(f"{dataset}: {root} lacks {', '.join(missing)}; expected "
                  f"{expected} (it holds: {folder._listing(present) or 'nothing'})")  # pylint: disable=protected-access


def read_split_list(path: pathlib.Path) -> list[str]:
  """Stems listed one per line in `path` (blank lines skipped)."""
  if not path.is_file():
    others = sorted(p.name for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
    raise DataError(f"split list not found: {path} (lists there: {others or 'none'})")
  stems = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
  if not stems:
    raise DataError(f"empty split: {path} lists no examples")
  return stems


def split_dir(parent: pathlib.Path, split: str, names: dict[str, str]) -> pathlib.Path:
  """`parent/names.get(split, split)`, or an error listing the splits there."""
  path = parent / names.get(split, split)
  if not path.is_dir():
    present = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    raise DataError(f"folder for split {split!r} not found: {path} (splits there: "
                    f"{present or 'none'}; jaxseg's names map {names})")
  return path


def files_in(folder_path: pathlib.Path, suffix: str) -> dict[str, pathlib.Path]:
  """stem -> path of the files of `folder_path` whose name ends in `suffix`
  (the suffix is cut from the stem); one `os.scandir`, no per-file stat."""
  if not folder_path.is_dir():
    raise DataError(f"folder not found: {folder_path}")
  with os.scandir(folder_path) as entries:
    return {e.name[:-len(suffix)]: folder_path / e.name for e in entries
            if e.name.endswith(suffix) and not e.name.startswith(".")}


def pair_listed(stems: Sequence[str], images: dict[str, pathlib.Path],
                labels: dict[str, pathlib.Path], *, where: str) -> list[folder.FilePair]:
  """Pairs for `stems`, failing on the first stem without an image or label."""
  for what, files in (("image", images), ("label", labels)):
    missing = [s for s in stems if s not in files]
    if missing:
      raise DataError(f"{len(missing)} example(s) listed in {where} have no {what} file: "
                      f"{folder._listing(missing)}")  # pylint: disable=protected-access
  return [folder.FilePair(s, images[s], labels[s]) for s in stems]


class EncodedSource(folder._PairedSource):  # pylint: disable=protected-access
  """A dataset in its own layout: `pairs` decoded through `encoding`.

  Items: {"image": uint8 (H, W, 3), "label": uint8 (H, W) train ids, "name",
  and "instances": int32 (H, W) (ids > 0 per object, 0 elsewhere) where the
  pairs name instance files}. `cache=None` decodes the split up front only
  when it fits in `folder.AUTO_CACHE_BYTES`.
  """

  def __init__(self, pairs: list[folder.FilePair], *, encoding: Encoding,
               class_names: Sequence[str], description: str,
               resize: tuple[int, int] | None = None, cache: bool | None = None):
    self.class_names = list(class_names)
    self.num_classes = len(self.class_names)
    self.ignore_index = IGNORE
    self.encoding = encoding
    super().__init__(pairs, resize=resize, cache=cache, description=description,
                     check_sizes=False)

  def _label_fields(self, pair: folder.FilePair, label: Array) -> dict[str, Array]:
    fields = {"label": self.encoding.decode(pair.label, label)}
    if pair.instances is not None:
      fields["instances"] = self._instances(pair, label.shape)
    return fields

  def _instances(self, pair: folder.FilePair, shape) -> Array:
    ids = decode_label(pair.instances).astype(np.int32)
    if ids.shape != tuple(shape):
      raise DataError(f"size mismatch: {pair.instances} is {ids.shape[1]}x{ids.shape[0]} "
                      f"but {pair.label} is {shape[1]}x{shape[0]} (width x height)")
    return ids
