"""grain input pipelines and host-to-device transfer (the datasets they read
come from `registry.get_source`).

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

from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags
import grain
import jax
import numpy as np

from jaxseg.data.augment import TrainAugmentation
from jaxseg.data.errors import DataError
from jaxseg.data.registry import Source, _field


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
