"""The one loop every method and every stage runs.

`open_run(config, workdir)` builds what does not depend on the method: the
mesh, the data sources and the train iterator; `Run.train(task)` then takes a
method's `Task` (its params, optimizer, step functions and evaluation) through
checkpoint / resume / cold start → compiled update → loop (logging,
evaluation, checkpoints, the non-finite stop) → learning curves, and returns
the `Result` every trainer returns.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Hashable

import jax
import ml_collections
import numpy as np
import optax
import tqdm
from etils import epath

from jaxseg import checkpoint as ckpt_lib
from jaxseg import data as data_lib
from jaxseg import parallel
from jaxseg import plots
from jaxseg.trainers import cluster
from jaxseg.trainers import resume
from jaxseg.trainers import step as step_lib
from jaxseg.trainers import writer as writer_lib


@dataclasses.dataclass(frozen=True)
class Result:
  """What every trainer returns: where the run lives, its last step, its last
  val metrics (`val/...`) and its final params on the host (the weight
  average with `optim.ema_decay`: what was evaluated)."""
  workdir: epath.Path
  step: int
  metrics: dict[str, float]
  params: Any = None


@dataclasses.dataclass(frozen=True)
class Task:
  """What one run trains; a method's trainer builds it.

  params        fresh params (host or device); replaced by a checkpoint on resume
  tx            the optimizer over `params` (`optim.per_group` for several groups)
  grads         kind -> the step contract `(params, batch, rng, step) -> (loss,
                grads, metrics)` of that kind
  step_kind     host step (1-based) -> a hashable kind; one compiled update per
                kind (ACIS's critic / actor steps × sequence lengths; default:
                one kind, None)
  evaluate      (step, device params) -> (metrics without the `val/` prefix,
                panel image or None)
  rng           the state's RNG; step s draws `fold_in(rng, s)`
  schedule      the learning-rate schedule, logged as `train/lr`
  init_params   host params -> host params for a fresh state (a cold start)
  batch_keys    the batch entries the step needs (None: every array)
  log_keys      the val metrics logged to the console (None: all)
  curve_keys    the metrics plotted in learning_curve.png (None: the default)
  title         the plot's title
  """
  params: Any
  tx: optax.GradientTransformation
  grads: Callable[[Hashable], Callable]
  evaluate: Callable[[int, Any], tuple[dict, np.ndarray | None]]
  rng: jax.Array
  step_kind: Callable[[int], Hashable] = lambda step: None
  schedule: Callable | None = None
  init_params: Callable[[Any], Any] | None = None
  batch_keys: tuple[str, ...] | None = None
  log_keys: tuple[str, ...] | None = None
  curve_keys: tuple[str, ...] | None = None
  title: str = ""


def device_batch(host_batch: dict, *, mesh, keys=None) -> dict[str, jax.Array]:
  """Process-local numpy batch -> global arrays sharded over `data` (host-only
  leaves such as names are dropped; `keys` keeps only those)."""
  batch = data_lib.to_global_array(host_batch, parallel.batch_sharding(mesh))
  return {k: v for k, v in batch.items() if isinstance(v, jax.Array)
          and (keys is None or k in keys)}


def validate_loop_config(config: ml_collections.ConfigDict) -> None:
  """The loop's own fields, checked before any data is read or anything compiles."""
  for key in ("total_steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
              "keep_checkpoints"):
    if int(config[key]) <= 0:
      raise ValueError(f"config.{key}={config[key]} must be a positive integer.")
  if not 0.0 <= config.optim.ema_decay < 1.0:
    raise ValueError(f"config.optim.ema_decay={config.optim.ema_decay} must be in [0, 1) "
                     "(0: no weight average).")


