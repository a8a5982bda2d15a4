"""Datasets stored as folders of image and label files.

Semantic layout (CamVid as shipped in /work/shared/data/camvid)::

  ROOT/classes.txt             lines "id name", ids 0..C-1 (+ the ignore id)
  ROOT/images/{split}/X.{jpg,jpeg,png}
  ROOT/labels/{split}/X.png    class ids; palette PNGs are read as indices

Instance layout, either CVPPP-style with split lists::

  ROOT/images/X_rgb.png        (or X.{jpg,jpeg,png})
  ROOT/labels/X_label.png      (or X.png) 0 = background, 1..N = instances
  ROOT/splits/{split}.txt      one stem X per line

or, without a `splits` folder, the semantic layout's `images/{split}` and
`labels/{split}` folders holding instance-id PNGs.

Every problem is raised as `DataError` naming the file or folder; nothing is
skipped silently. With `cache=True` every file is decoded (and resized) once at
construction, which also validates the whole split up front; `cache=None`
(the config default) does so when the decoded split fits in
`AUTO_CACHE_BYTES`, estimated from the first image's header.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
import tqdm

from jaxseg.data.errors import DataError
from jaxseg.data.images import (_image_size, decode_image, decode_label, resize_image,
                                resize_nearest)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LABEL_EXTENSION = ".png"
AUTO_CACHE_BYTES = 2 << 30
_MAX_LISTED = 5

Array = np.ndarray
PathLike = str | os.PathLike


# ----------------------------------------------------------------------------
# Small helpers: listing, classes, decoding, resizing.
# ----------------------------------------------------------------------------


def _listing(paths: Sequence[pathlib.Path | str]) -> str:
  """First few names of `paths`, and how many more there are."""
  names = [str(p) for p in paths[:_MAX_LISTED]]
  more = len(paths) - len(names)
  return ", ".join(names) + (f" (and {more} more)" if more else "")


def _require_dir(path: pathlib.Path, what: str) -> pathlib.Path:
  if not path.is_dir():
    raise DataError(f"{what} folder not found: {path}")
  return path


def _require_split_dir(parent: pathlib.Path, split: str,
                       what: str) -> pathlib.Path:
  """`parent/split`, or an error listing the splits that do exist."""
  _require_dir(parent, what)
  path = parent / split
  if not path.is_dir():
    available = sorted(p.name for p in parent.iterdir() if p.is_dir())
    raise DataError(f"{what} folder for split {split!r} not found: {path} "
                    f"(splits present: {available or 'none'})")
  return path


def read_classes(root: PathLike, ignore_index: int = 255) -> list[str]:
  """Class names for ids 0..C-1 from `root/classes.txt`.

  Each non-empty line is "id name" (the name may contain spaces). The line
  whose id equals `ignore_index`, if any, names the void label and is left out.

  Args:
    root: dataset root holding `classes.txt`.
    ignore_index: label value that marks pixels to ignore.

  Returns:
    Names of the classes in id order.

  Raises:
    DataError: missing or malformed file, duplicate or non-contiguous ids.
  """
  path = pathlib.Path(root) / "classes.txt"
  if not path.is_file():
    raise DataError(f"class list not found: {path}")
  names: dict[int, str] = {}
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    head, _, name = line.strip().partition(" ")
    if not head.lstrip("-").isdigit() or not name.strip():
      raise DataError(f"{path}:{number}: expected 'id name', got {line!r}")
    class_id = int(head)
    if class_id in names:
      raise DataError(f"{path}:{number}: class id {class_id} appears twice")
    names[class_id] = name.strip()
  names.pop(ignore_index, None)
  if sorted(names) != list(range(len(names))):
    raise DataError(f"{path}: class ids must be 0..C-1 apart from the ignore "
                    f"id {ignore_index}, got {sorted(names)}")
  if not names:
    raise DataError(f"{path}: no classes listed")
  return [names[i] for i in range(len(names))]


def _check_label_range(path: pathlib.Path, label: Array, num_classes: int,
                       ignore_index: int) -> None:
  values = np.unique(label)
  bad = values[((values < 0) | (values >= num_classes))
               & (values != ignore_index)]
  if bad.size:
    raise DataError(
        f"{path}: label values {bad[:10].tolist()} are outside [0, "
        f"{num_classes}) and are not the ignore value {ignore_index}")


def _size_mismatch(image_path: pathlib.Path, image_size: tuple[int, int],
                   label_path: pathlib.Path,
                   label_size: tuple[int, int]) -> DataError:
  return DataError(
      f"size mismatch: {image_path} is {image_size[1]}x{image_size[0]} but "
      f"{label_path} is {label_size[1]}x{label_size[0]} (width x height)")


def _check_same_size(image_path: pathlib.Path,
                     label_path: pathlib.Path) -> None:
  """Compares sizes from the file headers, without decoding the pixels."""
  image_size, label_size = _image_size(image_path), _image_size(label_path)
  if image_size != label_size:
    raise _size_mismatch(image_path, image_size, label_path, label_size)


# ----------------------------------------------------------------------------
# Pairing image and label files.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FilePair:
  """One example on disk (`instances`: a second label file of instance ids)."""
  name: str
  image: pathlib.Path
  label: pathlib.Path
  instances: pathlib.Path | None = None


def _files_by_stem(folder: pathlib.Path,
                   extensions: Sequence[str]) -> dict[str, pathlib.Path]:
  """Maps stem -> file for the files of `folder` with one of `extensions`."""
  by_stem: dict[str, pathlib.Path] = {}
  for path in sorted(folder.iterdir()):
    if not path.is_file() or path.name.startswith("."):
      continue
    if path.suffix.lower() not in extensions:
      raise DataError(f"unexpected file {path}: expected extensions "
                      f"{', '.join(extensions)}")
    if path.stem in by_stem:
      raise DataError(f"two files with stem {path.stem!r}: {by_stem[path.stem]}"
                      f" and {path}")
    by_stem[path.stem] = path
  return by_stem


def pair_split_folders(image_dir: pathlib.Path,
                       label_dir: pathlib.Path) -> list[FilePair]:
  """Pairs `image_dir/X.{jpg,jpeg,png}` with `label_dir/X.png`, by stem."""
  images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
  labels = _files_by_stem(label_dir, (LABEL_EXTENSION,))
  if not images and not labels:
    raise DataError(f"empty split: no files in {image_dir} or {label_dir}")
  unlabelled = [images[s] for s in sorted(images.keys() - labels.keys())]
  if unlabelled:
    raise DataError(f"{len(unlabelled)} image(s) without a label in "
                    f"{label_dir}: {_listing(unlabelled)}")
  orphans = [labels[s] for s in sorted(labels.keys() - images.keys())]
  if orphans:
    raise DataError(f"{len(orphans)} label(s) without an image in "
                    f"{image_dir}: {_listing(orphans)}")
  return [FilePair(s, images[s], labels[s]) for s in sorted(images)]


def _find_one(folder: pathlib.Path, candidates: Sequence[str],
              what: str) -> pathlib.Path:
  for name in candidates:
    if (folder / name).is_file():
      return folder / name
  raise DataError(f"{what} not found: tried {_listing(candidates)} in {folder}")


def pair_split_list(root: pathlib.Path, split: str) -> list[FilePair]:
  """Pairs files named by `root/splits/{split}.txt` (CVPPP layout)."""
  split_file = root / "splits" / f"{split}.txt"
  if not split_file.is_file():
    available = sorted(p.stem for p in (root / "splits").glob("*.txt"))
    raise DataError(f"split list not found: {split_file} (splits present: "
                    f"{available or 'none'})")
  image_dir = _require_dir(root / "images", "images")
  label_dir = _require_dir(root / "labels", "labels")
  stems = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
  if not stems:
    raise DataError(f"empty split: {split_file} lists no examples")
  pairs = []
  for stem in stems:
    image = _find_one(image_dir, [f"{stem}_rgb{e}" for e in IMAGE_EXTENSIONS] +
                      [f"{stem}{e}" for e in IMAGE_EXTENSIONS],
                      f"image for {stem!r} (listed in {split_file})")
    label = _find_one(label_dir, [f"{stem}_label.png", f"{stem}.png"],
                      f"label for {stem!r} (listed in {split_file})")
    pairs.append(FilePair(stem, image, label))
  return pairs


# ----------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------


def _split_folder_pairs(root: pathlib.Path, split: str) -> list[FilePair]:
  """Pairs of `root/images/{split}/X.*` and `root/labels/{split}/X.png`."""
  return pair_split_folders(
      _require_split_dir(root / "images", split, "images"),
      _require_split_dir(root / "labels", split, "labels"))


class _PairedSource(abc.ABC):
  """Random access to decoded (image, label) pairs, optionally cached."""

  def __init__(self, pairs: list[FilePair], *,
               resize: tuple[int, int] | None, cache: bool | None, description: str,
               check_sizes: bool = True):
    self._pairs = pairs
    self._resize = None if resize is None else (int(resize[0]),
                                                int(resize[1]))
    self._cache: list[dict[str, Array | str]] | None = None
    if cache is None:
      cache = self._decoded_bytes() <= AUTO_CACHE_BYTES
    if cache:
      self._cache = _decode_all(self._decode, len(pairs), description)
      for item in self._cache:  # Items are shared between reads: freeze them.
        for value in item.values():
          if isinstance(value, np.ndarray):
            value.setflags(write=False)
    elif check_sizes:
      for pair in pairs:
        _check_same_size(pair.image, pair.label)

  def _decoded_bytes(self) -> int:
    """Memory the decoded split would take, from the first image's size."""
    if not self._pairs:
      return 0
    h, w = self._resize or _image_size(self._pairs[0].image)
    per_pixel = 4 + (4 if self._pairs[0].instances is not None else 0)
    return len(self._pairs) * h * w * per_pixel

  @property
  def names(self) -> list[str]:
    return [pair.name for pair in self._pairs]

  @property
  def pairs(self) -> list[FilePair]:
    return list(self._pairs)

  def __len__(self) -> int:
    return len(self._pairs)

  def __getitem__(self, index: int) -> dict[str, Array | str]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} examples")
    if self._cache is not None:
      return dict(self._cache[index])
    return self._decode(index)

  def _decode(self, index: int) -> dict[str, Array | str]:
    pair = self._pairs[index]
    image, label = decode_image(pair.image), decode_label(pair.label)
    if image.shape[:2] != label.shape:
      raise _size_mismatch(pair.image, image.shape[:2], pair.label, label.shape)
    fields = self._label_fields(pair, label)
    if self._resize is not None:
      image = resize_image(image, self._resize)
      fields = {k: resize_nearest(v, self._resize) for k, v in fields.items()}
    return {"name": pair.name, "image": image, **fields}

  @abc.abstractmethod
  def _label_fields(self, pair: FilePair, label: Array) -> dict[str, Array]:
    """Validates a decoded label file and returns the item's label arrays."""


