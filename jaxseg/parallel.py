"""Meshes and shardings: one code path for 1 CPU, 8 fake devices and a pod.

The batch is sharded over the `data` axis; parameters and optimizer state are
replicated. Under `jit` XLA inserts the gradient all-reduce itself, and a sum
over the batch axis is a global all-reduce, so the trainers contain no explicit
collectives (SyncAN is a normalisation over the whole batch; the `psum` form,
`rewards.normalize_advantages(axis_name=...)`, is for code inside `shard_map`).
"""
from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over all (or the first `num_devices`) devices, axis `data`."""
  n = num_devices or jax.device_count()
  return jax.make_mesh(
      (n,), (DATA_AXIS,),
      axis_types=(jax.sharding.AxisType.Auto,),
      devices=jax.devices()[:n])


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: jax.sharding.Mesh) -> None:
  n = mesh.shape[DATA_AXIS]
  if global_batch % n or global_batch % jax.process_count():
    raise ValueError(
        f"config.batch_size={global_batch} must be divisible by the number of "
        f"devices ({n}) and processes ({jax.process_count()}).")


def per_shard(fn, mesh: jax.sharding.Mesh | None, in_axes, out_axes=0):
  """`fn` (batched over `in_axes` / `out_axes`, as for `vmap`) run by every
  device on its own shard of the batch (`shard_map` over `data`).

  For a batched data-dependent loop such as the on-device matching
  (`rewards.max_matching` under `vmap`): under plain `jit` its `while`
  condition is an `any` over the sharded batch, i.e. one all-reduce per
  iteration, which across hosts is a network round trip per Dijkstra step and
  on XLA:CPU with Gloo deadlocked (a device ran that loop's collective while
  its peers waited in an independent one). Per shard each device loops until
  its own items finish and the loop holds no collective. `mesh` None or one
  device: `fn` itself.
  """
  if mesh is None or mesh.shape.get(DATA_AXIS, 1) == 1:
    return fn

  def spec(axis):
    return P() if axis is None else P(*([None] * axis), DATA_AXIS)

  return jax.shard_map(fn, mesh=mesh, in_specs=jax.tree.map(spec, in_axes),
                       out_specs=jax.tree.map(spec, out_axes), check_vma=False)
