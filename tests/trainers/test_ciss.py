"""CiSS-Net trainer: the step shards, `config.ciss` is validated, the trainer
runs every stage and logs every step t."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import config as config_lib
from jaxseg import data as data_lib
from jaxseg.data import mock_trees
from jaxseg.data.errors import DataError
from jaxseg.trainers import ciss, semantic

IGNORE = 255


class Info:
  num_classes, ignore_index, class_weights = 5, IGNORE, None


def _config(tiny_config, data_dir, **kw):
  return tiny_config(data_dir, trainer="ciss", **{
      "ciss.width": 16, "ciss.context_dim": 8, "ciss.policy_dim": 8, **kw})


def test_sharded_ciss_step_matches_single_device(tiny_config, data_dir,
                                                 one_step_on_1_and_8_devices):
  c = _config(tiny_config, data_dir, **{"ciss.steps": 3})
  results = one_step_on_1_and_8_devices(c, ciss.make_loss, build_model=ciss.build_model)
  for k in results[0][0]:
    np.testing.assert_allclose(results[0][0][k], results[1][0][k], rtol=1e-3, atol=1e-4,
                               err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
               results[0][1], results[1][1])


@pytest.mark.parametrize("override, match", [
    ({"ciss.context": "gate"}, "ciss.context='gate'"),
    ({"ciss.window": (4, 5)}, "ciss.window"),
    ({"ciss.gamma": 1.5}, "ciss.gamma"),
    ({"ciss.width": 24}, "ciss.width"),
])
def test_bad_ciss_config_names_the_key(tiny_config, data_dir, override, match):
  with pytest.raises(ValueError, match=match):
    ciss.make_loss(_config(tiny_config, data_dir, **override), model=None, info=Info)


def test_cityscapes_config_runs_trunk_then_ciss_and_logs_every_step_t_and_iiou(tmp_path, caplog):
  """configs/ciss_cityscapes.py:ciss,runlocal on a tree in Cityscapes' own layout,
  the PSPNet trunk from ImageNet-style weights (the ResNet fixture)."""
  caplog.set_level("INFO")
  root = mock_trees.cityscapes(tmp_path / "data", size=(64, 128))
  c = config_lib.load_config_file("configs/ciss_cityscapes.py", "ciss,runlocal")
  c.update_from_flattened_dict({
      "data.root": str(root), "ciss.trunk_steps": 2, "ciss.eval_steps": (0, 2, 3),
      "total_steps": 4, "eval_every": 4, "checkpoint_every": 4, "eval.max_examples": 2,
      "eval.panel_examples": 1, "batch_size": 8})  # 8 fake devices
  work = tmp_path / "run"
  run = ciss.train_and_evaluate(c, str(work))
  records = [json.loads(l) for l in (work / "ciss" / "metrics.jsonl").read_text().splitlines()]
  val = [r for r in records if "val/miou" in r][-1]
  for t in (0, 2, 3):
    assert 0 <= val[f"val/miou_t{t}"] <= 1
  assert val["val/miou"] == val["val/miou_t2"]  # ciss.inference_steps
  assert 0 <= val["val/iiou"] <= 1 and "val/iiou/car" in val
  assert len([k for k in val if k.startswith("val/iou/")]) == 19
  train = [r for r in records if "train/loss" in r][-1]
  for key in ("train/reward", "train/value_loss", "train/policy_loss", "train/entropy",
              "train/keep_fraction", "train/ce_t0", "train/ce_t2", "train/return"):
    assert np.isfinite(train[key]), key
  assert list((work / "ciss" / "panels").glob("*.png"))
  # The trunk is the PSL checkpoint, unchanged by CiSS training (frozen).
  from jaxseg import checkpoint as ckpt_lib
  trunk = ckpt_lib.load_params(work / "trunk")
  jax.tree.map(np.testing.assert_array_equal, run.params["trunk"],
               {k: v for k, v in trunk.items() if k in run.params["trunk"]})
  assert "model.pretrained: resnet backbone from" in caplog.text
  assert c.model.pretrained.endswith("resnet_test.safetensors") and c.model.norm == "affine"
  # A second command reuses the finished trunk and the finished CiSS run.
  before = (work / "trunk" / "metrics.jsonl").read_text().count("train/loss")
  ciss.train_and_evaluate(c, str(work))
  assert (work / "trunk" / "metrics.jsonl").read_text().count("train/loss") == before


def test_needs_a_trunk(tiny_config, data_dir, tmp_path):
  with pytest.raises(ValueError, match="config.init_from"):
    ciss.train_and_evaluate(_config(tiny_config, data_dir), str(tmp_path))


@pytest.mark.parametrize("name", ["ciss_ade20k", "ciss_cityscapes", "ciss_pascal_context"])
def test_paper_configs_say_what_data_they_expect(name):
  c = config_lib.load_config_file(f"configs/{name}.py", "gated,gamma=0.3")
  assert c.trainer == "ciss" and c.ciss.entropy_coef == 0.001 and c.ciss.gamma == 0.3
  assert c.model.name == "pspnet" and c.optim.name == "sgd"
  with pytest.raises(DataError, match=f"'{c.data.name}' dataset needs --config.data.root"):
    data_lib.get_source(c.data, "train")


def test_camvid_variants_and_typos():
  get = lambda a: config_lib.load_config_file("configs/ciss_camvid.py", a)
  assert get("baseline").ciss.context == "none"
  assert get("pmap").ciss.context == "pmap"
  assert get("ciss,entropy=0.02").ciss.entropy_coef == 0.02
  assert get("ciss,trunk=/x").init_from == "/x"
  with pytest.raises(ValueError, match="gama"):
    get("ciss,gama=0.1")


def test_evaluate_splits_heads_and_adds_iiou(tiny_config, data_dir):
  """Two heads: a perfect one and an all-zero one; instances give iIoU."""
  rng = np.random.default_rng(0)
  lab = rng.integers(0, 3, (2, 16, 16)).astype(np.int32)
  source = [{"image": np.zeros((16, 16, 3), np.uint8), "label": l,
             "instances": np.where(l > 0, 1 + l, 0)} for l in lab]

  class Info3:
    num_classes, ignore_index, class_names = 3, IGNORE, ["a", "b", "c"]

  def predict(params, images):
    del params
    perfect = jax.nn.one_hot(jnp.asarray(lab[:1]).repeat(images.shape[0], 0), 3) * 10
    zero = jnp.zeros_like(perfect).at[..., 0].set(10.0)
    return jnp.concatenate([perfect, zero], -1)

  c = tiny_config(data_dir, **{"data.crop_size": (16, 16), "eval.crop_size": (16, 16)})
  metrics, _ = semantic.evaluate(None, predict_fn=predict, source=source[:1], info=Info3,
                                 config=c, heads=("t0", "t2"), main_head=1)
  assert metrics["miou_t0"] == 1.0 and metrics["pixel_acc_t0"] == 1.0
  assert metrics["miou"] == metrics["miou_t2"] < 0.5
  assert metrics["iiou"] == 0.0  # the main head never predicts classes 1, 2
