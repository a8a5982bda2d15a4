"""jaxseg_shapes: determinism, label/instance consistency, TFDS round trip."""

import subprocess
import sys

import numpy as np
import pytest

from jaxseg.data import DataError
from jaxseg.data import embedded


def test_generation_is_deterministic():
  first = embedded.generate_example("train", 7)
  again = embedded.generate_example("train", 7)
  for key in ("image", "label", "instances"):
    np.testing.assert_array_equal(first[key], again[key])
  other = embedded.generate_example("val", 7)
  assert not np.array_equal(first["image"], other["image"])


def test_shapes_and_dtypes():
  example = embedded.generate_example("val", 0, image_size=(48, 64))
  assert example["image"].shape == (48, 64, 3)
  assert example["image"].dtype == np.uint8
  assert example["label"].shape == (48, 64)
  assert example["label"].dtype == np.uint8
  assert example["instances"].dtype == np.uint16
  assert example["label"].max() < embedded.NUM_CLASSES


@pytest.mark.parametrize("index", range(0, 40, 3))
def test_instances_agree_with_labels(index):
  example = embedded.generate_example("train", index)
  label, instances = example["label"], example["instances"]
  things = np.isin(label, embedded.THING_CLASS_IDS)
  # Thing pixels are exactly the instance pixels.
  np.testing.assert_array_equal(things, instances > 0)
  ids = np.unique(instances[instances > 0])
  # Contiguous ids: a shape hidden by later ones leaves no gap.
  np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
  assert len(ids) >= 1
  for i in ids:
    assert len(np.unique(label[instances == i])) == 1


def test_every_split_has_stuff_and_things():
  labels = np.stack([embedded.generate_example("train", i)["label"]
                     for i in range(30)])
  assert set(np.unique(labels).tolist()) == set(range(embedded.NUM_CLASSES))


def test_compact_ids_drops_fully_occluded():
  instances = np.array([[0, 1, 3], [3, 3, 1]])
  np.testing.assert_array_equal(embedded._compact_ids(instances),
                                [[0, 1, 2], [2, 2, 1]])


def test_tfds_round_trip(tmp_path):
  kwargs = dict(data_dir=tmp_path, image_size=(24, 32), num_train=5,
                num_val=3)
  train = embedded.load_embedded("train", **kwargs)
  val = embedded.load_embedded("validation", **kwargs)
  assert (len(train), len(val)) == (5, 3)
  for split, source in (("train", train), ("val", val)):
    for i in range(len(source)):
      expected = embedded.generate_example(split, i, (24, 32))
      record = source[i]
      for key, value in expected.items():
        np.testing.assert_array_equal(record[key], value)
        assert record[key].dtype == value.dtype


def test_prepared_dataset_is_reused(tmp_path):
  kwargs = dict(data_dir=tmp_path, image_size=(16, 16), num_train=2,
                num_val=1)
  embedded.load_embedded("train", **kwargs)
  files = sorted(tmp_path.rglob("*.array_record*"))
  stamps = [f.stat().st_mtime_ns for f in files]
  embedded.load_embedded("val", **kwargs)
  assert [f.stat().st_mtime_ns for f in files] == stamps


def test_default_data_dir_from_env(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path))
  assert embedded.default_data_dir() == tmp_path


def test_unknown_split(tmp_path):
  with pytest.raises(DataError, match="test"):
    embedded.load_embedded("test", data_dir=tmp_path)


_PREPARE = """
import sys
from jaxseg.data import embedded
source = embedded.load_embedded("train", data_dir=sys.argv[1],
                                image_size=(32, 32), num_train=40, num_val=2)
print(len(source))
"""


def test_concurrent_prepare(tmp_path):
  """Two processes preparing the same dataset at once both succeed."""
  runs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(tmp_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for _ in range(2)]
  for run in runs:
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert out.split()[-1] == "40"
  assert not list(tmp_path.rglob("*incomplete*"))
