"""The KITTI instance loader on a tiny tree in the authors' layout."""
import numpy as np
import pytest
from PIL import Image

from jaxseg.data import get_source
from jaxseg.data.errors import DataError


def _write(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def kitti_tree(root, sizes=((12, 36), (10, 30))):
  """ROOT/{train,val}/[augm/]X_rgb.png + X_labels.png, as kitti-gen.lua finds them."""
  rng = np.random.default_rng(0)
  truth = {}
  for split in ("train", "val"):
    for i, (h, w) in enumerate(sizes):
      sub = root / split / ("augm" if i else "")
      image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
      labels = np.zeros((h, w), np.uint8)
      labels[2:6, 3:9], labels[5:9, 15:25] = 1, 2 + i
      _write(sub / f"{i:06d}_rgb.png", image)
      _write(sub / f"{i:06d}_labels.png", labels)
      truth[(split, ("augm/" if i else "") + f"{i:06d}")] = (image, labels)
  return truth


def test_reads_the_authors_layout_and_resizes(tmp_path):
  truth = kitti_tree(tmp_path)
  for split in ("train", "val"):
    source, info = get_source({"name": "kitti_instance", "root": str(tmp_path)}, split)
    assert info.has_instances and len(source) == 2
    for ex in (source[i] for i in range(len(source))):
      image, labels = truth[(split, ex["name"])]
      np.testing.assert_array_equal(ex["image"], image)
      np.testing.assert_array_equal(ex["instances"], labels)
      np.testing.assert_array_equal(ex["label"], labels > 0)
  resized, _ = get_source({"name": "kitti_instance", "root": str(tmp_path),
                           "resize": (16, 48)}, "train")
  assert resized[1]["instances"].shape == (16, 48)
  assert set(np.unique(resized[1]["instances"])) == {0, 1, 3}  # nearest: ids kept


def test_missing_pieces_name_the_culprit(tmp_path):
  kitti_tree(tmp_path)
  with pytest.raises(DataError, match="KITTI split folder not found.*test"):
    get_source({"name": "kitti_instance", "root": str(tmp_path)}, "test")
  (tmp_path / "val" / "000000_labels.png").unlink()
  with pytest.raises(DataError, match="000000_rgb.png has no label 000000_labels.png"):
    get_source({"name": "kitti_instance", "root": str(tmp_path)}, "val")