def run_loop(config: ml_collections.ConfigDict, state: dict[str, Any], update, *,
             train_iter, to_device, mgr, writer, run_eval: Callable[[int, dict], dict],
             desc: str = "train") -> tuple[dict[str, Any], dict[str, float]]:
  """Steps `state` to `config.total_steps`: logs, evaluates and checkpoints.

  `update(state, device_batch, step) -> (state, metrics, finite)` is called
  with the host step number it takes (1-based), so a method may switch
  between compiled steps (e.g. ACIS's sequence-length schedule). Metrics must
  hold "train/loss", "train/grad_norm" and "train/update_ratio";
  `run_eval(step, state)` returns the metrics it wrote. Dispatch stays
  asynchronous: step s is checked for non-finite values while step s + 1
  runs; a non-finite step stops the run (`resume.diverged` says from where
  to restart). SIGTERM / Ctrl-C save a checkpoint at the next step and raise
  `cluster.Preempted` (`cluster.StopRequest`). A run that was already
  finished is evaluated once. Returns (state, last eval metrics).
  """
  start = int(state["step"])
  pending: list[tuple[int, dict, jax.Array]] = []
  norms: dict[int, tuple[float, float]] = {}  # step -> (grad norm, update ratio)
  last_val: dict[str, float] = {}
  bar = tqdm.tqdm(total=config.total_steps, initial=start, desc=desc,
                  disable=not cluster.is_main(), dynamic_ncols=True)
  t_log, n_log = time.time(), 0

  def check_finite(upto: int) -> None:
    """Raises on the first non-finite step among those dispatched so far."""
    while pending and pending[0][0] <= upto:
      s, m, ok = pending.pop(0)
      g, r = jax.device_get((m["train/grad_norm"], m["train/update_ratio"]))
      norms[s] = (float(g), float(r))
      if not bool(ok):
        m = jax.device_get(m)
        raise resume.diverged(mgr, bad_step=s, loss=float(m["train/loss"]),
                              grad_norm=float(m["train/grad_norm"]), history=norms)

  history: list[dict] = []
  with cluster.StopRequest() as stop:
    for step in range(start + 1, config.total_steps + 1):
      batch = to_device(next(train_iter))
      state, metrics, finite = update(state, batch, step)
      pending.append((step, metrics, finite))
      history.append(metrics)
      check_finite(step - 1)  # one step behind: keeps dispatch asynchronous
      n_log += 1
      bar.update(1)
      if step % config.log_every == 0 or step == config.total_steps:
        check_finite(step)
        keys = set().union(*history)  # a method may log some keys on some steps only
        avg = {k: float(np.mean([float(h[k]) for h in history if k in h])) for k in keys}
        dt = time.time() - t_log
        avg["train/steps_per_s"] = n_log / dt
        avg["train/images_per_s"] = n_log * config.batch_size / dt
        writer.write(step, avg)
        bar.set_postfix(loss=f"{avg['train/loss']:.4f}")
        history, t_log, n_log = [], time.time(), 0
      # Saved before it is evaluated: an evaluation that fails loses no
      # training, and the rerun evaluates the saved state.
      if step % config.checkpoint_every == 0 or step == config.total_steps:
        check_finite(step)
        ckpt_lib.save(mgr, step, state, force=step == config.total_steps)
      if step % config.eval_every == 0 or step == config.total_steps:
        check_finite(step)
        last_val = run_eval(step, state)
      if step < config.total_steps and stop.stop(step):
        check_finite(step)
        ckpt_lib.save(mgr, step, state, force=True)
        mgr.wait_until_finished()
        bar.close()
        raise cluster.Preempted(step, mgr.directory)
  bar.close()
  mgr.wait_until_finished()
  if start >= config.total_steps:  # already trained: evaluate what is there
    last_val = run_eval(start, state)
  return state, last_val


