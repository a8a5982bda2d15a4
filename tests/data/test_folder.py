"""Folder datasets: reading, resizing, one DataError per kind of bad input."""

import shutil

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import DataError
from jaxseg.data import FolderSource
from jaxseg.data import InstanceFolderSource
from jaxseg.data import read_classes

# ----------------------------------------------------------------------------
# classes.txt
# ----------------------------------------------------------------------------


def test_read_classes_drops_ignore_line(semantic_root):
  assert read_classes(semantic_root, 255) == ["sky (blue)", "road surface",
                                              "car"]


def test_read_classes_camvid_style_void_id(tmp_path):
  (tmp_path / "classes.txt").write_text(
      "0 Sky\n1 Road\n2 Unlabelled (void; ignore_label in SegNet)\n")
  assert read_classes(tmp_path, ignore_index=2) == ["Sky", "Road"]


def test_read_classes_non_contiguous_ids(tmp_path):
  (tmp_path / "classes.txt").write_text("0 a\n2 b\n")
  with pytest.raises(DataError, match="classes.txt.*0..C-1"):
    read_classes(tmp_path, 255)


def test_read_classes_malformed_line(tmp_path):
  (tmp_path / "classes.txt").write_text("0 a\nbad\n")
  with pytest.raises(DataError, match=r"classes.txt:2"):
    read_classes(tmp_path, 255)


def test_read_classes_missing_file(tmp_path):
  with pytest.raises(DataError, match="classes.txt"):
    read_classes(tmp_path, 255)


# ----------------------------------------------------------------------------
# Semantic folders.
# ----------------------------------------------------------------------------


def test_folder_source_items(semantic_root, synth):
  source = FolderSource(semantic_root, "train")
  assert len(source) == 3
  assert source.num_classes == 3
  item = source[1]
  assert item["name"] == "ex1"
  assert item["image"].shape == (*synth.SIZE, 3)
  assert item["image"].dtype == np.uint8
  assert item["label"].dtype == np.uint8
  # Palette PNG: raw indices, not palette colours.
  np.testing.assert_array_equal(item["label"], synth.random_label(1))


def test_folder_source_cache_matches_lazy(semantic_root):
  cached = FolderSource(semantic_root, "val", cache=True)
  lazy = FolderSource(semantic_root, "val", cache=False)
  for i in range(len(cached)):
    for key in ("image", "label"):
      np.testing.assert_array_equal(cached[i][key], lazy[i][key])


def test_folder_source_resize(semantic_root, synth):
  source = FolderSource(semantic_root, "train", resize=(10, 12))
  item = source[0]
  assert item["image"].shape == (10, 12, 3)
  assert item["label"].shape == (10, 12)
  original = set(np.unique(synth.random_label(0)).tolist())
  assert set(np.unique(item["label"]).tolist()) <= original


def test_folder_source_converts_modes_and_16_bit_labels(tmp_path, synth):
  root = synth.make_semantic(tmp_path / "d", splits=("train",), count=1)
  synth.write_image(root / "images/train/ex0.png", mode="L")
  wide = synth.random_label(0).astype(np.uint16)
  Image.fromarray(wide).save(root / "labels/train/ex0.png")
  item = FolderSource(root, "train")[0]
  assert item["image"].shape == (*synth.SIZE, 3)
  assert np.all(item["image"][..., 0] == item["image"][..., 1])
  assert item["label"].dtype == np.int32
  np.testing.assert_array_equal(item["label"], wide)


def test_num_classes_without_classes_txt(semantic_root):
  (semantic_root / "classes.txt").unlink()
  source = FolderSource(semantic_root, "train", num_classes=3)
  assert source.class_names == ["class_0", "class_1", "class_2"]


# ----------------------------------------------------------------------------
# DataError cases: each message names the culprit.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("cache", [True, False])
def test_missing_root(tmp_path, cache):
  with pytest.raises(DataError, match="nowhere"):
    FolderSource(tmp_path / "nowhere", "train", cache=cache)


@pytest.mark.parametrize("folder", ["images", "labels"])
def test_missing_top_folder(semantic_root, folder):
  shutil.rmtree(semantic_root / folder)
  with pytest.raises(DataError, match=f"{semantic_root / folder}"):
    FolderSource(semantic_root, "train")


def test_missing_split_folder(semantic_root):
  with pytest.raises(DataError, match=r"images/test.*'train', 'val'"):
    FolderSource(semantic_root, "test")


def test_image_without_label(semantic_root):
  (semantic_root / "labels/train/ex2.png").unlink()
  with pytest.raises(DataError, match=r"without a label.*ex2\.png"):
    FolderSource(semantic_root, "train")


def test_label_without_image(semantic_root):
  (semantic_root / "images/train/ex2.png").unlink()
  with pytest.raises(DataError, match=r"without an image.*labels/train/ex2"):
    FolderSource(semantic_root, "train")


@pytest.mark.parametrize("cache", [True, False])
def test_size_mismatch(semantic_root, synth, cache):
  synth.write_image(semantic_root / "images/train/ex0.png", size=(21, 30))
  with pytest.raises(DataError, match=r"size mismatch.*images/train/ex0\.png"):
    FolderSource(semantic_root, "train", cache=cache)


@pytest.mark.parametrize("cache", [True, False])
def test_undecodable_image(semantic_root, cache):
  (semantic_root / "images/train/ex0.png").write_bytes(b"not a png at all")
  with pytest.raises(DataError, match=r"cannot decode .*images/train/ex0\.png"):
    FolderSource(semantic_root, "train", cache=cache)


