"""grain input pipelines, the dataset registry and host-to-device transfer.

Training order. `MapDataset.shuffle(seed).repeat()` reshuffles every epoch:
grain's shuffle seeds epoch e (indices [e N, (e+1) N)) with `seed + e`. The
augmentation is a `random_map` placed after the repeat and before sharding,
so its generator is seeded by (seed, global position in the stream): the
same example gets a fresh augmentation every epoch, and the batches a process
sees do not depend on how many worker threads or processes produce them.

Sharding. Global batch k is positions [kB, (k+1)B) of that single global
stream; process p of P takes its p-th block of b = B/P consecutive positions
(the stream cut into blocks of b, every P-th from the p-th), so the global
array assembled from the processes' batches is exactly the one-process batch,
row for row, and the union over processes is exactly the
single-process stream. Everything up to the batch is a `MapDataset`, so
batch k of process p is a pure function of (seed, k, p, P): a run resumed at
step s starts the stream at `start_batch=s` and sees bit-for-bit the batches
an uninterrupted run sees, with any number of processes (no iterator state is
saved; this is why the split is the stream's own and not grain's
`ShardByJaxProcess` over the source, which would tie a checkpoint's data
position to the process count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from absl import flags
import grain
import jax
import numpy as np

from jaxseg.data import embedded
from jaxseg.data.augment import TrainAugmentation
from jaxseg.data.errors import DataError
from jaxseg.data.folder import FolderSource, InstanceFolderSource
from jaxseg.data.kitti import KittiInstanceSource

DATASET_NAMES = ("embedded", "folder", "instance_folder", "kitti_instance")


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


# ----------------------------------------------------------------------------
# Training and evaluation pipelines.
# ----------------------------------------------------------------------------


def make_train_dataset(source: Source, *, crop_size: Sequence[int],
                       global_batch_size: int, seed: int,
                       ignore_index: int = 255,
                       scale_range: Sequence[float] = (0.5, 2.0),
                       flip: bool = True, photometric: bool = True,
                       rotate: bool = False, process_index: int = 0, process_count: int = 1,
                       worker_count: int = 0, num_threads: int = 2,
                       prefetch_buffer_size: int = 4,
                       start_batch: int = 0) -> grain.IterDataset:
  """Infinite stream of augmented, batched training examples for this process.

  Args:
    source: random-access source with "image" and "label" (and optionally
      "instances") per item.
    crop_size: (H, W) of every training example.
    global_batch_size: batch summed over processes; must divide evenly.
    seed: shuffle and augmentation seed, in [0, 2**32).
    ignore_index: label value written into padding.
    scale_range: (min, max) random rescale factor.
    flip: random horizontal flips.
    photometric: random brightness/contrast/saturation/hue.
    rotate: random 90° rotations too (square crops; with `flip`, all 8
      symmetries of the square).
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()).
    worker_count: grain worker processes (0: threads of this process only).
    num_threads: threads producing batches in each process.
    prefetch_buffer_size: batches read ahead in each process.
    start_batch: the first batch (a resumed run's step).

  Returns:
    An IterDataset of {"image": uint8 (B, H, W, 3), "label": int32 (B, H, W)
    [, "instances": int32 (B, H, W)]} with B = global_batch_size //
    process_count.
  """
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible "
                     f"by process_count {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, "
                     f"{process_count})")
  if len(source) == 0:  # pylint: disable=g-explicit-length-test
    raise DataError("cannot train on an empty dataset")
  augment = TrainAugmentation(
      crop_size=tuple(crop_size), ignore_index=ignore_index,
      scale_range=tuple(scale_range), flip=flip, photometric=photometric,
      rotate=rotate)
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
  ds = ds.random_map(augment, seed=seed)
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  ds = ds[process_index::process_count][start_batch:]
  return _to_iter(ds, num_threads, prefetch_buffer_size, worker_count)


def _eval_example(example: Mapping[str, Any]) -> dict[str, Any]:
  """Keeps an example's size; ids become int32 for the evaluators."""
  out = dict(example)
  for key in ("label", "instances"):
    if key in out:
      out[key] = np.asarray(out[key], np.int32)
  return out


def make_eval_dataset(source: Source, *, batch_size: int = 1,
                      process_index: int = 0, process_count: int = 1,
                      num_threads: int = 2,
                      prefetch_buffer_size: int = 4) -> grain.IterDataset:
  """One pass over `source` in order, unaugmented and at original size.

  With process_count > 1, process p reads items p, p + P, ...; processes may
  then get different numbers of batches, so callers that run collectives per
  batch must pad. Batches larger than 1 need equally sized images.

  Returns:
    An IterDataset of {"image": uint8 (B, H, W, 3), "label": int32 (B, H, W),
    plus "instances" and "name" where the source has them}; the last batch
    may be smaller.
  """
  ds = grain.MapDataset.source(source)[process_index::process_count]
  ds = ds.map(_eval_example).batch(batch_size, drop_remainder=False)
  return _to_iter(ds, num_threads, prefetch_buffer_size, worker_count=0)


def _to_iter(ds: grain.MapDataset, num_threads: int, prefetch_buffer_size: int,
             worker_count: int) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():
      # grain (google/grain#1355) reads an absl flag when starting workers and
      # fails in scripts that do not go through absl.app; defaults are fine.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


# ----------------------------------------------------------------------------
# Registry: data config -> (source, DatasetInfo).
# ----------------------------------------------------------------------------


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


def _require_root(config: Any) -> str:
  root = _field(config, "root")
  if not root:
    raise DataError(f"config.data.root is empty: the {_field(config, 'name')!r} "
                    "dataset needs --config.data.root=PATH")
  return root


def _folder_source(config: Any, split: str) -> tuple[Source, DatasetInfo]:
  root = _require_root(config)
  ignore_index = _field(config, "ignore_index", 255)
  source = FolderSource(root, split, ignore_index=ignore_index,
                        num_classes=_field(config, "num_classes"),
                        resize=_optional_size(_field(config, "resize")),
                        cache=_field(config, "cache", True))
  info = DatasetInfo(num_classes=source.num_classes,
                     class_names=tuple(source.class_names),
                     ignore_index=ignore_index, name=_dataset_name(root))
  return source, info


def _instance_folder_source(config: Any, split: str, *,
                            kind=InstanceFolderSource) -> tuple[Source, DatasetInfo]:
  root = _require_root(config)
  source = kind(
      root, split, resize=_optional_size(_field(config, "resize")),
      cache=_field(config, "cache", True))
  info = DatasetInfo(num_classes=source.num_classes,
                     class_names=tuple(source.class_names),
                     ignore_index=_field(config, "ignore_index", 255),
                     name=_dataset_name(root), has_instances=True)
  return source, info


def _dataset_name(root: str) -> str:
  return str(root).rstrip("/").rsplit("/", 1)[-1]


_BUILDERS = {
    "embedded": _embedded_source,
    "folder": _folder_source,
    "instance_folder": _instance_folder_source,
    "kitti_instance": lambda config, split: _instance_folder_source(
        config, split, kind=KittiInstanceSource),
}

# Datasets the paper-scale configs name, with no loader of their own yet: what
# they are, so a run fails saying what to provide instead of a bare KeyError.
PLANNED_DATASETS = {
    "ade20k": "ADE20K SceneParsing (20,210 train / 2,000 val images; 150 classes, ids "
              "0-149, 255 = ignore, i.e. mmsegmentation's reduce_zero_label)",
    "cityscapes": "Cityscapes fine (2,975 train / 500 val images; 19 classes as trainIds "
                  "0-18, 255 = ignore)",
    "pascal_context60": "Pascal Context 60 (4,998 train / 5,105 val images; 60 classes "
                        "incl. background = 0, 255 = ignore)",
    "pascal_context": "Pascal Context 59 (4,998 train / 5,105 val images; 59 classes, "
                      "ids 0-58, 255 = ignore, as mmsegmentation's converter writes them)",
}


def _planned_error(name: str) -> DataError:
  if name.endswith("_instance"):
    layout = ("an instance folder dataset -- ROOT/images/{train,val}/NAME.png, "
              "ROOT/labels/{train,val}/NAME.png (instance ids per pixel, 0 = background) "
              "-- and add --config.data.name=instance_folder --config.data.root=ROOT.")
  else:
    layout = ("a folder dataset -- ROOT/images/{train,val}/NAME.jpg, "
              "ROOT/labels/{train,val}/NAME.png (class ids per pixel), ROOT/classes.txt "
              "(one 'ID NAME' per line) -- and add --config.data.name=folder "
              "--config.data.root=ROOT [--config.data.ignore_index=255].")
  return DataError(
      f"dataset {name!r} has no loader in jaxseg yet. The config expects "
      f"{PLANNED_DATASETS[name]}. To train on your copy now, lay it out as {layout}")


def get_source(data_config: Any, split: str) -> tuple[Source, DatasetInfo]:
  """Builds the source for `split` named by `data_config.name`.

  Args:
    data_config: ConfigDict, dataclass or mapping with `name` in
      DATASET_NAMES and that dataset's fields (`root`, `ignore_index`,
      `resize`, `cache`, `data_dir`, `image_size`, ...).
    split: e.g. "train" or "val".

  Returns:
    (source, info).
  """
  name = _field(data_config, "name")
  if name in PLANNED_DATASETS:
    raise _planned_error(name)
  if name not in _BUILDERS:
    raise DataError(f"unknown dataset {name!r}; choose one of "
                    f"{', '.join(DATASET_NAMES)}")
  return _BUILDERS[name](data_config, split)


def train_dataset_from_config(data_config: Any, source: Source, *,
                              global_batch_size: int, seed: int,
                              process_index: int = 0, process_count: int = 1,
                              worker_count: int = 0, start_batch: int = 0
                              ) -> grain.IterDataset:
  """`make_train_dataset` with the augmentation fields of `data_config`."""
  crop_size = _field(data_config, "crop_size")
  if crop_size is None:
    raise DataError("data config needs 'crop_size' (H, W) for training")
  return make_train_dataset(
      source, crop_size=crop_size,
      global_batch_size=global_batch_size, seed=seed,
      ignore_index=_field(data_config, "ignore_index", 255),
      scale_range=_field(data_config, "scale_range", (0.5, 2.0)),
      flip=_field(data_config, "flip", True),
      photometric=_field(data_config, "photometric", True),
      rotate=_field(data_config, "rotate", False),
      process_index=process_index, process_count=process_count,
      worker_count=worker_count, start_batch=start_batch)


# ----------------------------------------------------------------------------
# Host batch -> global jax.Array.
# ----------------------------------------------------------------------------


def to_global_array(batch: Any, sharding: jax.sharding.Sharding) -> Any:
  """Assembles every process's local batch into global arrays on `sharding`.

  Each process passes its own slice (leading axis = local batch); the global
  batch axis is the concatenation over processes. String leaves (e.g. "name")
  stay on the host as numpy arrays.
  """

  def put(x):
    x = np.asarray(x)
    if x.dtype.kind in "USO":
      return x
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)