def _decode_all(decode: Callable[[int], dict], count: int,
                description: str) -> list[dict]:
  """Decodes every example on a few threads (PIL releases the GIL)."""
  workers = min(8, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(tqdm.tqdm(pool.map(decode, range(count)), total=count,
                          desc=description, unit="img", leave=False))


def _class_names(root: pathlib.Path, ignore_index: int,
                 num_classes: int | None) -> list[str]:
  """Names from classes.txt, or generic ones when only C is given."""
  if (root / "classes.txt").is_file() or num_classes is None:
    names = read_classes(root, ignore_index)
  else:
    names = []
  if num_classes is None:
    return names
  return (names + [f"class_{i}" for i in range(len(names), num_classes)]
         )[:num_classes]


class FolderSource(_PairedSource):
  """Semantic segmentation folder dataset (see the module docstring).

  Items: {"image": uint8 (H, W, 3), "label": uint8 (int32 for 16-bit label
  files) (H, W), "name": file stem}.
  """

  def __init__(self, root: PathLike, split: str, *, ignore_index: int = 255,
               num_classes: int | None = None,
               resize: tuple[int, int] | None = None, cache: bool | None = True):
    """Lists (and with `cache`, decodes and validates) one split.

    Args:
      root: dataset root.
      split: sub-folder of `images/` and `labels/`, e.g. "train".
      ignore_index: label value for pixels without a class.
      num_classes: number of classes C; defaults to the ids in classes.txt.
      resize: optional (H, W) applied once at load (image bilinear, label
        nearest).
      cache: decode everything into memory now; False: decode on access;
        None: the former when the split fits in `AUTO_CACHE_BYTES`.
    """
    root = pathlib.Path(root)
    _require_dir(root, "dataset root")
    self.class_names = _class_names(root, ignore_index, num_classes)
    self.num_classes = len(self.class_names)
    self.ignore_index = ignore_index
    pairs = _split_folder_pairs(root, split)
    super().__init__(pairs, resize=resize, cache=cache,
                     description=f"{root.name}/{split}")

  def _label_fields(self, pair: FilePair, label: Array) -> dict[str, Array]:
    _check_label_range(pair.label, label, self.num_classes, self.ignore_index)
    return {"label": label}


class InstanceFolderSource(_PairedSource):
  """Instance segmentation folder dataset (see the module docstring).

  Items: {"image": uint8 (H, W, 3), "instances": int32 (H, W) with 0 =
  background, "label": uint8 (H, W) foreground mask (instances > 0), "name"}.
  """

  class_names = ["background", "foreground"]
  num_classes = 2
  ignore_index = 255

  def __init__(self, root: PathLike, split: str, *,
               resize: tuple[int, int] | None = None, cache: bool | None = True):
    """Lists (and with `cache`, decodes and validates) one split.

    Args:
      root: dataset root; uses `splits/{split}.txt` when `splits/` exists,
        otherwise `images/{split}` and `labels/{split}`.
      split: split name, e.g. "train".
      resize: optional (H, W) applied once at load (image bilinear, instances
        nearest).
      cache: decode everything into memory now; False: decode on access;
        None: the former when the split fits in `AUTO_CACHE_BYTES`.
    """
    root = pathlib.Path(root)
    _require_dir(root, "dataset root")
    if (root / "splits").is_dir():
      pairs = pair_split_list(root, split)
    else:
      pairs = _split_folder_pairs(root, split)
    super().__init__(pairs, resize=resize, cache=cache,
                     description=f"{root.name}/{split}")

  def _label_fields(self, pair: FilePair, label: Array) -> dict[str, Array]:
    instances = label.astype(np.int32)
    if instances.min() < 0:
      raise DataError(f"{pair.label}: negative instance ids")
    return {"instances": instances, "label": (instances > 0).astype(np.uint8)}
