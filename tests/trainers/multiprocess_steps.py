"""One step of each method's compiled update on whatever mesh this process sees.

`compute(mesh)` is called by `test_multiprocess.py` in pytest on a 4-device mesh
and by this module run as one of 2 processes × 2 CPU devices:

    python -m tests.trainers.multiprocess_steps OUT.npz   (with $JAX_COORDINATOR_ADDRESS,
                                                           $JAX_NUM_PROCESSES, $JAX_PROCESS_ID)

It returns (process 0 writes) the host reductions of 64-bit values, the metrics
of a sliding-window evaluation, SyncAN through the explicit `psum` inside
`shard_map` next to the global-batch form, and the loss and a parameter
checksum after one image-level RSS update, one CiSS update and one ACIS
critic + actor update.
"""
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxseg import algorithms, models, optim, parallel, rewards
from jaxseg import config as config_lib
from jaxseg.data import to_global_array
from jaxseg.trainers import acis, ciss
from jaxseg.trainers import step as step_lib


class _Info:
  ignore_index, num_classes, class_weights = 255, 5, None


def _global(x, mesh):
  """The same host array on every process -> a global array sharded over `data`."""
  b = x.shape[0] // jax.process_count()
  local = x[jax.process_index() * b:(jax.process_index() + 1) * b]
  return to_global_array(local, parallel.batch_sharding(mesh))


def _host(tree):
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if a.is_fully_replicated
                      else None, tree)


def _checksum(params) -> np.ndarray:
  leaves = jax.tree.leaves(_host(params))
  return np.array([float(np.sum(np.abs(x.astype(np.float64)))) for x in leaves])


def sync_an(mesh) -> dict:
  r = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
  x = _global(r, mesh)
  via_psum = jax.shard_map(
      functools.partial(rewards.normalize_advantages, axis_name=parallel.DATA_AXIS),
      mesh=mesh, in_specs=P(parallel.DATA_AXIS), out_specs=P(parallel.DATA_AXIS))(x)
  via_jit = jax.jit(rewards.normalize_advantages,
                    out_shardings=parallel.replicated(mesh))(x)
  via_psum = jax.jit(lambda a: a, out_shardings=parallel.replicated(mesh))(via_psum)
  return {"sync_an_psum": _host(via_psum), "sync_an_jit": _host(via_jit)}


def _semantic_setup(**overrides):
  c = config_lib.runlocal(config_lib.default_config())
  c.update_from_flattened_dict({"data.crop_size": (64, 64), "eval.crop_size": (64, 64),
                                "eval.batch_size": 4, **overrides})
  model = models.build_model(c.model, _Info.num_classes)
  params = jax.device_get(model.init({"params": jax.random.key(0)}, jnp.zeros((1, 64, 64, 3)),
                                     train=False)["params"])
  return c, model, params


def evaluation() -> dict:
  """Sliding-window mIoU / iIoU over 5 images of 4 sizes: each process its share."""
  from jaxseg.data import DatasetInfo  # pylint: disable=g-import-not-at-top
  from jaxseg.trainers import semantic  # pylint: disable=g-import-not-at-top
  # One window per forward pass: one compiled shape for all four image sizes.
  c, model, params = _semantic_setup(**{"eval.batch_size": 1})
  rng = np.random.default_rng(1)
  source = []
  for h, w in [(64, 64), (80, 96), (64, 128), (96, 70), (64, 64)]:
    label = rng.integers(0, 5, (h, w)).astype(np.int32)
    label[:4] = 255
    source.append({"image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "label": label,
                   "instances": (label % 3 + 1) * (label < 3)})
  info = DatasetInfo(num_classes=5, class_names=tuple("abcde"), ignore_index=255, name="t")
  apply_fn = algorithms.make_apply_fn(model)
  predict = jax.jit(lambda p, images: apply_fn(p, images, train=False))
  metrics, _ = semantic.evaluate(params, predict_fn=predict, source=source, info=info,
                                 config=c)
  return {f"eval {k}": np.float64(v) for k, v in metrics.items()}