@dataclasses.dataclass
class Run:
  """A run's method-independent parts (see `open_run`); `train(task)` runs it."""
  config: ml_collections.ConfigDict
  workdir: epath.Path
  mesh: jax.sharding.Mesh
  train_source: Any
  val_source: Any
  info: Any

  def train(self, task: Task) -> Result:
    """Trains `task` to `config.total_steps` (resuming from `workdir`), evaluates."""
    config, workdir, mesh = self.config, self.workdir, self.mesh
    repl = parallel.replicated(mesh)
    mgr = ckpt_lib.make_manager(workdir, max_to_keep=config.keep_checkpoints,
                                save_every=config.checkpoint_every)
    old = resume.read_config(workdir)
    changes = resume.config_changes(old, config) if old is not None else []
    ema_decay = float(config.optim.ema_decay)
    init = lambda p: step_lib.init_state(p, tx=task.tx, rng=task.rng,  # noqa: E731
                                         ema=ema_decay > 0)
    state = resume.restore_or_init(mgr, init, task.params, repl, init_params=task.init_params,
                                   check_factory=resume.fit_check(workdir, changes))
    start = int(state["step"])
    if changes and start:
      logging.warning("%s resumes at step %d with %d changed config fields: %s",
                      workdir, start, len(changes), "; ".join(changes))
    resume.write_config(workdir, config)
    train_iter = iter(data_lib.train_dataset_from_config(
        config.data, self.train_source, global_batch_size=config.batch_size,
        seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), worker_count=config.data.worker_count,
        start_batch=start))
    writer = writer_lib.MetricWriter(workdir, resume_step=start)
    if cluster.is_main():
      logging.info("%s: checkpoints in %s, metrics in %s, config in %s; watch with "
                   "`tensorboard --logdir %s`", workdir.name, mgr.directory, writer.path,
                   workdir / resume.CONFIG_FILE, workdir)

    compiled = {}

    def update(st, batch, step):
      kind = task.step_kind(step)
      if kind not in compiled:
        compiled[kind] = jax.jit(step_lib.make_update(task.grads(kind), task.tx, task.schedule,
                                                      ema_decay=ema_decay),
                                 donate_argnums=0, out_shardings=(repl, repl, repl))
      return compiled[kind](st, batch)

    def run_eval(step: int, st) -> dict[str, float]:
      t0 = time.time()
      metrics, panel = task.evaluate(step, cluster.local_copy(step_lib.eval_params(st)))
      out = {f"val/{k}": v for k, v in metrics.items()}
      out["val/seconds"] = time.time() - t0
      writer.write(step, out)
      if panel is not None and cluster.is_main():
        plots.save_png(workdir / "panels" / f"step_{step:06d}.png", panel)
        writer.write_image(step, "val/panel", panel)
      keys = [f"val/{k}" for k in task.log_keys] if task.log_keys else list(out)
      if cluster.is_main():
        logging.info("%s step %d: %s", workdir.name, step,
                     ", ".join(f"{k.removeprefix('val/')} {out[k]:.4f}" for k in keys))
      return out

    to_device = lambda b: device_batch(b, mesh=mesh, keys=task.batch_keys)  # noqa: E731
    state, last_val = run_loop(config, state, update, train_iter=train_iter,
                               to_device=to_device, mgr=mgr, writer=writer,
                               run_eval=run_eval, desc=workdir.name)
    writer.flush()
    if cluster.is_main():
      kw = {"keys": task.curve_keys} if task.curve_keys else {}
      plots.learning_curves({workdir.name: writer.records}, workdir / "learning_curve.png",
                            title=task.title, **kw)
    writer.close()
    mgr.close()
    return Result(workdir=workdir, step=int(state["step"]), metrics=last_val,
                  params=jax.device_get(step_lib.eval_params(state)))


def read_sources(config: ml_collections.ConfigDict, *,
                 val_data: ml_collections.ConfigDict | None = None) -> tuple:
  """(train source, val source, info) of `config.data` (`val_data`: read the
  val split with another data config). With several processes, process 0
  reads first (it may prepare a dataset the others then find ready)."""
  if not cluster.is_main():
    cluster.barrier("jaxseg_sources")
  train_source, info = data_lib.get_source(config.data, config.data.train_split)
  val_source, _ = data_lib.get_source(val_data or config.data, config.data.val_split)
  if cluster.is_main():
    cluster.barrier("jaxseg_sources")
  logging.info("data: %s, %d train / %d val examples, %d classes", info.name,
               len(train_source), len(val_source), info.num_classes)
  return train_source, val_source, info


def open_run(config: ml_collections.ConfigDict, workdir, *, sources: tuple | None = None
             ) -> Run:
  """The mesh and the data (`sources` from `read_sources`, read here when
  None) of a run in `workdir`, which is created."""
  validate_loop_config(config)
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  train_source, val_source, info = sources or read_sources(config)
  return Run(config=config, workdir=workdir, mesh=parallel.make_data_mesh(),
             train_source=train_source, val_source=val_source, info=info)
