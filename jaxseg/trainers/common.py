"""The train loop every method shares, read top to bottom in sections.

mesh → input → model → optimizer → train state → checkpoint / resume / cold
start → compiled update → evaluation → loop. A method (PSL, RSS, ...) supplies
only its loss: `loss_fn(params, batch, rng, step) -> (loss, metrics)`, built by
a `make_loss(config=, apply_fn=, info=, mesh=)` factory and bound before `jit`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from jaxseg import checkpoint as ckpt_lib
from jaxseg import data as data_lib
from jaxseg.data import statistics as data_statistics
from jaxseg import models as models_lib
from jaxseg import optim as optim_lib
from jaxseg import parallel
from jaxseg import plots
from jaxseg.evaluation import semantic
from jaxseg.trainers import writer as writer_lib

# ImageNet statistics, as the ConvNeXt-V2 (and most segmentation) recipes use.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255

LossFn = Callable[[Any, dict[str, jax.Array], jax.Array, jax.Array],
                  tuple[jax.Array, dict]]
MakeLoss = Callable[..., LossFn]


def normalize_images(images: jax.Array) -> jax.Array:
  """uint8 (..., 3) -> float32 standardised with the ImageNet mean and std."""
  return (images.astype(jnp.float32) - IMAGE_MEAN) / IMAGE_STD


def make_apply_fn(model):
  """(params, uint8 images, train, rng) -> logits; normalisation included."""

  def apply_fn(params, images, *, train, rng=None):
    return model.apply({"params": params}, normalize_images(images), train=train,
                       rngs={"dropout": rng} if train else None)

  return apply_fn


def init_train_state(params, *, tx, rng) -> dict[str, Any]:
  """The train state is a plain pytree (orbax saves it as it is)."""
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": tx.init(params), "rng": jax.random.key_data(rng)}


def make_update_fn(loss_fn: LossFn, tx: optax.GradientTransformation, schedule):
  """One optimisation step: (state, batch) -> (state, metrics, finite).

  The per-step RNG is `fold_in(state.rng, state.step)`, so a resumed run draws
  the same randomness as an uninterrupted one. The loss also gets the step (for
  schedules inside the loss, e.g. RSS's coarse-to-fine scales).
  """

  def update_fn(state, batch):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch, step_rng, state["step"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = {"step": state["step"] + 1,
           "params": optax.apply_updates(state["params"], updates),
           "opt_state": opt_state, "rng": state["rng"]}
    # A non-finite step leaves the state as it was; the host stops the run.
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = {"train/loss": loss, "train/grad_norm": grad_norm,
               "train/lr": schedule(state["step"]), **aux}
    return new, metrics, finite

  return update_fn


ROLLOUTS = ("auto", "scan", "unroll")


def rollout_unrolled(rollout: str) -> bool:
  """A method's `rollout` option: "scan" (`lax.scan`, one compiled body),
  "unroll" (every step inlined) or "auto" = unroll on CPU, where XLA runs the
  convolutions in a while-loop body 5-10× slower (CiSS-Net on CamVid, T = 1:
  3578 vs 728 ms per step; ACIS BL at L = 5: 10.1 vs 0.8 s). Unrolled, XLA
  also keeps every step's buffers alive: use "scan" where memory matters."""
  if rollout not in ROLLOUTS:
    raise ValueError(f"rollout={rollout!r} is unknown; choose from {ROLLOUTS}.")
  if rollout == "auto":
    return jax.default_backend() == "cpu"
  return rollout == "unroll"


CLASS_WEIGHTINGS = {"none": None, "median_frequency": 1.0, "sqrt_median_frequency": 0.5}


def class_weights(c: ml_collections.ConfigDict, source, info) -> tuple[float, ...] | None:
  """Explicit `data.class_weights`, or median-frequency weights of the labels."""
  if c.data.class_weights is not None:
    return tuple(float(w) for w in c.data.class_weights)
  power = CLASS_WEIGHTINGS[c.data.class_weighting]
  if power is None:
    return None
  w = data_statistics.median_frequency_weights(
      source, num_classes=info.num_classes, ignore_index=info.ignore_index, power=power)
  return tuple(float(x) for x in w)


def validate_config(c: ml_collections.ConfigDict, info, mesh) -> None:
  """Checks that need the data: fail with the culprit key before compiling."""
  if c.model.name == "sfpnext":
    for name, size in (("data.crop_size", c.data.crop_size),
                       ("eval.crop_size", c.eval.crop_size or c.data.crop_size)):
      if any(s % 32 for s in size):
        raise ValueError(f"config.{name}={tuple(size)} must be divisible by 32 "
                         "(the backbone's output stride).")
  parallel.check_batch_size(c.batch_size, mesh)
  if c.data.class_weights is not None and len(c.data.class_weights) != info.num_classes:
    raise ValueError(f"config.data.class_weights has {len(c.data.class_weights)} "
                     f"entries; the dataset has {info.num_classes} classes.")
  if c.data.class_weighting not in CLASS_WEIGHTINGS:
    raise ValueError(f"config.data.class_weighting={c.data.class_weighting!r} is "
                     f"unknown; choose from {sorted(CLASS_WEIGHTINGS)}.")
  if c.total_steps <= 0 or c.log_every <= 0:
    raise ValueError("config.total_steps and config.log_every must be positive.")


@dataclasses.dataclass(frozen=True)
class Hooks:
  """What a method may change in the shared loop besides its loss (all optional).

  build_model(config, info) -> module        default: `models.build_model`
  init_params(fresh_host_params, config) -> params
                                             default: cold start from `init_from`
  make_predict(model, config) -> (predict_fn(params, uint8 images) -> logits
      (n, h, w, K·C), heads (K names), main head index)
                                             default: the model's logits
  make_panel(model, config, info) -> fn(params, images, labels) -> uint8 (H, W, 3)
                                             default: image | label | prediction
  """
  build_model: Callable[..., Any] | None = None
  init_params: Callable[..., Any] | None = None
  make_predict: Callable[..., Any] | None = None
  make_panel: Callable[..., Any] | None = None


def cold_start(params, config: ml_collections.ConfigDict):
  """Params of `config.init_from` merged into `params` (classifier re-initialised)."""
  if not config.init_from:
    return params
  loaded = ckpt_lib.load_params(config.init_from)
  merged, reinit = ckpt_lib.merge_init(
      params, loaded, reinit_pattern=models_lib.CLASSIFIER_PATTERN)
  logging.info("cold start from %s; re-initialised: %s", config.init_from,
               reinit or "nothing")
  return merged


@dataclasses.dataclass
class Run:
  """What the loop built: handy for tests and for methods that extend it."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  mesh: jax.sharding.Mesh
  info: Any
  model: Any
  state: dict[str, Any]
  metrics: dict[str, float]


def evaluate(params, *, predict_fn, source, info, config, max_examples: int = 0,
             panel_examples: int = 0, desc: str = "eval",
             heads: tuple[str, ...] = ("",), main_head: int = 0):
  """Single-scale mIoU over `source`, sliding windows where an image is larger.

  `predict_fn` may return several predictions as `len(heads)` blocks of C
  logits (CiSS-Net's steps t = 0, 2, ...): each named head adds `miou_NAME`,
  `pixel_acc_NAME` and `mean_acc_NAME`; the plain keys (and the panel) are
  those of `heads[main_head]`. Examples with an "instances" map (ids > 0 per
  object, Cityscapes-style) add the instance-level `iiou` of the main head.
  Returns (metrics dict, panel image or None).
  """
  crop = tuple(config.eval.crop_size or config.data.crop_size)
  stride = tuple(max(1, int(s * config.eval.stride_fraction)) for s in crop)
  n = len(source) if not max_examples else min(max_examples, len(source))
  k = len(heads)
  cms = np.zeros((k, info.num_classes, info.num_classes), np.int64)
  inst_rows, fps = [], np.zeros(info.num_classes, np.int64)
  # Spread the panel over the split: neighbouring video frames look alike.
  panel_ids = set(np.linspace(0, n - 1, panel_examples).round().astype(int).tolist()
                  if panel_examples else [])
  shown = []
  for i in tqdm.trange(n, desc=desc, leave=False, disable=jax.process_index() != 0):
    ex = source[i]
    logits = semantic.sliding_window_logits(
        functools.partial(predict_fn, params), ex["image"], crop_size=crop,
        stride=stride, num_classes=k * info.num_classes, batch_size=config.eval.batch_size)
    preds = logits.reshape(*logits.shape[:2], k, info.num_classes).argmax(-1)
    label = np.asarray(ex["label"]).astype(np.int32)
    if "instances" in ex:  # instance ids (Cityscapes-style): iIoU of the main head
      inst, fp = semantic.instance_stats(preds[..., main_head], label, ex["instances"],
                                         num_classes=info.num_classes,
                                         ignore_index=info.ignore_index)
      inst_rows.append(inst)
      fps += fp
    for h in range(k):
      cms[h] += np.asarray(semantic.confusion_matrix(
          preds[..., h], label, num_classes=info.num_classes,
          ignore_index=info.ignore_index))
    if i in panel_ids:
      shown.append((ex["image"], ex["label"], preds[..., main_head]))
  panel = None
  if shown:
    panel = plots.prediction_panel(*zip(*shown), num_classes=info.num_classes,
                                   ignore_index=info.ignore_index)
  metrics = semantic.metrics_from_confusion(cms[main_head], info.class_names)
  if inst_rows:
    metrics.update(semantic.iiou_from_stats(np.concatenate(inst_rows), fps,
                                            info.num_classes, info.class_names))
  for name, cm in zip(heads, cms):
    if name:
      m = semantic.metrics_from_confusion(cm)
      metrics.update({f"{key}_{name}": m[key] for key in ("miou", "pixel_acc", "mean_acc")})
  return metrics, panel


def panel_examples(source, config, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
  """`eval.panel_examples` val images spread over the split, centre-cropped
  (or zero/ignore-padded) to the eval crop: (n, h, w, 3), (n, h, w)."""
  crop = tuple(config.eval.crop_size or config.data.crop_size)
  n = config.eval.panel_examples
  ids = np.linspace(0, len(source) - 1, n).round().astype(int)
  images, labels = [], []
  for i in ids:
    ex = source[int(i)]
    img, lab = np.asarray(ex["image"]), np.asarray(ex["label"])
    y0, x0 = (max(0, (s - c) // 2) for s, c in zip(lab.shape, crop))
    img, lab = img[y0:y0 + crop[0], x0:x0 + crop[1]], lab[y0:y0 + crop[0], x0:x0 + crop[1]]
    pi = np.zeros((*crop, 3), img.dtype)
    pl = np.full(crop, ignore_index, lab.dtype)
    pi[:img.shape[0], :img.shape[1]], pl[:lab.shape[0], :lab.shape[1]] = img, lab
    images.append(pi)
    labels.append(pl)
  return np.stack(images), np.stack(labels)


def device_batch(host_batch: dict, *, mesh) -> dict[str, jax.Array]:
  """Process-local numpy batch -> global arrays sharded over `data` (host-only
  leaves such as names are dropped)."""
  batch = data_lib.to_global_array(host_batch, parallel.batch_sharding(mesh))
  return {k: v for k, v in batch.items() if isinstance(v, jax.Array)}


def restore_or_init(mgr, init_state: Callable[[Any], dict], params, train_iter, sharding,
                    *, init_params: Callable[[Any], Any] | None = None) -> dict[str, Any]:
  """The latest checkpoint in `mgr` (train state and data iterator), or a fresh
  state `init_state(params)` with `params` first passed (on the host) through
  `init_params`, e.g. a cold start from another run."""
  if mgr.latest_step() is not None:
    abstract = jax.eval_shape(init_state, params)
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)
    state = ckpt_lib.restore(mgr, abstract, train_iter)
    logging.info("resumed from step %d in %s", int(state["step"]), mgr.directory)
    return state
  if init_params is not None:
    params = jax.device_put(init_params(jax.device_get(params)), sharding)
  return jax.jit(init_state, out_shardings=sharding)(params)


def run_loop(config: ml_collections.ConfigDict, state: dict[str, Any], update, *,
             train_iter, to_device, mgr, writer, run_eval: Callable[[int, dict], dict],
             desc: str = "train") -> tuple[dict[str, Any], dict[str, float]]:
  """Steps `state` to `config.total_steps`: logs, evaluates and checkpoints.

  `update(state, device_batch, step) -> (state, metrics, finite)` is called
  with the host step number it takes (1-based), so a method may switch
  between compiled steps (e.g. ACIS's sequence-length schedule). Metrics must
  hold "train/loss" and "train/grad_norm"; `run_eval(step, state)` returns
  the metrics it wrote. Dispatch stays asynchronous: step s
  is checked for non-finite values while step s + 1 runs. A run that was
  already finished is evaluated once. Returns (state, last eval metrics).
  """
  is_main = jax.process_index() == 0
  start = int(state["step"])
  pending: list[tuple[int, dict, jax.Array]] = []
  last_val: dict[str, float] = {}
  bar = tqdm.tqdm(total=config.total_steps, initial=start, desc=desc,
                  disable=not is_main, dynamic_ncols=True)
  t_log, n_log = time.time(), 0

  def check_finite(upto: int) -> None:
    """Raises on the first non-finite step among those dispatched so far."""
    while pending and pending[0][0] <= upto:
      s, m, ok = pending.pop(0)
      if not bool(ok):
        m = jax.device_get(m)
        good = mgr.latest_step()
        raise FloatingPointError(
            f"non-finite loss or gradients at step {s} (loss={float(m['train/loss'])}, "
            f"grad_norm={float(m['train/grad_norm'])}); stopped. The last good "
            f"checkpoint is {'step ' + str(good) if good is not None else 'none'} in "
            f"{mgr.directory}. Lower config.optim.lr or check the data.")

  history: list[dict] = []
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
    if step % config.eval_every == 0 or step == config.total_steps:
      check_finite(step)
      last_val = run_eval(step, state)
    if step % config.checkpoint_every == 0 or step == config.total_steps:
      check_finite(step)
      ckpt_lib.save(mgr, step, state, train_iter, force=step == config.total_steps)
  bar.close()
  mgr.wait_until_finished()
  if start >= config.total_steps:  # already trained: evaluate what is there
    last_val = run_eval(start, state)
  return state, last_val


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       *, make_loss: MakeLoss, hooks: Hooks = Hooks()) -> Run:
  """Trains `config.total_steps` steps (resuming from `workdir`), evaluates."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0

  # --- Mesh -------------------------------------------------------------------
  mesh = parallel.make_data_mesh()
  repl = parallel.replicated(mesh)

  to_device = functools.partial(device_batch, mesh=mesh)

  # --- Input ------------------------------------------------------------------
  train_source, info = data_lib.get_source(config.data, config.data.train_split)
  val_source, _ = data_lib.get_source(config.data, config.data.val_split)
  validate_config(config, info, mesh)
  info = dataclasses.replace(info, class_weights=class_weights(config, train_source, info))
  if info.class_weights is not None:
    logging.info("class weights: %s", {n: round(w, 3) for n, w in
                                        zip(info.class_names, info.class_weights)})
  train_ds = data_lib.train_dataset_from_config(
      config.data, train_source, global_batch_size=config.batch_size,
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), worker_count=config.data.worker_count)
  train_iter = iter(train_ds)
  logging.info("data: %s, %d train / %d val examples, %d classes", info.name,
               len(train_source), len(val_source), info.num_classes)

  # --- Model ------------------------------------------------------------------
  model = (hooks.build_model(config, info) if hooks.build_model
           else models_lib.build_model(config.model, info.num_classes))
  crop = tuple(config.data.crop_size)

  def init_params(rng):
    dummy = jnp.zeros((1, *crop, 3), jnp.float32)
    return model.init({"params": rng}, dummy, train=False)["params"]

  rng = jax.random.key(config.seed)
  params = jax.jit(init_params, out_shardings=repl)(rng)
  logging.info("model: %s/%s, %.2fM parameters", config.model.name,
               config.model.backbone, models_lib.param_count(params) / 1e6)

  apply_fn = make_apply_fn(model)

  # --- Optimizer --------------------------------------------------------------
  tx, schedule = optim_lib.make_optimizer(
      config.optim, params, total_steps=config.total_steps,
      classifier_pattern=models_lib.CLASSIFIER_PATTERN)

  # --- Train state: a plain pytree ----------------------------------------------
  init_state = functools.partial(init_train_state, tx=tx,
                                 rng=jax.random.fold_in(rng, 1))

  # --- Checkpoint, resume, cold start -----------------------------------------
  mgr = ckpt_lib.make_manager(workdir, max_to_keep=config.keep_checkpoints,
                              save_every=config.checkpoint_every)
  state = restore_or_init(
      mgr, init_state, params, train_iter, repl,
      init_params=lambda p: (hooks.init_params or cold_start)(p, config))
  del params

  # --- Compiled update ----------------------------------------------------------
  loss_fn = make_loss(config=config, apply_fn=apply_fn, info=info, mesh=mesh)

  update_fn = make_update_fn(loss_fn, tx, schedule)
  update = jax.jit(update_fn, donate_argnums=0, out_shardings=(repl, repl, repl))

  if hooks.make_predict:
    predict_fn, heads, main_head = hooks.make_predict(model, config)
  else:
    predict_fn, heads, main_head = jax.jit(
        lambda params, images: apply_fn(params, images, train=False)), ("",), 0
  panel_fn = hooks.make_panel(model, config, info) if hooks.make_panel else None

  # --- Evaluation -----------------------------------------------------------------
  writer = writer_lib.MetricWriter(workdir)

  def run_eval(step: int, state) -> dict[str, float]:
    t0 = time.time()
    metrics, panel = evaluate(
        state["params"], predict_fn=predict_fn, source=val_source, info=info,
        config=config, max_examples=config.eval.max_examples,
        panel_examples=0 if panel_fn else config.eval.panel_examples,
        desc=f"eval@{step}", heads=heads, main_head=main_head)
    if panel_fn and config.eval.panel_examples:
      panel = panel_fn(state["params"], *panel_examples(val_source, config, info.ignore_index))
    out = {f"val/{k}": v for k, v in metrics.items()}
    out["val/seconds"] = time.time() - t0
    writer.write(step, out)
    if panel is not None and is_main:
      plots.save_png(workdir / "panels" / f"step_{step:06d}.png", panel)
      writer.write_image(step, "val/panel", panel)
    logging.info("step %d: val mIoU %.4f, pixel acc %.4f", step, out["val/miou"],
                 out["val/pixel_acc"])
    return out

  # --- Loop -------------------------------------------------------------------------
  state, last_val = run_loop(config, state, lambda st, batch, _: update(st, batch),
                             train_iter=train_iter, to_device=to_device, mgr=mgr,
                             writer=writer, run_eval=run_eval)
  writer.flush()
  if is_main:
    plots.learning_curves({workdir.name: writer_lib.read_metrics(workdir)},
                          workdir / "learning_curve.png",
                          title=f"{config.trainer} on {info.name}")
  writer.close()
  mgr.close()
  return Run(config=config, workdir=workdir, mesh=mesh, info=info, model=model,
             state=state, metrics=last_val)
