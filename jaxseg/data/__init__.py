"""Data layer: the embedded dataset, folder datasets, the papers' datasets in
their own layouts (`pascal`, `cityscapes`, `ade20k`), and grain pipelines.

Names are loaded on first use (PEP 562), so that importing a pure submodule
such as `jaxseg.data.instance_targets` (jittable targets the ACIS algorithm
uses) does not import grain or TFDS.
"""
import importlib

_WHERE = {
    "TrainAugmentation": "augment",
    "CLASS_NAMES": "embedded",
    "generate_example": "embedded",
    "load_embedded": "embedded",
    "DataError": "errors",
    "FolderSource": "folder",
    "InstanceFolderSource": "folder",
    "read_classes": "folder",
    "DATASET_NAMES": "registry",
    "DatasetInfo": "registry",
    "get_source": "registry",
    "make_eval_dataset": "pipeline",
    "make_train_dataset": "pipeline",
    "to_global_array": "pipeline",
    "train_dataset_from_config": "pipeline",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
  if name not in _WHERE:
    raise AttributeError(f"module 'jaxseg.data' has no attribute {name!r}")
  value = getattr(importlib.import_module(f"jaxseg.data.{_WHERE[name]}"), name)
  globals()[name] = value
  return value
