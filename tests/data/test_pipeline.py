"""grain pipelines, the dataset registry and to_global_array."""

import jax
import numpy as np
import pytest

from jaxseg.data import DataError
from jaxseg.data import embedded
from jaxseg.data import get_source
from jaxseg.data import make_eval_dataset
from jaxseg.data import make_train_dataset
from jaxseg.data import to_global_array
from jaxseg.data import train_dataset_from_config

SIZE = (12, 16)


class IndexSource:
  """Example i has label value i everywhere, so batches reveal their order."""

  def __init__(self, count: int, sizes=None):
    self._count = count
    self._sizes = sizes or [SIZE] * count

  def __len__(self):
    return self._count

  def __getitem__(self, index):
    size = self._sizes[index]
    rng = np.random.default_rng(index)
    return {"image": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
            "label": np.full(size, index, np.uint8), "name": f"ex{index}"}


def _order_train(source, **kwargs):
  """Unaugmented geometry so that label[0, 0] is the example index."""
  defaults = dict(crop_size=SIZE, global_batch_size=2, seed=0,
                  scale_range=(1.0, 1.0), photometric=False)
  return make_train_dataset(source, **{**defaults, **kwargs})


def _indices(batches):
  return [int(i) for b in batches for i in b["label"][:, 0, 0]]


def _take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def test_train_batches_shapes_and_dtypes():
  ds = make_train_dataset(IndexSource(6), crop_size=(8, 10),
                          global_batch_size=4, seed=1)
  batch = _take(ds, 1)[0]
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (4, 8, 10, 3)
  assert batch["image"].dtype == np.uint8
  assert batch["label"].shape == (4, 8, 10)
  assert batch["label"].dtype == np.int32


def test_train_reshuffles_every_epoch():
  batches = _take(_order_train(IndexSource(6)), 9)  # Three epochs of six.
  order = _indices(batches)
  epochs = [order[0:6], order[6:12], order[12:18]]
  for epoch in epochs:
    assert sorted(epoch) == list(range(6))
  assert len({tuple(e) for e in epochs}) > 1


def test_train_augmentation_differs_between_epochs():
  ds = make_train_dataset(IndexSource(2), crop_size=(8, 8),
                          global_batch_size=2, seed=0)
  first, second = _take(ds, 2)
  assert not np.array_equal(first["image"], second["image"])


def test_start_batch_resumes_the_same_stream_with_any_process_count():
  """A run resumed at step s starts at batch s: the same batches (images and
  augmentation) an uninterrupted run sees, also with another process count."""
  kw = dict(crop_size=(8, 8), global_batch_size=4, seed=5)
  straight = _take(make_train_dataset(IndexSource(7), **kw), 6)
  resumed = _take(make_train_dataset(IndexSource(7), start_batch=4, **kw), 2)
  halves = [_take(make_train_dataset(IndexSource(7), start_batch=4, process_index=p,
                                     process_count=2, **kw), 2) for p in range(2)]
  for k in range(2):
    for key in straight[4 + k]:
      np.testing.assert_array_equal(straight[4 + k][key], resumed[k][key])
      np.testing.assert_array_equal(
          straight[4 + k][key], np.concatenate([halves[0][k][key], halves[1][k][key]]))


def test_process_sharding_is_disjoint_and_complete():
  source = IndexSource(8)
  shards = [_indices(_take(_order_train(source, global_batch_size=4,
                                        process_index=p, process_count=2), 2))
            for p in range(2)]
  assert not set(shards[0]) & set(shards[1])
  assert sorted(shards[0] + shards[1]) == list(range(8))
  # Each global batch is process 0's block then process 1's: concatenating
  # the processes' batches gives the single-process batches row for row.
  single = _indices(_take(_order_train(source, global_batch_size=4), 2))
  assert shards[0][:2] + shards[1][:2] + shards[0][2:] + shards[1][2:] == single


def test_same_seed_same_stream_different_seed_different():
  a = _indices(_take(_order_train(IndexSource(10), seed=1), 5))
  b = _indices(_take(_order_train(IndexSource(10), seed=1), 5))
  c = _indices(_take(_order_train(IndexSource(10), seed=2), 5))
  assert a == b and a != c


