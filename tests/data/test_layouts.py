"""The papers' datasets in their own layouts: tiny trees written here (through
`jaxseg.data.mock_trees` or by hand), decoded labels checked against values
worked out by hand from each dataset's encoding."""
import numpy as np
import pytest
from PIL import Image

from jaxseg.data import DataError, get_source, mock_trees
from jaxseg.data import ade20k, cityscapes, folder, layouts, pascal


def _write_label(path, values, mode=None):
  array = np.asarray(values)
  if mode == "I;16":
    Image.fromarray(array.astype(np.uint16)).save(path)
  else:
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)


def _first(source, name):
  return source[source.names.index(name)]


# --- Pascal Context ---------------------------------------------------------------


@pytest.fixture
def voc2010(tmp_path):
  base = mock_trees.pascal_context(tmp_path, splits={"train": 3, "val": 2}, size=(2, 2))
  stem = (base / "ImageSets/SegmentationContext/train.txt").read_text().split()[0]
  _write_label(base / "SegmentationClassContext" / f"{stem}.png", [[0, 1], [59, 30]])
  return base, stem


def test_pascal_context_59_reduces_zero_and_60_keeps_background(voc2010):
  base, stem = voc2010
  s59 = pascal.pascal_context(base, "train", cache=False)
  s60 = pascal.pascal_context(base, "train", background=True, cache=False)
  assert len(s59) == 3 and s59.num_classes == 59 and s60.num_classes == 60
  np.testing.assert_array_equal(_first(s59, stem)["label"], [[255, 0], [58, 29]])
  np.testing.assert_array_equal(_first(s60, stem)["label"], [[0, 1], [59, 30]])
  assert s59.class_names[0] == "aeroplane" and s60.class_names[:2] == ["background",
                                                                       "aeroplane"]
  assert _first(s59, stem)["image"].shape == (2, 2, 3)


def test_pascal_context_value_outside_encoding_names_the_file(voc2010):
  base, stem = voc2010
  path = base / "SegmentationClassContext" / f"{stem}.png"
  _write_label(path, [[0, 60], [1, 1]])
  source = pascal.pascal_context(base, "train", cache=False)
  with pytest.raises(DataError, match=path.name + r": label values \[60\]"):
    _first(source, stem)


def test_pascal_context_root_one_level_too_high_says_which_folder(voc2010, tmp_path):
  with pytest.raises(DataError, match=r"did you mean --config.data.root=.*VOCdevkit/VOC2010"):
    pascal.pascal_context(tmp_path, "train")
  with pytest.raises(DataError, match=r"did you mean .*VOC2010\?"):
    pascal.pascal_context(tmp_path / "VOCdevkit" / "VOC2010" / "JPEGImages", "train")


def test_pascal_context_missing_split_list_and_label(voc2010):
  base, stem = voc2010
  with pytest.raises(DataError, match=r"split list not found: .*test\.txt.*train\.txt"):
    pascal.pascal_context(base, "test")
  (base / "SegmentationClassContext" / f"{stem}.png").unlink()
  with pytest.raises(DataError, match=f"no label file: {stem}"):
    pascal.pascal_context(base, "train")


def test_label_of_another_size_names_both_files(voc2010):
  base, stem = voc2010
  _write_label(base / "SegmentationClassContext" / f"{stem}.png", np.zeros((3, 2)))
  source = pascal.pascal_context(base, "train", cache=False)
  with pytest.raises(DataError, match=f"size mismatch: .*{stem}.jpg is 2x2 .*{stem}.png is 2x3"):
    _first(source, stem)


# --- VOC 2012 + SBD ---------------------------------------------------------------


def test_voc_aug_converts_sbd_and_trains_on_train_and_aug(tmp_path):
  voc, sbd = mock_trees.voc_aug(tmp_path, train=3, aug=4, val=2, size=(4, 6))
  with pytest.raises(DataError, match="convert SBD first: python -m jaxseg.data.pascal sbd"):
    pascal.voc_aug(voc, "train")
  pascal.main(["sbd", str(sbd), str(voc)])
  aug = (voc / "ImageSets/Segmentation/aug.txt").read_text().split()
  train = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
  assert len(aug) == 4 and not set(aug) & set(train)  # SBD's VOC-train images left out
  source = pascal.voc_aug(voc, "train", cache=False)
  assert len(source) == 3 + 4 and source.num_classes == 21
  mat = pascal.read_sbd_mat(sbd / "dataset" / "cls" / f"{aug[0]}.mat")
  np.testing.assert_array_equal(_first(source, aug[0])["label"], mat)
  # VOC's palette PNG: the indices, 255 (boundary) kept as the ignore value.
  stored = np.asarray(Image.open(voc / "SegmentationClass" / f"{train[0]}.png"))
  assert Image.open(voc / "SegmentationClass" / f"{train[0]}.png").mode == "P"
  np.testing.assert_array_equal(_first(source, train[0])["label"], stored)
  assert len(pascal.voc_aug(voc, "val")) == 2


def test_voc_value_21_is_an_error(tmp_path):
  voc, _ = mock_trees.voc_aug(tmp_path, train=1, aug=0, val=1, size=(2, 2))
  stem = (voc / "ImageSets/Segmentation/val.txt").read_text().split()[0]
  _write_label(voc / "SegmentationClass" / f"{stem}.png", [[0, 21], [255, 20]])
  with pytest.raises(DataError, match=r"\[21\]"):
    pascal.voc_aug(voc, "val", cache=False)[0]


# --- Cityscapes and Mapillary -----------------------------------------------------


