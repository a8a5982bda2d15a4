"""Meshes and shardings on the 8 fake CPU devices."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import parallel
from jaxseg.data import to_global_array


def test_mesh_and_shardings():
  assert jax.device_count() == 8
  mesh = parallel.make_data_mesh()
  assert mesh.shape == {parallel.DATA_AXIS: 8}
  assert parallel.make_data_mesh(2).devices.tolist() == jax.devices()[:2]
  x = to_global_array({"x": np.arange(16.0).reshape(8, 2)},
                      parallel.batch_sharding(mesh))["x"]
  assert [s.data.shape for s in x.addressable_shards] == [(1, 2)] * 8
  np.testing.assert_array_equal(np.asarray(x), np.arange(16.0).reshape(8, 2))
  y = jax.device_put(np.ones(3), parallel.replicated(mesh))
  assert all(s.data.shape == (3,) for s in y.addressable_shards)


def test_batch_size_must_split_over_devices():
  parallel.check_batch_size(16, parallel.make_data_mesh())
  with pytest.raises(ValueError, match=r"config.batch_size=12 must be divisible .* \(8\)"):
    parallel.check_batch_size(12, parallel.make_data_mesh())


def collective_loops(hlo: str) -> list[str]:
  """The `while` loops of compiled HLO text whose condition or body computation
  holds an all-reduce (one collective per iteration)."""
  comps = {}
  for block in re.split(r"\n(?=\S)", hlo):
    m = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
    if m:
      comps[m.group(1)] = block
  loops = re.findall(r"while\(.*?condition=%?([\w.\-]+), body=%?([\w.\-]+)", hlo)
  return [c for loop in loops for c in loop if "all-reduce" in comps.get(c, "")]


def _countdown(x):
  """A data-dependent loop per item: halve until below 1 (trip count varies)."""
  return jax.lax.while_loop(lambda v: v[0] >= 1, lambda v: (v[0] / 2, v[1] + 1),
                            (x, jnp.zeros((), jnp.int32)))[1]


def test_per_shard_runs_a_batched_loop_on_each_device_without_collectives():
  mesh = parallel.make_data_mesh()
  x = to_global_array({"x": 2.0 ** np.arange(16.0)}, parallel.batch_sharding(mesh))["x"]
  batched = jax.vmap(_countdown)
  plain = jax.jit(batched)
  shard = jax.jit(parallel.per_shard(batched, mesh, 0))
  np.testing.assert_array_equal(shard(x), np.arange(1, 17))
  np.testing.assert_array_equal(shard(x), plain(x))
  assert collective_loops(plain.lower(x).compile().as_text())  # what per_shard removes
  assert not collective_loops(shard.lower(x).compile().as_text())
  assert parallel.per_shard(batched, None, 0) is batched
  assert parallel.per_shard(batched, parallel.make_data_mesh(1), 0) is batched
