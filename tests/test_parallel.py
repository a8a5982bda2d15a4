"""Meshes and shardings on the 8 fake CPU devices."""
import jax
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