def test_truncated_label(semantic_root):
  path = semantic_root / "labels/train/ex1.png"
  path.write_bytes(path.read_bytes()[:60])
  with pytest.raises(DataError, match=r"labels/train/ex1\.png"):
    FolderSource(semantic_root, "train")


def test_label_out_of_range_cached(semantic_root, synth):
  label = synth.random_label(2)
  label[5, 5], label[6, 6] = 7, 9
  synth.write_label(semantic_root / "labels/train/ex2.png", label)
  with pytest.raises(DataError,
                     match=r"labels/train/ex2\.png.*\[7, 9\].*\[0, 3\).*255"):
    FolderSource(semantic_root, "train")


def test_label_out_of_range_lazy_raises_on_access(semantic_root, synth):
  label = synth.random_label(2)
  label[5, 5] = 3
  synth.write_label(semantic_root / "labels/train/ex2.png", label)
  source = FolderSource(semantic_root, "train", cache=False)
  source[0]
  with pytest.raises(DataError, match=r"ex2\.png.*\[3\]"):
    source[2]


def test_rgb_label_rejected(semantic_root, synth):
  synth.write_image(semantic_root / "labels/train/ex0.png")
  with pytest.raises(DataError, match=r"labels/train/ex0\.png.*mode 'RGB'"):
    FolderSource(semantic_root, "train")


def test_empty_split(semantic_root):
  for folder in ("images", "labels"):
    shutil.rmtree(semantic_root / folder / "val")
    (semantic_root / folder / "val").mkdir()
  with pytest.raises(DataError, match=r"empty split.*images/val"):
    FolderSource(semantic_root, "val")


def test_unexpected_file_type(semantic_root):
  (semantic_root / "images/train/notes.txt").write_text("hello")
  with pytest.raises(DataError, match=r"images/train/notes\.txt"):
    FolderSource(semantic_root, "train")


def test_duplicate_stems(semantic_root, synth):
  synth.write_image(semantic_root / "images/train/ex0.jpg")
  with pytest.raises(DataError, match=r"two files with stem 'ex0'"):
    FolderSource(semantic_root, "train")


# ----------------------------------------------------------------------------
# Instance folders.
# ----------------------------------------------------------------------------


def test_instance_source_split_lists(instance_root, synth):
  train = InstanceFolderSource(instance_root, "train")
  val = InstanceFolderSource(instance_root, "val", cache=False)
  assert (len(train), len(val)) == (3, 1)
  item = train[2]
  assert item["name"] == "plant002"
  assert item["image"].shape == (*synth.SIZE, 3)  # RGBA -> RGB.
  assert item["instances"].dtype == np.int32
  assert item["instances"].max() == 4  # Palette indices, not colours.
  np.testing.assert_array_equal(item["label"], item["instances"] > 0)
  assert item["label"].dtype == np.uint8


def test_instance_source_resize(instance_root):
  item = InstanceFolderSource(instance_root, "train", resize=(40, 60))[1]
  assert item["instances"].shape == (40, 60)
  assert set(np.unique(item["instances"]).tolist()) == {0, 1, 2, 3}


def test_instance_source_generic_layout(tmp_path, synth):
  root = synth.make_semantic(tmp_path / "generic", splits=("train",))
  item = InstanceFolderSource(root, "train")[0]
  np.testing.assert_array_equal(item["instances"], synth.random_label(0))


def test_instance_missing_listed_file(instance_root):
  (instance_root / "labels/plant001_label.png").unlink()
  with pytest.raises(DataError, match=r"label for 'plant001'.*train\.txt"):
    InstanceFolderSource(instance_root, "train")


def test_instance_missing_split_list(instance_root):
  with pytest.raises(DataError, match=r"splits/test\.txt.*'train', 'val'"):
    InstanceFolderSource(instance_root, "test")


def test_instance_empty_split_list(instance_root):
  (instance_root / "splits/val.txt").write_text("\n")
  with pytest.raises(DataError, match=r"empty split.*val\.txt"):
    InstanceFolderSource(instance_root, "val")


def test_instance_size_mismatch(instance_root, synth):
  synth.write_image(instance_root / "images/plant000_rgb.png", size=(5, 5))
  with pytest.raises(DataError, match=r"plant000_rgb\.png"):
    InstanceFolderSource(instance_root, "train")


# ----------------------------------------------------------------------------
# Real data (skipped where /work/shared/data is absent).
# ----------------------------------------------------------------------------


def test_camvid(camvid_root):
  assert len(read_classes(camvid_root, ignore_index=11)) == 11
  source = FolderSource(camvid_root, "val", ignore_index=11)  # Validates all.
  assert len(source) == 101
  assert source.num_classes == 11
  item = source[0]
  assert item["image"].shape == (360, 480, 3)
  assert item["label"].shape == (360, 480)
  assert item["label"].max() <= 11
  assert len(FolderSource(camvid_root, "train", ignore_index=11,
                          cache=False)) == 367


def test_cvppp(cvppp_root):
  train = InstanceFolderSource(cvppp_root, "train")
  val = InstanceFolderSource(cvppp_root, "val", cache=False)
  assert (len(train), len(val)) == (103, 25)
  item = train[0]
  assert item["image"].shape == (530, 500, 3)
  assert min(train[i]["instances"].max() for i in range(len(train))) >= 11
  assert val[0]["instances"].max() >= 11
