"""What a run finds in its workdir, and what it leaves there for the next one.

- `check_config`: the resolved config is kept as `WORKDIR/config.json`; a
  resumed run names every field that changed, and refuses when the saved
  state no longer fits (another model, optimizer, ...), naming the arrays.
- `restore_or_init`: the newest checkpoint that restores (corrupt ones are
  moved aside, `checkpoint.restore_newest_good`), or a fresh state.
- `divergence_onset` / `diverged`: when a step goes non-finite, the steps
  whose parameters were already blowing up are found from the gradient norms,
  their checkpoints moved to `checkpoints_diverged/`, and the message says
  which step the rerun starts from.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from etils import epath

from jaxseg import checkpoint as ckpt_lib

CONFIG_FILE = "config.json"
# A step whose gradient norm exceeds this multiple of the median before it
# starts a divergence (lr 1e30: ~1e28; a healthy run's spikes: < 10).
DIVERGENCE_FACTOR = 1e3


def _flat(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  d = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
      else config
  out = {}

  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(f"{prefix}{k}.", v)
      else:
        out[prefix + k] = v
  walk("", d)
  return out


def config_changes(old: dict, new: ml_collections.ConfigDict) -> list[str]:
  """"key: old -> new" for every field that differs (and added / removed keys)."""
  a, b = _flat(old), _flat(new)
  return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
          for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def read_config(workdir) -> dict | None:
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError:
    logging.warning("%s is not JSON; replaced by this run's config", path)
    return None


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  if jax.process_index() == 0:
    path = epath.Path(workdir) / CONFIG_FILE
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def fit_check(workdir, changes: list[str]) -> Callable[[int, dict], None]:
  """`check(step, saved metadata)` for `restore_newest_good`, given the
  abstract state: raises naming the changed config fields and the arrays that
  no longer fit."""

  def make(abstract):
    def check(step, saved):
      bad = ckpt_lib.mismatches(saved, abstract)
      if bad:
        raise ckpt_lib.CheckpointError(
            f"cannot resume {workdir} from step {step}: the saved state does not fit this "
            f"run's ({len(bad)} arrays differ, e.g. {'; '.join(bad[:3])}). Changed config "
            f"fields: {'; '.join(changes) or 'none recorded'}. Use a new --workdir, or "
            f"--config.init_from={workdir} to start a new run from its parameters.")
    return check
  return make


def restore_or_init(mgr, init_state: Callable[[Any], dict], params, sharding, *,
                    init_params: Callable[[Any], Any] | None = None,
                    check_factory=None) -> dict[str, Any]:
  """The newest checkpoint in `mgr` that restores, or a fresh state
  `init_state(params)` with `params` first passed (on the host) through
  `init_params`, e.g. a cold start from another run."""
  if mgr.all_steps():
    abstract = jax.eval_shape(init_state, params)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
    state = ckpt_lib.restore_newest_good(
        mgr, abstract, check=check_factory(abstract) if check_factory else None)
    if state is not None:
      logging.info("resumed from step %d in %s", int(state["step"]), mgr.directory)
      return state
    logging.warning("no checkpoint in %s restores: starting afresh", mgr.directory)
  if init_params is not None:
    params = jax.device_put(init_params(jax.device_get(params)), sharding)
  return jax.jit(init_state, out_shardings=sharding)(params)


def divergence_onset(history: dict[int, tuple[float, float]], bad_step: int,
                     factor: float = DIVERGENCE_FACTOR) -> tuple[int, int] | None:
  """(first diverging step, first checkpoint it spoils), or None.

  `history`: step -> (gradient norm, ||Δθ|| / ||θ||) of this process's steps
  before the non-finite `bad_step`. A step t diverges when its update was
  larger than the parameters it changed (ratio > 1; a healthy step moves
  them by ~1e-3): its own checkpoint t is the first spoilt one. Or when its
  gradient norm is `factor` × the median of the steps before it: the
  parameters it differentiated, checkpoint t - 1, were already off. A NaN
  with no such warning (a bad batch) spoils no earlier checkpoint.
  """
  steps = sorted(s for s in history if s < bad_step)
  for i, s in enumerate(steps):
    g, ratio = history[s]
    if i and g > factor * float(np.median([history[t][0] for t in steps[:i]])):
      return s, s - 1
    if ratio > 1:
      return s, s
  return None


def diverged(mgr, *, bad_step: int, loss: float, grad_norm: float,
             history: dict[int, tuple[float, float]]) -> FloatingPointError:
  """Moves the checkpoints saved after the divergence began out of the resume
  path; returns the error that says what happened and where the rerun starts."""
  found = divergence_onset(history, bad_step)
  msg = f"non-finite loss or gradients at step {bad_step} (loss={loss}, grad_norm={grad_norm})"
  if found is not None:
    onset, spoilt = found
    g, ratio = history[onset]
    msg += (f"; the divergence began at step {onset} (grad norm {g:.3g}, update / "
            f"parameter norm {ratio:.3g})")
    suspect = [s for s in mgr.all_steps() if s >= spoilt]
    if suspect:
      where = ckpt_lib.quarantine(mgr, suspect)
      msg += (f". The checkpoints saved from then on (steps {suspect}) were moved to "
              f"{where}")
  good = mgr.latest_step()
  msg += (f". The last good checkpoint is step {good} in {mgr.directory}: rerunning "
          "resumes there" if good is not None
          else ". No good checkpoint: rerunning starts afresh")
  return FloatingPointError(msg + "; lower config.optim.lr or check the data.")
