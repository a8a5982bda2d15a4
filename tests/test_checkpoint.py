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


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      state)


def test_save_restore_state(tmp_path):
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=2, save_every=1)
  state = make_state(2.0)
  assert ckpt_lib.save(mgr, 3, state)
  assert not ckpt_lib.save(mgr, 3, state, force=True)  # a step is saved once
  restored = ckpt_lib.restore(mgr, _abstract(state))
  jax.tree.map(np.testing.assert_array_equal, restored, state)


def test_interrupted_save_leaves_the_last_good_checkpoint(tmp_path):
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=3, save_every=1)
  ckpt_lib.save(mgr, 3, make_state(1.0))
  # A crash mid-save leaves only orbax's temporary directory behind.
  (tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-123" / "state").mkdir(parents=True)
  mgr.close()
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=3, save_every=1)
  assert mgr.latest_step() == 3
  loaded = ckpt_lib.load_params(tmp_path)
  np.testing.assert_array_equal(loaded["body"]["w"], np.arange(6.0))


@pytest.mark.parametrize("damage", ["truncate_metadata", "delete_array_data"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=3, save_every=1)
  ckpt_lib.save(mgr, 3, make_state(1.0))
  ckpt_lib.save(mgr, 6, make_state(5.0))
  item = tmp_path / "checkpoints" / "6" / "state"
  if damage == "truncate_metadata":
    meta = item / "_METADATA"
    meta.write_bytes(meta.read_bytes()[:40])
  else:
    for f in item.rglob("*"):
      if f.is_file() and f.parent.name != "state":  # the tensorstore chunks
        f.unlink()
  with caplog.at_level("WARNING"):
    restored = ckpt_lib.restore_newest_good(mgr, _abstract(make_state()))
  np.testing.assert_array_equal(restored["params"]["body"]["w"], np.arange(6.0))
  assert str(tmp_path / "checkpoints" / "6") in caplog.text
  assert (tmp_path / "checkpoints_corrupt" / "6").is_dir()  # moved aside, not deleted
  assert mgr.all_steps() == [3]


def test_mismatches_name_every_array_that_does_not_fit(tmp_path):
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=3, save_every=1)
  ckpt_lib.save(mgr, 3, make_state(1.0))
  other = make_state()
  other["params"]["body"]["w"] = jnp.zeros(7)
  other["params"]["extra"] = jnp.zeros(2)
  del other["params"]["head"]
  bad = ckpt_lib.mismatches(ckpt_lib.state_metadata(mgr, 3), _abstract(other))
  assert sorted(b.split(":")[0] for b in bad) == [
      "params/body/w", "params/extra", "params/head/classifier/kernel"]


def test_a_full_disk_is_one_clear_error(tmp_path, monkeypatch):
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=3, save_every=1)
  ckpt_lib.save(mgr, 3, make_state(1.0))

  def full(*a, **k):
    try:
      raise OSError(28, "No space left on device")
    except OSError as e:
      raise RuntimeError("orbax wrapped it") from e

  monkeypatch.setattr(mgr, "save", full)
  with pytest.raises(ckpt_lib.CheckpointError, match="no space left.*step 6.*last good "
                     "checkpoint is step 3"):
    ckpt_lib.save(mgr, 6, make_state(2.0))


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


def test_load_params_prefers_the_weight_average(tmp_path):
  """A run with `optim.ema_decay` evaluates `ema_params`; `load_params` (the
  next stage's, `init_from`'s) hands on the same weights."""
  mgr = ckpt_lib.make_manager(tmp_path, max_to_keep=2, save_every=1)
  state = make_state(1.0)
  state["ema_params"] = make_state(7.0)["params"]
  ckpt_lib.save(mgr, 3, state, force=True)
  mgr.wait_until_finished()
  loaded = ckpt_lib.load_params(tmp_path)
  np.testing.assert_array_equal(loaded["body"]["w"], np.arange(6.0) * 7.0)
