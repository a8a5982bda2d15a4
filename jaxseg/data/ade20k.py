"""ADE20K SceneParsing (`ade20k`, 150 classes) in its own layout.

ROOT = the ADEChallengeData2016 folder of the release::

  ROOT/images/{training,validation}/X.jpg
  ROOT/annotations/{training,validation}/X.png    0 = other, 1..150 the classes

0 -> ignore, k -> k - 1 (mmsegmentation's reduce_zero_label); values above
150 are errors. Split names train / val map to training / validation. (TFDS's
`scene_parse150` is not this: its builder downloads the 2017 challenge's
instance annotations.)
"""
from __future__ import annotations

from jaxseg.data import layouts
from jaxseg.data.errors import DataError

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea",
    "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
    "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")
SPLITS = {"train": "training", "val": "validation"}
_LAYOUT = "the ADEChallengeData2016 folder: images/{training,validation}, annotations/..."


def ade20k(root, split: str, *, resize=None, cache: bool | None = None
           ) -> layouts.EncodedSource:
  """One split of ADE20K SceneParsing (20,210 training / 2,000 validation)."""
  root = layouts.require_layout(root, ("images", "annotations"), dataset="ade20k",
                                expected=_LAYOUT)
  image_dir = layouts.split_dir(root / "images", split, SPLITS)
  label_dir = layouts.split_dir(root / "annotations", split, SPLITS)
  images = layouts.files_in(image_dir, ".jpg")
  pairs = layouts.pair_listed(sorted(images), images, layouts.files_in(label_dir, ".png"),
                              where=str(image_dir))
  if not pairs:
    raise DataError(f"ade20k: no .jpg images in {image_dir}")
  return layouts.EncodedSource(pairs, encoding=layouts.reduce_zero_encoding(150),
                               class_names=ADE20K_CLASSES, description=f"ade20k/{split}",
                               resize=resize, cache=cache)
