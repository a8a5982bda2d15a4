"""Orbax checkpoints of the train state and the grain iterator.

Orbax writes each step to a temporary directory and renames it when complete, so
a crash during a save leaves the previous checkpoint untouched (and the partial
one is ignored on restore).
"""
from __future__ import annotations

import logging
import pathlib
import re
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg import optim


class CheckpointError(ValueError):
  pass


def make_manager(workdir: str | pathlib.Path, *, max_to_keep: int,
                 save_every: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      pathlib.Path(workdir).absolute() / "checkpoints",
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, save_interval_steps=save_every, create=True,
          enable_async_checkpointing=False),
      item_names=("state", "data"))


def save(mgr: ocp.CheckpointManager, step: int, state: Any,
         data_iter: Any | None, *, force: bool = False) -> bool:
  args = {"state": ocp.args.StandardSave(state)}
  if data_iter is not None:
    args["data"] = grain.checkpoint.CheckpointSave(data_iter)
  return mgr.save(step, args=ocp.args.Composite(**args), force=force)


def restore(mgr: ocp.CheckpointManager, abstract_state: Any,
            data_iter: Any | None, step: int | None = None):
  """Restores the latest (or given) step into `abstract_state`'s shardings.

  The grain iterator, when given, is restored in place. Returns the state, or
  None when there is no checkpoint.
  """
  step = mgr.latest_step() if step is None else step
  if step is None:
    return None
  args = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iter is not None:
    args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  return mgr.restore(step, args=ocp.args.Composite(**args))["state"]


def _steps(directory: pathlib.Path) -> list[int]:
  """Sorted finished step numbers under a `checkpoints/` dir (orbax's
  in-progress `N.orbax-checkpoint-tmp-*` dirs do not count)."""
  if not directory.is_dir():
    return []
  return sorted(int(d.name) for d in directory.iterdir() if re.fullmatch(r"\d+", d.name))


def latest_step(workdir: str | pathlib.Path) -> int | None:
  """The newest finished checkpoint step of a run's workdir, or None."""
  return max(_steps(pathlib.Path(workdir) / "checkpoints"), default=None)


def _resolve(path: str | pathlib.Path) -> tuple[pathlib.Path, int]:
  """Accepts a workdir, its `checkpoints/` dir or one step's dir."""
  p = pathlib.Path(path).expanduser().absolute()
  if not p.exists():
    raise CheckpointError(f"init_from: {p} does not exist.")
  if (p / "checkpoints").is_dir():
    p = p / "checkpoints"
  if (p / "state").is_dir() and re.fullmatch(r"\d+", p.name):
    return p.parent, int(p.name)
  steps = _steps(p)
  if not steps:
    raise CheckpointError(f"init_from: no checkpoint steps under {p}.")
  return p, steps[-1]


def load_params(path: str | pathlib.Path) -> Any:
  """Params (host numpy) of the latest checkpoint under `path`."""
  root, step = _resolve(path)
  item = root / str(step) / "state"
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(item)
    meta = getattr(meta, "item_metadata", meta)
    meta = getattr(meta, "tree", meta)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {"params": jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        dict(meta["params"]))}
    restored = ckptr.restore(item, args=ocp.args.PyTreeRestore(
        item=abstract, partial_restore=True,
        restore_args=jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), abstract)))
  logging.info("init_from: loaded params of step %d from %s", step, root)
  return jax.tree.map(np.asarray, restored["params"])


def merge_init(fresh: Any, loaded: Any, *, reinit_pattern: str) -> tuple[Any, list[str]]:
  """Takes every loaded leaf; keeps fresh ones where the classifier shape differs.

  A shape mismatch or a missing parameter outside `reinit_pattern` is an error:
  a cold start re-initialises the classifier only.
  """
  flat_loaded = {optim.param_path(p): v
                 for p, v in jax.tree_util.tree_leaves_with_path(loaded)}
  rx = re.compile(reinit_pattern)
  reinit = []

  def pick(path, x):
    name = optim.param_path(path)
    y = flat_loaded.get(name)
    if y is not None and y.shape == x.shape:
      return np.asarray(y, x.dtype)
    if rx.fullmatch(name):
      reinit.append(name)
      return x
    why = "missing" if y is None else f"shape {y.shape} vs {x.shape}"
    raise CheckpointError(
        f"init_from: parameter {name} cannot be loaded ({why}); only the "
        f"classifier ({reinit_pattern}) may differ.")

  return jax.tree_util.tree_map_with_path(pick, fresh), reinit
