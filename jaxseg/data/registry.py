"""The dataset registry: `get_source(config.data, split)` -> (source, info).

`data.name` picks the builder; every builder reads `data.root` (but the
embedded dataset) and returns a random-access source of
{"image", "label", "name"[, "instances"]} items with its `DatasetInfo`.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Protocol

from jaxseg.data import ade20k, cityscapes, embedded, pascal
from jaxseg.data.errors import DataError
from jaxseg.data.folder import FolderSource, InstanceFolderSource
from jaxseg.data.kitti import KittiInstanceSource


class Source(Protocol):
  """Random-access dataset: `len(source)` and `source[i]` -> dict of arrays."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict[str, Any]:
    ...


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What models and evaluators need to know about a dataset."""
  num_classes: int
  class_names: tuple[str, ...]
  ignore_index: int
  name: str
  has_instances: bool = False
  class_weights: tuple[float, ...] | None = None  # set by the trainer from the config


def _field(config: Any, key: str, default: Any = None) -> Any:
  """`config.key` for ConfigDicts, dataclasses and plain mappings alike."""
  if isinstance(config, Mapping):
    return config.get(key, default)
  return getattr(config, key, default)


def _optional_size(value: Any) -> tuple[int, int] | None:
  return None if value is None else (int(value[0]), int(value[1]))


def _embedded_source(config: Any, split: str) -> tuple[Source, DatasetInfo]:
  image_size = _optional_size(_field(config, "image_size")) or \
      embedded.DEFAULT_IMAGE_SIZE
  source = embedded.load_embedded(
      split, data_dir=_field(config, "data_dir"), image_size=image_size,
      num_train=_field(config, "num_train", embedded.DEFAULT_NUM_TRAIN),
      num_val=_field(config, "num_val", embedded.DEFAULT_NUM_VAL))
  info = DatasetInfo(num_classes=embedded.NUM_CLASSES,
                     class_names=embedded.CLASS_NAMES,
                     ignore_index=_field(config, "ignore_index", 255),
                     name="jaxseg_shapes", has_instances=True)
  return source, info


# What `data.root` names for each dataset in its own layout.
ROOTS = {
    "pascal_context": "VOCdevkit/VOC2010, as mmsegmentation's Pascal Context converter "
                      "leaves it (jaxseg/data/pascal.py)",
    "voc_aug": "VOCdevkit/VOC2012 with SegmentationClassAug (jaxseg/data/pascal.py)",
    "cityscapes": "the folder holding leftImg8bit/ and gtFine/ (jaxseg/data/cityscapes.py)",
    "mapillary": "the folder holding training/ and validation/ (jaxseg/data/cityscapes.py)",
    "ade20k": "ADEChallengeData2016 (jaxseg/data/ade20k.py)",
}
ROOTS["pascal_context60"] = ROOTS["pascal_context"]


def _require_root(config: Any) -> str:
  root = _field(config, "root")
  name = _field(config, "name")
  if not root:
    where = f" ({ROOTS[name]})" if name in ROOTS else ""
    raise DataError(f"config.data.root is empty: the {name!r} dataset needs "
                    f"--config.data.root=PATH{where}")
  return root


def _folder_source(config: Any, split: str) -> tuple[Source, DatasetInfo]:
  root = _require_root(config)
  ignore_index = _field(config, "ignore_index", 255)
  source = FolderSource(root, split, ignore_index=ignore_index,
                        num_classes=_field(config, "num_classes"),
                        resize=_optional_size(_field(config, "resize")),
                        cache=_field(config, "cache"))
  info = DatasetInfo(num_classes=source.num_classes,
                     class_names=tuple(source.class_names),
                     ignore_index=ignore_index, name=_dataset_name(root))
  return source, info


def _instance_folder_source(config: Any, split: str, *,
                            kind=InstanceFolderSource) -> tuple[Source, DatasetInfo]:
  root = _require_root(config)
  source = kind(root, split, resize=_optional_size(_field(config, "resize")),
                cache=_field(config, "cache"))
  info = DatasetInfo(num_classes=source.num_classes,
                     class_names=tuple(source.class_names),
                     ignore_index=_field(config, "ignore_index", 255),
                     name=_dataset_name(root), has_instances=True)
  return source, info


def _layout_source(config: Any, split: str, *, build) -> tuple[Source, DatasetInfo]:
  """A paper dataset in its own layout; its loader writes 255 for void."""
  name = _field(config, "name")
  ignore_index = _field(config, "ignore_index", 255)
  if ignore_index != 255:
    raise DataError(f"config.data.ignore_index={ignore_index}: the {name!r} loader marks "
                    "void pixels 255; set --config.data.ignore_index=255")
  source = build(_require_root(config), split,
                 resize=_optional_size(_field(config, "resize")),
                 cache=_field(config, "cache"))
  info = DatasetInfo(num_classes=source.num_classes, class_names=tuple(source.class_names),
                     ignore_index=255, name=name,
                     has_instances=any(p.instances is not None for p in source.pairs))
  return source, info


def _dataset_name(root: str) -> str:
  return str(root).rstrip("/").rsplit("/", 1)[-1]


_BUILDERS = {
    "embedded": _embedded_source,
    "folder": _folder_source,
    "instance_folder": _instance_folder_source,
    "kitti_instance": functools.partial(_instance_folder_source, kind=KittiInstanceSource),
    "pascal_context": functools.partial(_layout_source, build=pascal.pascal_context),
    "pascal_context60": functools.partial(
        _layout_source, build=functools.partial(pascal.pascal_context, background=True)),
    "voc_aug": functools.partial(_layout_source, build=pascal.voc_aug),
    "cityscapes": functools.partial(_layout_source, build=cityscapes.cityscapes),
    "mapillary": functools.partial(_layout_source, build=cityscapes.mapillary),
    "ade20k": functools.partial(_layout_source, build=ade20k.ade20k),
}
DATASET_NAMES = tuple(_BUILDERS)


def get_source(data_config: Any, split: str) -> tuple[Source, DatasetInfo]:
  """Builds the source for `split` named by `data_config.name`.

  Args:
    data_config: ConfigDict, dataclass or mapping with `name` in
      DATASET_NAMES and that dataset's fields (`root`, `ignore_index`,
      `resize`, `cache`, `data_dir`, `image_size`, ...).
    split: e.g. "train" or "val" (each layout maps them to its own names).

  Returns:
    (source, info).
  """
  name = _field(data_config, "name")
  if name not in _BUILDERS:
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
  return _BUILDERS[name](data_config, split)
