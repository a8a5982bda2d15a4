"""Orbax checkpoints of the train state, on one process or many.

Orbax writes each step to a temporary directory and renames it when complete,
so a crash (or `kill -9`) during a save leaves the previous checkpoint
untouched, and the partial one is ignored (and cleaned up) on the next start.
Every process takes part in a save and a restore; the replicated state is
written once. Paths are `etils.epath` paths: local or `gs://`.

The data stream's position is not saved separately: training consumes one
global batch per step, so a state of step s resumes the stream at batch s
(`data.make_train_dataset(start_batch=s)`), with any number of processes.

A step that does not restore (a truncated `_METADATA`, a missing file) is
moved to `WORKDIR/checkpoints_corrupt/` and the next older one is tried;
`quarantine` does the same for steps saved after a divergence.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxseg import optim


class CheckpointError(ValueError):
  pass


def make_manager(workdir, *, max_to_keep: int, save_every: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      _absolute(workdir) / "checkpoints",
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, save_interval_steps=save_every, create=True,
          enable_async_checkpointing=False),
      item_names=("state",))


def _absolute(path) -> epath.Path:
  p = epath.Path(path).expanduser()
  return p if "://" in str(p) else epath.Path(p.resolve())


def _no_space(exc: BaseException) -> bool:
  """Whether `exc` or anything it was raised from is "No space left on device"."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or \
        "No space left on device" in str(exc):
      return True
    exc = exc.__cause__ or exc.__context__
  return False


def save(mgr: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
  """Saves `state` as `step` (every `save_every` steps, or now with `force`);
  a full disk is one clear `CheckpointError`, the last good step kept."""
  if step in mgr.all_steps():
    return False
  try:
    return mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                    force=force)
  except Exception as e:  # pylint: disable=broad-except
    if not _no_space(e):
      raise
    good = mgr.latest_step()
    raise CheckpointError(
        f"no space left on the device of {mgr.directory} while saving step {step}; "
        f"the last good checkpoint is {'step ' + str(good) if good is not None else 'none'}. "
        "Free space and rerun the same command.") from None


def _move_aside(mgr: ocp.CheckpointManager, steps, where: str) -> epath.Path:
  """Moves step dirs to `WORKDIR/<where>/STEP[.N]` (process 0), then syncs."""
  dest = epath.Path(mgr.directory).parent / where
  if jax.process_index() == 0:
    dest.mkdir(parents=True, exist_ok=True)
    for s in steps:
      target = dest / str(s)
      if target.exists():
        target = dest / f"{s}.{int(time.time())}"
      (epath.Path(mgr.directory) / str(s)).rename(target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"jaxseg_move_{where}")
  mgr.reload()
  return dest


def quarantine(mgr: ocp.CheckpointManager, steps, where: str = "checkpoints_diverged"
               ) -> epath.Path:
  """Moves `steps` out of the way of the next resume; nothing is deleted."""
  return _move_aside(mgr, sorted(steps), where)


@contextlib.contextmanager
def _quiet():
  """Hides orbax's warning that an item dir (read directly, as here) has no
  step-level `_CHECKPOINT_METADATA` of its own."""
  absl = logging.getLogger("absl")
  level = absl.level
  absl.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl.setLevel(level)


def state_metadata(mgr: ocp.CheckpointManager, step: int) -> dict[str, tuple]:
  """"a/b/c" -> (shape, dtype) of every array of a saved state."""
  item = epath.Path(mgr.directory) / str(step) / "state"
  with _quiet(), ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(item)
  meta = getattr(meta, "item_metadata", meta)
  meta = getattr(meta, "tree", meta)
  return {optim.param_path(p): (tuple(m.shape), np.dtype(m.dtype)) for p, m in
          jax.tree_util.tree_leaves_with_path(meta) if hasattr(m, "shape")}


def mismatches(saved: dict[str, tuple], abstract: Any) -> list[str]:
  """What stops a saved state (`state_metadata`) from restoring into `abstract`:
  missing, unexpected and differently shaped arrays."""
  want = {optim.param_path(p): (tuple(a.shape), np.dtype(a.dtype))
          for p, a in jax.tree_util.tree_leaves_with_path(abstract)}
  out = [f"{k}: missing in the checkpoint" for k in want if k not in saved]
  out += [f"{k}: in the checkpoint, not in this run" for k in saved if k not in want]
  out += [f"{k}: saved {saved[k][0]} {saved[k][1]}, this run {v[0]} {v[1]}"
          for k, v in want.items() if k in saved and saved[k][0] != v[0]]
  return out


def restore(mgr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
  """Restores the latest (or given) step into `abstract_state`'s shardings, or
  None when there is no checkpoint."""
  step = mgr.latest_step() if step is None else step
  if step is None:
    return None
  return mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))["state"]


def restore_newest_good(mgr: ocp.CheckpointManager, abstract_state: Any,
                        check=None):
  """The newest step that restores, or None when there is none.

  A step whose metadata or arrays cannot be read is moved to
  `checkpoints_corrupt/` with a warning naming it, and the previous one is
  tried. `check(step, saved metadata)` may raise (e.g. a state of another
  shape: that is the run's config, not a corrupt file).
  """
  for step in sorted(mgr.all_steps(), reverse=True):
    path = epath.Path(mgr.directory) / str(step)
    try:
      saved = state_metadata(mgr, step)
    except Exception as e:  # pylint: disable=broad-except
      _corrupt(mgr, step, path, e)
      continue
    if check is not None:
      check(step, saved)
    try:
      return restore(mgr, abstract_state, step)
    except Exception as e:  # pylint: disable=broad-except
      _corrupt(mgr, step, path, e)
  return None


def _corrupt(mgr, step: int, path, exc: Exception) -> None:
  dest = _move_aside(mgr, [step], "checkpoints_corrupt")
  logging.warning("checkpoint %s does not restore (%s: %s); moved it to %s and trying the "
                  "previous one.", path, type(exc).__name__, str(exc).splitlines()[0][:200]
                  if str(exc) else "", dest)


def _steps(directory) -> list[int]:
  """Sorted finished step numbers under a `checkpoints/` dir (orbax's
  in-progress `N.orbax-checkpoint-tmp-*` dirs do not count)."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(d.name) for d in directory.iterdir() if re.fullmatch(r"\d+", d.name))


def latest_step(workdir) -> int | None:
  """The newest finished checkpoint step of a run's workdir, or None."""
  return max(_steps(epath.Path(workdir) / "checkpoints"), default=None)


def _resolve(path) -> tuple[epath.Path, int]:
  """Accepts a workdir, its `checkpoints/` dir or one step's dir."""
  p = _absolute(path)
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


def load_params(path) -> Any:
  """Params (host numpy) of the latest checkpoint under `path`: its weight
  average `ema_params` where it keeps one (what the run evaluated)."""
  root, step = _resolve(path)
  item = root / str(step) / "state"
  with _quiet(), ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(item)
    meta = getattr(meta, "item_metadata", meta)
    meta = getattr(meta, "tree", meta)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    key = "ema_params" if "ema_params" in meta else "params"
    abstract = {key: jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        dict(meta[key]))}
    restored = ckptr.restore(item, args=ocp.args.PyTreeRestore(
        item=abstract, partial_restore=True,
        restore_args=jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), abstract)))
  logging.info("init_from: loaded %s of step %d from %s", key, step, root)
  return jax.tree.map(np.asarray, restored[key])


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