def _semantic_update(name, c, model, params, make_loss, mesh) -> dict:
  """One update of a semantic method's loss on a fixed random batch."""
  tx, schedule = optim.make_optimizer(c.optim, params, total_steps=10)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
           "label": rng.integers(0, 5, (8, 64, 64)).astype(np.int32)}
  repl = parallel.replicated(mesh)
  update = jax.jit(step_lib.make_update(
      algorithms.as_grads_fn(make_loss(c, model=model, info=_Info, mesh=mesh)),
      tx, schedule), out_shardings=(repl, repl, repl))
  state = jax.device_put(step_lib.init_state(params, tx=tx, rng=jax.random.key(1)), repl)
  state, metrics, _ = update(state, {k: _global(v, mesh) for k, v in batch.items()})
  return {f"{name}_loss": _host(metrics["train/loss"]),
          f"{name}_params": _checksum(state["params"])}


def rss_step(mesh) -> dict:
  """One image-level RSS update (the recipe: PSR 1/8, per-class credit, SyncAN
  over the global batch)."""
  from jaxseg.trainers import rss  # pylint: disable=g-import-not-at-top
  c, model, params = _semantic_setup()
  c.update_from_flattened_dict({"trainer": "rss", **config_lib.RSS_VARIANTS["psr_class"]})
  return _semantic_update("rss", c, model, params, rss.make_loss, mesh)


def ciss_step(mesh) -> dict:
  c = config_lib.runlocal(config_lib.default_config())
  c.update_from_flattened_dict({"trainer": "ciss", "ciss.width": 16, "ciss.context_dim": 8,
                                "ciss.policy_dim": 8, "ciss.steps": 1})
  model = ciss.build_model(c, _Info)
  params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 64, 64, 3)),
                      train=False)["params"]
  return _semantic_update("ciss", c, model, params, ciss.make_loss, mesh)


def acis_step(mesh) -> dict:
  from tests.algorithms.acis.conftest import synthetic_batch  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config_file("configs/acis_cvppp.py", "ac,runlocal")
  nets = acis.build_nets(c)
  params = jax.device_get(jax.jit(functools.partial(acis.init_params, nets, c))(
      jax.random.key(0)))
  repl = parallel.replicated(mesh)
  trains = ("actor", "critic")
  tx = acis.optimizer(c, trains, kind="final")
  frozen = jax.device_put({k: params[k] for k in ("preproc", "decoder")}, repl)
  state = jax.device_put(step_lib.init_state({k: params[k] for k in trains}, tx=tx,
                                             rng=jax.random.key(3)), repl)
  batch = {k: _global(v, mesh) for k, v in synthetic_batch().items()}
  out = {}
  for kind in ("critic", "actor"):
    update = jax.jit(step_lib.make_update(acis.grads_fn(nets, c, kind, frozen=frozen, length=1,
                                                         mesh=mesh),
                                          tx), out_shardings=(repl, repl, repl))
    state, metrics, _ = update(state, batch)
    out[f"acis_{kind}_loss"] = _host(metrics["train/loss"])
  out["acis_params"] = _checksum(state["params"])
  return out


def reductions() -> dict:
  """Host reductions of values 32 bits cannot hold: int64 sums, float64 rows
  (process p contributes keys 2p + 1, 2p, one with two rows)."""
  from jaxseg.trainers import cluster  # pylint: disable=g-import-not-at-top
  p = jax.process_index()
  total = cluster.sum_over_processes(np.array([2**40 + p, -(2**35)], np.int64))
  keys, rows = cluster.gather_rows(np.array([2 * p + 1, 2 * p, 2 * p], np.int64),
                                   np.array([[1 / 3 + p], [p + 0.1], [p + 0.2]], np.float64))
  return {"reduce_sum": total, "gather_keys": keys, "gather_rows": rows}


def compute(mesh) -> dict:
  parts = {"reductions": reductions, "evaluation": evaluation,
           "sync_an": lambda: sync_an(mesh), "rss": lambda: rss_step(mesh),
           "ciss": lambda: ciss_step(mesh), "acis": lambda: acis_step(mesh)}
  out, start = {}, time.time()
  for name, part in parts.items():
    out.update(part())
    # Each part's finish time goes to the log, so a slow or stuck part is named.
    print(f"[{time.time() - start:6.1f} s] {name} done", file=sys.stderr, flush=True)
  return out


if __name__ == "__main__":
  import faulthandler, os  # pylint: disable=g-import-not-at-top,multiple-imports
  from jaxseg.trainers import cluster  # pylint: disable=g-import-not-at-top
  if "STACKS_AFTER_S" in os.environ:  # a hang shows where each process waits
    faulthandler.dump_traceback_later(float(os.environ["STACKS_AFTER_S"]), exit=True)
  cluster.initialize("auto")
  result = compute(parallel.make_data_mesh())
  if jax.process_index() == 0:
    np.savez(sys.argv[1], **result)
