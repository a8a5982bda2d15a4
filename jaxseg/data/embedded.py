"""jaxseg_shapes: the small dataset the project generates for itself
(`jaxseg.data.shapes` draws the examples, deterministically per (split, index)).

The examples are written once to a TFDS array_record dataset (without
TensorFlow: the features are zlib-compressed `tfds.features.Tensor`s) and read
back through `tfds` data sources, which give random access for grain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.errors import DataError
from jaxseg.data.shapes import (  # noqa: F401  (re-exported)
    CLASS_NAMES, DEFAULT_IMAGE_SIZE, DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, NUM_CLASSES,
    SPLITS, STUFF_CLASS_IDS, THING_CLASS_IDS, _compact_ids, generate_example)

_LOCK_NAME = ".jaxseg_shapes.lock"

Array = np.ndarray


# ----------------------------------------------------------------------------
# TFDS builder.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """Size of the generated dataset."""
  image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
  num_train: int = DEFAULT_NUM_TRAIN
  num_val: int = DEFAULT_NUM_VAL


def shapes_config(image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                  num_train: int = DEFAULT_NUM_TRAIN,
                  num_val: int = DEFAULT_NUM_VAL) -> ShapesConfig:
  """A builder config whose name encodes its sizes (one cache dir per size)."""
  h, w = (int(s) for s in image_size)
  if min(h, w, num_train, num_val) <= 0:
    raise ValueError("image_size, num_train and num_val must be positive, got "
                     f"{image_size}, {num_train}, {num_val}")
  return ShapesConfig(
      name=f"{h}x{w}_train{num_train}_val{num_val}",
      description=f"{h}x{w} images, {num_train} train / {num_val} val.",
      image_size=(h, w), num_train=int(num_train), num_val=int(num_val))


class JaxsegShapes(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for jaxseg_shapes (see the module docstring)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Class prototype colours with a large random spread."}
  BUILDER_CONFIGS = [shapes_config()]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> pathlib.Path:
    # TFDS's own lookup needs the `importlib_resources` backport, which it does
    # not install on Python >= 3.9; the builder's file is all it wants.
    return pathlib.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    h, w = self.builder_config.image_size
    tensor = lambda shape, dtype: tfds.features.Tensor(
        shape=shape, dtype=dtype, encoding="zlib")
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tensor((h, w, 3), np.uint8),
            "label": tensor((h, w), np.uint8),
            "instances": tensor((h, w), np.uint16),
        }),
        disable_shuffling=True,  # Record i is generate_example(split, i).
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    return {
        "train": self._generate_examples("train", config.num_train),
        "val": self._generate_examples("val", config.num_val),
    }

  def _generate_examples(self, split: str,
                         num_examples: int) -> Iterator[tuple[int, dict]]:
    for index in range(num_examples):
      yield index, generate_example(split, index,
                                    self.builder_config.image_size)


def default_data_dir() -> pathlib.Path:
  """$JAXSEG_DATA_DIR, else ~/.cache/jaxseg/tfds."""
  env = os.environ.get("JAXSEG_DATA_DIR")
  return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / \
      "jaxseg" / "tfds"


@contextlib.contextmanager
def _exclusive_lock(directory: pathlib.Path) -> Iterator[None]:
  """Serialises preparation across processes sharing `directory`.

  TFDS writes into a uniquely named `incomplete.*` folder and renames it at
  the end, so readers never see a half-written dataset; but two writers racing
  would both generate and the loser's rename fails on the non-empty target.
  Holding this lock while checking and preparing makes the second process
  simply find the finished dataset.
  """
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / _LOCK_NAME, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_embedded(*, data_dir: str | os.PathLike | None = None,
                     image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                     num_train: int = DEFAULT_NUM_TRAIN,
                     num_val: int = DEFAULT_NUM_VAL) -> JaxsegShapes:
  """Generates the dataset once into `data_dir` (a no-op when present)."""
  data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir()
  config = shapes_config(image_size, num_train, num_val)
  if config.name in JaxsegShapes.builder_configs:
    config = config.name  # TFDS refuses a custom config named like a stock one.
  with _exclusive_lock(data_dir):
    builder = JaxsegShapes(config=config, data_dir=os.fspath(data_dir),
                           file_format="array_record")
    builder.download_and_prepare()
  return builder


def load_embedded(split: str, *, data_dir: str | os.PathLike | None = None,
                  image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                  num_train: int = DEFAULT_NUM_TRAIN,
                  num_val: int = DEFAULT_NUM_VAL):
  """Random-access source of jaxseg_shapes, generating it on first use.

  Args:
    split: "train" or "val" ("validation" is accepted for "val").
    data_dir: TFDS cache; defaults to `default_data_dir()`.
    image_size: (height, width) of the generated images.
    num_train: number of training examples.
    num_val: number of validation examples.

  Returns:
    A TFDS array_record data source: `len(source)` and `source[i]` -> {"image":
    uint8 (H, W, 3), "label": uint8 (H, W), "instances": uint16 (H, W)}.
  """
  split = "val" if split == "validation" else split
  if split not in SPLITS:
    raise DataError(f"jaxseg_shapes has splits {SPLITS}, not {split!r}")
  builder = prepare_embedded(data_dir=data_dir, image_size=image_size,
                             num_train=num_train, num_val=num_val)
  return builder.as_data_source(split)
