"""Many processes, one program: start-up, each process's share of evaluation,
exact reductions across processes, and preemption.

JAX's multi-controller runtime is the engine: every process runs the same
`python -m jaxseg.main ...`, `jax.distributed` connects them, and one global
mesh spans every process's devices. Training needs nothing else (the batch is a
global array, `loop.device_batch`). Evaluation runs on each process's own
device with a process-local copy of the (replicated) params, over its share of
the split (`share`), and the host-side sums are combined exactly
(`sum_over_processes`, `gather_rows`), so every metric equals the one-process
value bit for bit.
"""
from __future__ import annotations

import logging
import os
import signal
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

MODES = ("auto", "on", "off")
# Explicit settings: flag value, else this environment variable.
ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
       "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def detected_cluster(environ: Mapping[str, str]) -> str | None:
  """The multi-process launcher JAX can read its settings from, or None: SLURM
  (`srun` with several tasks), Open MPI (`mpirun -n N`, N > 1), or a Cloud TPU
  slice whose worker list names several hosts."""
  if "SLURM_STEP_NODELIST" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
    return "SLURM"
  if int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "Open MPI"
  if len(environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    return "Cloud TPU"
  return None


def initialize(mode: str = "auto", *, coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               environ: Mapping[str, str] = os.environ) -> str:
  """Starts `jax.distributed` when this process is one of several; says how.

  mode "off": never. "on": always (JAX detects the cluster; what Cloud TPU pod
  slices need, where detection asks the metadata server). "auto": with an
  explicit coordinator or a process count > 1 (arguments, else `ENV`), or
  under a launcher `detected_cluster` recognises; a plain `python -m
  jaxseg.main` stays one process and never waits for peers.
  """
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r} is unknown; choose from {MODES}.")
  explicit = {
      "coordinator_address": coordinator_address or environ.get(ENV["coordinator_address"]),
      "num_processes": num_processes or _int_env(environ, "num_processes"),
      "process_id": process_id if process_id is not None else _int_env(environ, "process_id"),
  }
  given = explicit["coordinator_address"] or (explicit["num_processes"] or 1) > 1
  cluster = detected_cluster(environ)
  if mode == "off" or (mode == "auto" and not given and cluster is None):
    return "one process"
  if given and None in explicit.values():
    missing = [f"--{k} (or ${ENV[k]})" for k, v in explicit.items() if v is None]
    raise ValueError(f"a multi-process run needs {', '.join(missing)} as well.")
  kwargs = {k: v for k, v in explicit.items() if v is not None}
  jax.distributed.initialize(**kwargs)
  how = "explicit settings" if given else cluster or "JAX's cluster detection"
  return (f"process {jax.process_index()} of {jax.process_count()} ({how}); "
          f"{jax.local_device_count()} local / {jax.device_count()} devices")


def _int_env(environ, key: str) -> int | None:
  value = environ.get(ENV[key])
  return None if value in (None, "") else int(value)


def is_main() -> bool:
  return jax.process_index() == 0


def share(n: int) -> range:
  """This process's examples of a split of `n`: p, p + P, p + 2P, ..."""
  return range(jax.process_index(), n, jax.process_count())


def local_copy(tree: Any) -> Any:
  """Replicated global arrays -> the same values on this process's first device
  (evaluation runs there, outside any collective)."""
  return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x,
                      tree)


def _allgather(x: np.ndarray) -> list[np.ndarray]:
  """Every process's `x` (same dtype and trailing shape; the leading size may
  differ), sent as raw bytes so that int64 / float64 survive JAX's 32-bit
  default."""
  x = np.ascontiguousarray(x)
  if jax.process_count() == 1:
    return [x]
  data = x.tobytes()
  sizes = multihost_utils.process_allgather(np.array([len(data)], np.int32))[:, 0]
  words = np.zeros((int(sizes.max()) + 3) // 4, np.int32)
  words.view(np.uint8)[:len(data)] = np.frombuffer(data, np.uint8)
  every = multihost_utils.process_allgather(words)
  shape = (-1, *x.shape[1:]) if x.ndim else ()
  return [np.frombuffer(row.tobytes()[:size], x.dtype).reshape(shape)
          for row, size in zip(every, sizes)]


def sum_over_processes(x: np.ndarray) -> np.ndarray:
  """The sum over processes of an array of the same shape everywhere (exact for
  integer counts such as confusion matrices)."""
  parts = _allgather(np.asarray(x))
  return parts[0] if len(parts) == 1 else np.sum(parts, axis=0, dtype=np.asarray(x).dtype)


def gather_rows(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Every process's (key, row) pairs, ordered by key (stably: rows of one key
  keep their order): per-example values come back in the split's order, so
  means over them are the one-process means exactly."""
  keys, rows = np.asarray(keys, np.int64), np.asarray(rows)
  all_keys = np.concatenate(_allgather(keys))
  all_rows = np.concatenate(_allgather(rows))
  order = np.argsort(all_keys, kind="stable")
  return all_keys[order], all_rows[order]


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


class Preempted(Exception):
  """Raised after the checkpoint a SIGTERM / Ctrl-C asked for has been saved."""

  def __init__(self, step: int, directory):
    super().__init__(f"stopped by a signal at step {step}; saved a checkpoint there in "
                     f"{directory}. Rerun the same command to resume.")
    self.step = step


class StopRequest:
  """SIGTERM (a preempted VM, SLURM's time limit) or Ctrl-C -> stop at the next
  step boundary, on every process at the same step.

  One process: a flag set by Python handlers. Several: JAX's preemption sync
  point (`reached_preemption_sync_point`, fed by the coordination service's
  SIGTERM notifier), with Ctrl-C forwarded to it as SIGTERM. A second Ctrl-C
  interrupts at once. Use as a context manager; `stop(step)` is called by
  every process at every step.
  """

  def __init__(self):
    self._requested = False
    self._old = {}
    self._multi = jax.process_count() > 1

  def __enter__(self):
    if self._multi:
      self._hook(signal.SIGINT, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    else:
      self._hook(signal.SIGTERM, self._request)
      self._hook(signal.SIGINT, self._request)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._old.items():
      signal.signal(sig, handler)
    self._old = {}

  def _hook(self, sig, handler) -> None:
    try:
      self._old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. a notebook's worker): no handler
      pass

  def _request(self, sig, frame) -> None:
    if self._requested and sig == signal.SIGINT:
      raise KeyboardInterrupt
    self._requested = True
    logging.warning("%s received: saving a checkpoint at the next step boundary "
                    "(Ctrl-C again to abort at once)", signal.Signals(sig).name)

  def stop(self, step: int) -> bool:
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested
