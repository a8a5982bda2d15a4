"""Data layer: the embedded dataset, folder datasets and grain pipelines."""

from jaxseg.data.augment import TrainAugmentation
from jaxseg.data.embedded import CLASS_NAMES
from jaxseg.data.embedded import generate_example
from jaxseg.data.embedded import load_embedded
from jaxseg.data.errors import DataError
from jaxseg.data.folder import FolderSource
from jaxseg.data.folder import InstanceFolderSource
from jaxseg.data.folder import read_classes
from jaxseg.data.pipeline import DATASET_NAMES
from jaxseg.data.pipeline import DatasetInfo
from jaxseg.data.pipeline import get_source
from jaxseg.data.pipeline import make_eval_dataset
from jaxseg.data.pipeline import make_train_dataset
from jaxseg.data.pipeline import to_global_array
from jaxseg.data.pipeline import train_dataset_from_config

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAMES",
    "DataError",
    "DatasetInfo",
    "FolderSource",
    "InstanceFolderSource",
    "TrainAugmentation",
    "generate_example",
    "get_source",
    "load_embedded",
    "make_eval_dataset",
    "make_train_dataset",
    "read_classes",
    "to_global_array",
    "train_dataset_from_config",
]