def test_cityscapes_label_ids_to_train_ids_and_instances(tmp_path):
  root = mock_trees.cityscapes(tmp_path, splits={"val": 2}, size=(2, 2))
  label_dir = root / "gtFine" / "val" / "aachen"
  stem = sorted(label_dir.glob("*_labelIds.png"))[0].name[:-len("_gtFine_labelIds.png")]
  _write_label(label_dir / f"{stem}_gtFine_labelIds.png", [[7, 26], [0, 33]])
  _write_label(label_dir / f"{stem}_gtFine_instanceIds.png", [[7, 26001], [0, 26]],
               mode="I;16")
  source = cityscapes.cityscapes(root, "val", cache=False)
  assert len(source) == 2 and source.num_classes == 19
  ex = _first(source, stem)
  np.testing.assert_array_equal(ex["label"], [[0, 13], [255, 18]])
  np.testing.assert_array_equal(ex["instances"], [[0, 26001], [0, 0]])
  _write_label(label_dir / f"{stem}_gtFine_labelIds.png", [[7, 34], [0, 33]])
  with pytest.raises(DataError, match=r"\[34\].*labelIds 0\.\.33"):
    _first(source, stem)


def test_cityscapes_tables_match_the_official_trainids():
  # cityscapesscripts labels.py, written out: (id, trainId) of the 19 classes.
  official = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
  for label_id, train_id in enumerate(cityscapes.TRAIN_IDS):
    assert train_id == official.get(label_id, 255), label_id


def test_cityscapes_missing_label_and_wrong_level(tmp_path):
  root = mock_trees.cityscapes(tmp_path / "cs", splits={"train": 2}, size=(2, 2))
  with pytest.raises(DataError, match=r"did you mean --config.data.root=.*/cs\?"):
    cityscapes.cityscapes(tmp_path, "train")
  with pytest.raises(DataError, match=r"split 'val' not found.*splits there: \['train'\]"):
    cityscapes.cityscapes(root, "val")
  next((root / "gtFine" / "train" / "aachen").glob("*_labelIds.png")).unlink()
  with pytest.raises(DataError, match="no label file: aachen_"):
    cityscapes.cityscapes(root, "train")


def test_mapillary_unlabeled_is_ignored(tmp_path):
  root = mock_trees.mapillary(tmp_path, splits={"training": 1}, size=(2, 2))
  path = next((root / "training" / "v1.2" / "labels").glob("*.png"))
  _write_label(path, [[0, 64], [65, 13]])
  source = cityscapes.mapillary(root, "train", cache=False)
  assert source.num_classes == 65
  np.testing.assert_array_equal(source[0]["label"], [[0, 64], [255, 13]])
  _write_label(path, [[66, 0], [0, 0]])
  with pytest.raises(DataError, match=r"\[66\]"):
    source[0]


# --- ADE20K ------------------------------------------------------------------------


def test_ade20k_reduces_zero_and_maps_split_names(tmp_path):
  base = mock_trees.ade20k(tmp_path, splits={"training": 2, "validation": 1}, size=(2, 2))
  path = sorted((base / "annotations" / "training").glob("*.png"))[0]
  _write_label(path, [[0, 1], [150, 3]])
  source = ade20k.ade20k(base, "train", cache=False)
  assert len(source) == 2 and source.num_classes == 150 and len(ade20k.ade20k(base, "val")) == 1
  np.testing.assert_array_equal(_first(source, path.stem)["label"], [[255, 0], [149, 2]])
  _write_label(path, [[151, 1], [1, 1]])
  with pytest.raises(DataError, match=path.name + r": label values \[151\]"):
    _first(source, path.stem)


# --- Registry, laziness -----------------------------------------------------------


@pytest.mark.parametrize("name,classes,instances", [
    ("pascal_context", 59, False), ("pascal_context60", 60, False),
    ("cityscapes", 19, True), ("ade20k", 150, False), ("mapillary", 65, False),
    ("voc_aug", 21, False)])
def test_get_source_reads_each_layout(tmp_path, name, classes, instances):
  writer = mock_trees.WRITERS[name.replace("60", "")]
  root = writer(tmp_path)
  if name == "voc_aug":
    pascal.convert_sbd(root[1], root[0])
    root = root[0]
  source, info = get_source({"name": name, "root": str(root)}, "val")
  assert info.num_classes == classes == len(info.class_names)
  assert info.has_instances == instances and ("instances" in source[0]) == instances
  ex = source[0]
  assert ex["image"].dtype == np.uint8 and ex["label"].shape == ex["image"].shape[:2]
  assert set(np.unique(ex["label"])) <= set(range(classes)) | {255}


def test_indexing_decodes_nothing_and_auto_cache_follows_size(tmp_path, monkeypatch):
  base = mock_trees.ade20k(tmp_path, splits={"training": 6}, size=(8, 8))
  calls = []
  monkeypatch.setattr(folder, "decode_image", lambda p: calls.append(p) or np.zeros((8, 8, 3)))
  lazy = ade20k.ade20k(base, "train", cache=False)
  assert len(lazy) == 6 and not calls and lazy._cache is None  # pylint: disable=protected-access
  monkeypatch.setattr(folder, "AUTO_CACHE_BYTES", 10_000)
  assert ade20k.ade20k(base, "train")._cache is not None  # 6 x 8 x 8 x 4 bytes fit
  monkeypatch.setattr(folder, "AUTO_CACHE_BYTES", 100)
  assert ade20k.ade20k(base, "train")._cache is None


def test_encoding_helpers():
  enc = layouts.reduce_zero_encoding(3)
  np.testing.assert_array_equal(enc.decode("x", np.array([0, 1, 3])), [255, 0, 2])
  with pytest.raises(DataError, match=r"x: label values \[4\]"):
    enc.decode("x", np.array([4]))
  with pytest.raises(DataError, match=r"\[300\]"):
    enc.decode("x", np.array([300]))
