"""Shared fixtures of the trainer tests: a tiny config on the embedded dataset."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import config as config_lib
from jaxseg import algorithms, models, optim, parallel
from jaxseg.data import to_global_array
from jaxseg.trainers import step as step_lib


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
  c.update_from_flattened_dict(overrides)
  return c


@pytest.fixture
def tiny_config():
  """`tiny_config(data_dir, **{"a.b": value})` -> a seconds-long runlocal config."""
  return _tiny_config


class _Info:
  ignore_index, num_classes, class_weights = 255, 7, None


def _one_step_on_1_and_8_devices(c, make_loss, build_model=None):
  """One jitted update of the same state and batch on a 1- and an 8-device
  mesh: [(metrics, params) on 1, (metrics, params) on 8]."""
  assert jax.device_count() == 8
  model = (build_model(c, _Info) if build_model
           else models.build_model(c.model, _Info.num_classes))
  params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 64, 64, 3)),
                      train=False)["params"]
  tx, schedule = optim.make_optimizer(c.optim, params, total_steps=10)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
           "label": rng.integers(0, 7, (8, 64, 64)).astype(np.int32)}
  batch["label"][:, :4] = 255
  results = []
  for n in (1, 8):
    mesh = parallel.make_data_mesh(n)
    repl = parallel.replicated(mesh)
    loss_fn = make_loss(c, model=model, info=_Info, mesh=mesh)
    update = jax.jit(step_lib.make_update(algorithms.as_grads_fn(loss_fn), tx, schedule),
                     out_shardings=(repl, repl, repl))
    state = jax.device_put(step_lib.init_state(params, tx=tx, rng=jax.random.key(1)), repl)
    state, metrics, finite = update(state, to_global_array(batch, parallel.batch_sharding(mesh)))
    assert bool(finite)
    results.append((jax.device_get(metrics), jax.device_get(state["params"])))
  return results


@pytest.fixture
def one_step_on_1_and_8_devices():
  return _one_step_on_1_and_8_devices


def kill_group(proc) -> None:
  """SIGKILL a subprocess started with `start_new_session=True` and everything
  it started (a no-op once they are gone)."""
  import os, signal  # pylint: disable=g-import-not-at-top,multiple-imports
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def write_folder_dataset(root, label_fn, *, count: int, classes: str) -> None:
  """A folder dataset of `count` random 64×64 images per split, labels
  `label_fn(rng)` (64, 64) uint8, and `classes.txt` = `classes`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i in range(count):
      Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
          root / "images" / split / f"{i}.png")
      Image.fromarray(label_fn(rng)).save(root / "labels" / split / f"{i}.png")
  (root / "classes.txt").write_text(classes)
