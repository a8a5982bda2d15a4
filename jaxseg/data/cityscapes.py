"""Cityscapes and Mapillary Vistas in their own layouts.

Cityscapes (`cityscapes`, 19 classes), ROOT = the folder holding both
archives' top folders::

  ROOT/leftImg8bit/{split}/{city}/X_leftImg8bit.png
  ROOT/gtFine/{split}/{city}/X_gtFine_labelIds.png      ids 0..33
  ROOT/gtFine/{split}/{city}/X_gtFine_instanceIds.png   id·1000 + k on thing instances

labelIds -> trainIds by the official table (cityscapesscripts `labels.py`),
every other id -> ignore; ids above 33 are errors. Instance ids >= 1000 are
the objects that feed iIoU (smaller values are the label id of a stuff
region or of a crowd group and count as no instance). Names are X.

Mapillary Vistas v1.2 (`mapillary`, 65 classes; the RSS paper's cold-start
source for Cityscapes), ROOT = the folder holding::

  ROOT/{training,validation}/images/X.jpg
  ROOT/{training,validation}/v1.2/labels/X.png          ids 0..65, 65 = unlabeled

(split names train / val map to training / validation).
"""
from __future__ import annotations

from jaxseg.data import folder
from jaxseg.data import layouts
from jaxseg.data.errors import DataError

IGNORE = layouts.IGNORE
# cityscapesscripts labels.py: trainId of label ids 0..33.
_I = IGNORE
TRAIN_IDS = (_I, _I, _I, _I, _I, _I, _I, 0, 1, _I, _I, 2, 3, 4, _I, _I, _I, 5, _I, 6, 7, 8,
             9, 10, 11, 12, 13, 14, 15, _I, _I, 16, 17, 18)
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle")
MAPILLARY_CLASSES = (
    "Bird", "Ground Animal", "Curb", "Fence", "Guard Rail", "Barrier", "Wall", "Bike Lane",
    "Crosswalk - Plain", "Curb Cut", "Parking", "Pedestrian Area", "Rail Track", "Road",
    "Service Lane", "Sidewalk", "Bridge", "Building", "Tunnel", "Person", "Bicyclist",
    "Motorcyclist", "Other Rider", "Lane Marking - Crosswalk", "Lane Marking - General",
    "Mountain", "Sand", "Sky", "Snow", "Terrain", "Vegetation", "Water", "Banner", "Bench",
    "Bike Rack", "Billboard", "Catch Basin", "CCTV Camera", "Fire Hydrant", "Junction Box",
    "Mailbox", "Manhole", "Phone Booth", "Pothole", "Street Light", "Pole",
    "Traffic Sign Frame", "Utility Pole", "Traffic Light", "Traffic Sign (Back)",
    "Traffic Sign (Front)", "Trash Can", "Bicycle", "Boat", "Bus", "Car", "Caravan",
    "Motorcycle", "On Rails", "Other Vehicle", "Trailer", "Truck", "Wheeled Slow",
    "Car Mount", "Ego Vehicle")
INSTANCE_OFFSET = 1000

_CITYSCAPES_LAYOUT = ("the folder holding leftImg8bit/{split}/{city}/*_leftImg8bit.png and "
                      "gtFine/{split}/{city}/*_gtFine_labelIds.png")
_MAPILLARY_LAYOUT = "the folder holding {training,validation}/images and .../v1.2/labels"
_MAPILLARY_SPLITS = {"train": "training", "val": "validation", "test": "testing"}


class CityscapesSource(layouts.EncodedSource):
  """Cityscapes fine: "label" in trainIds and, with instanceIds files,
  "instances" (ids >= 1000 kept, 0 elsewhere)."""

  def _instances(self, pair, shape):
    ids = super()._instances(pair, shape)
    ids[ids < INSTANCE_OFFSET] = 0
    return ids


def cityscapes(root, split: str, *, resize=None, cache: bool | None = None
               ) -> CityscapesSource:
  """One split of Cityscapes fine (train / val / test)."""
  root = layouts.require_layout(root, ("leftImg8bit", "gtFine"), dataset="cityscapes",
                                expected=_CITYSCAPES_LAYOUT)
  image_split = layouts.split_dir(root / "leftImg8bit", split, {})
  label_split = layouts.split_dir(root / "gtFine", split, {})
  pairs = []
  for city in sorted(p for p in image_split.iterdir() if p.is_dir()):
    images = layouts.files_in(city, "_leftImg8bit.png")
    label_dir = label_split / city.name
    labels, instances = {}, {}
    if label_dir.is_dir():
      labels = layouts.files_in(label_dir, "_gtFine_labelIds.png")
      instances = layouts.files_in(label_dir, "_gtFine_instanceIds.png")
    stems = sorted(images)
    found = layouts.pair_listed(stems, images, labels, where=str(city))
    pairs += [folder.FilePair(p.name, p.image, p.label, instances.get(p.name))
              for p in found]
  if not pairs:
    raise DataError(f"cityscapes: no *_leftImg8bit.png under {image_split}/CITY/")
  with_instances = sum(p.instances is not None for p in pairs)
  if 0 < with_instances < len(pairs):
    missing = [p.label for p in pairs if p.instances is None]
    raise DataError(f"cityscapes: {len(missing)} label(s) have no *_gtFine_instanceIds.png "
                    f"beside them (the others do): {folder._listing(missing)}")  # pylint: disable=protected-access
  encoding = layouts.table_encoding(TRAIN_IDS, stored="labelIds 0..33")
  return CityscapesSource(pairs, encoding=encoding, class_names=CITYSCAPES_CLASSES,
                          description=f"cityscapes/{split}", resize=resize, cache=cache)


def mapillary(root, split: str, *, resize=None, cache: bool | None = None
              ) -> layouts.EncodedSource:
  """One split of Mapillary Vistas v1.2 (65 classes, 65 = unlabeled -> ignore)."""
  name = _MAPILLARY_SPLITS.get(split, split)
  root = layouts.require_layout(root, (f"{name}/images", f"{name}/v1.2/labels"),
                                dataset="mapillary", expected=_MAPILLARY_LAYOUT)
  images = layouts.files_in(root / name / "images", ".jpg")
  labels = layouts.files_in(root / name / "v1.2" / "labels", ".png")
  pairs = layouts.pair_listed(sorted(images), images, labels, where=str(root / name))
  if not pairs:
    raise DataError(f"mapillary: no images in {root / name / 'images'}")
  encoding = layouts.identity_encoding(65, void=(65,), stored="0..64 + 65 = unlabeled")
  return layouts.EncodedSource(pairs, encoding=encoding, class_names=MAPILLARY_CLASSES,
                               description=f"mapillary/{split}", resize=resize, cache=cache)
