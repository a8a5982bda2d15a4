"""Shared fixtures of the trainer tests: a tiny config on the embedded dataset."""
import pytest

from jaxseg import config as config_lib


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny_config(data_dir, **overrides):
  c = config_lib.runlocal(config_lib.default_config())
  c.data.name = "embedded"
  c.data.data_dir = data_dir
  c.data.crop_size = (64, 64)
  c.data.scale_range = (0.75, 1.25)
  c.eval.crop_size = (64, 64)
  c.eval.max_examples = 2
  c.eval.panel_examples = 2
  c.batch_size = 8
  for k, v in overrides.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


@pytest.fixture
def tiny_config():
  """`tiny_config(data_dir, **{"a.b": value})` -> a seconds-long runlocal config."""
  return _tiny_config
