import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import checkpoint as ckpt_lib


def make_state(scale=1.0):
  return {"step": jnp.int32(3),
          "params": {"head": {"classifier": {"kernel": jnp.full((4, 5), scale)}},
                     "body": {"w": jnp.arange(6.0) * scale}},
          "rng": jax.random.key_data(jax.random.key(0))}


def test_save_restore_state_and_data_iterator(tmp_path):
  ds = grain.MapDataset.range(50).shuffle(seed=3).repeat().to_iter_dataset()
  it = iter(ds)
  [next(it) for _ in range(7)]
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=2, save_every=1)
  state = make_state(2.0)
  assert ckpt_lib.save(mgr, 3, state, it)
  expected = [next(it) for _ in range(5)]
  it2 = iter(ds)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  restored = ckpt_lib.restore(mgr, abstract, it2)
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  assert [next(it2) for _ in range(5)] == expected


def test_interrupted_save_leaves_the_last_good_checkpoint(tmp_path):
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=3, save_every=1)
  ckpt_lib.save(mgr, 3, make_state(1.0), None)
  # A crash mid-save leaves only orbax's temporary directory behind.
  (tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-123" / "state").mkdir(parents=True)
  mgr.close()
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=3, save_every=1)
  assert mgr.latest_step() == 3
  loaded = ckpt_lib.load_params(tmp_path)
  np.testing.assert_array_equal(loaded["body"]["w"], np.arange(6.0))


def test_merge_init_reinitialises_only_a_mismatched_classifier(tmp_path):
  loaded = jax.device_get(make_state(2.0)["params"])
  fresh = {"head": {"classifier": {"kernel": jnp.zeros((4, 9))}}, "body": {"w": jnp.zeros(6)}}
  merged, reinit = ckpt_lib.merge_init(fresh, loaded, reinit_pattern=r".*classifier.*")
  assert reinit == ["head/classifier/kernel"]
  np.testing.assert_array_equal(merged["body"]["w"], loaded["body"]["w"])
  np.testing.assert_array_equal(merged["head"]["classifier"]["kernel"], np.zeros((4, 9)))
  bad = {"head": {"classifier": {"kernel": jnp.zeros((4, 5))}}, "body": {"w": jnp.zeros(7)}}
  with pytest.raises(ckpt_lib.CheckpointError, match="body/w"):
    ckpt_lib.merge_init(bad, loaded, reinit_pattern=r".*classifier.*")


def test_init_from_missing_path_is_a_clear_error(tmp_path):
  with pytest.raises(ckpt_lib.CheckpointError, match="does not exist"):
    ckpt_lib.load_params(tmp_path / "nope")
  with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint steps"):
    ckpt_lib.load_params(tmp_path)