def test_train_rejects_uneven_global_batch():
  with pytest.raises(ValueError, match="divisible"):
    make_train_dataset(IndexSource(4), crop_size=(4, 4), global_batch_size=3,
                       seed=0, process_count=2)


def test_eval_dataset_in_order_one_pass_original_size():
  sizes = [(10, 12), (14, 9), (10, 12)]
  batches = list(make_eval_dataset(IndexSource(3, sizes)))
  assert len(batches) == 3
  for i, batch in enumerate(batches):
    assert batch["image"].shape == (1, *sizes[i], 3)
    assert batch["label"].dtype == np.int32
    assert batch["label"][0, 0, 0] == i
    assert batch["name"].tolist() == [f"ex{i}"]


def test_eval_dataset_keeps_last_partial_batch():
  batches = list(make_eval_dataset(IndexSource(5), batch_size=2))
  assert [len(b["label"]) for b in batches] == [2, 2, 1]


# ----------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------


def test_get_source_embedded(tmp_path):
  config = dict(name="embedded", data_dir=str(tmp_path), image_size=(16, 24),
                num_train=4, num_val=2)
  source, info = get_source(config, "val")
  assert len(source) == 2
  assert source[0]["image"].shape == (16, 24, 3)
  assert info.num_classes == 7
  assert info.class_names == embedded.CLASS_NAMES
  ds = train_dataset_from_config({**config, "crop_size": (8, 8)},
                                 get_source(config, "train")[0],
                                 global_batch_size=2, seed=0)
  batch = _take(ds, 1)[0]
  assert batch["image"].shape == (2, 8, 8, 3)
  assert batch["instances"].shape == (2, 8, 8)


def test_get_source_folder(semantic_root):
  source, info = get_source(
      dict(name="folder", root=str(semantic_root), resize=(10, 15),
           cache=False), "train")
  assert info.num_classes == 3 and info.ignore_index == 255
  assert info.name == "semantic"
  assert source[0]["image"].shape == (10, 15, 3)


def test_get_source_instance_folder(instance_root):
  source, info = get_source(dict(name="instance_folder",
                                 root=str(instance_root)), "val")
  assert info.num_classes == 2 and info.has_instances
  assert len(source) == 1


def test_get_source_unknown_name():
  with pytest.raises(DataError, match="embedded, folder, instance_folder"):
    get_source(dict(name="imagenet"), "train")


def test_get_source_folder_needs_root():
  with pytest.raises(DataError, match="root"):
    get_source(dict(name="folder"), "train")


def test_multiprocess_workers_match_in_process(tmp_path):
  source, _ = get_source(dict(name="embedded", data_dir=str(tmp_path),
                              image_size=(16, 16), num_train=6, num_val=1),
                         "train")
  kwargs = dict(crop_size=(8, 8), global_batch_size=2, seed=3)
  expected = _take(make_train_dataset(source, **kwargs), 4)
  it = iter(make_train_dataset(source, worker_count=2, **kwargs))
  try:
    for want in expected:
      got = next(it)
      for key in want:
        np.testing.assert_array_equal(want[key], got[key])
  finally:
    it.close()


# ----------------------------------------------------------------------------
# Host batch -> device.
# ----------------------------------------------------------------------------


def test_to_global_array():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh,
                                        jax.sharding.PartitionSpec("data"))
  n = jax.device_count()
  batch = {"image": np.zeros((n, 4, 4, 3), np.uint8),
           "label": np.arange(n * 16, dtype=np.int32).reshape(n, 4, 4),
           "name": np.array([f"ex{i}" for i in range(n)])}
  out = to_global_array(batch, sharding)
  assert isinstance(out["label"], jax.Array)
  assert out["label"].shape == (n, 4, 4)
  assert out["label"].sharding == sharding
  np.testing.assert_array_equal(np.asarray(out["label"]), batch["label"])
  assert isinstance(out["name"], np.ndarray)
