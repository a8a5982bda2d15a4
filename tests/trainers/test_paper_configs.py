"""The paper configs' `:runlocal` variants, end to end, on trees written in each
dataset's own layout (`jaxseg.data.mock_trees`), through `python -m jaxseg.main`
with only `--config.data.root` (and the cold-start root) pointed at them.
(configs/ciss_cityscapes.py runs end to end in test_ciss.py.)"""
import json
import pathlib
import subprocess
import sys

import pytest

from jaxseg import config as config_lib
from jaxseg.data import get_source, mock_trees, pascal, train_dataset_from_config
from tests.conftest import one_device_env

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _main(workdir, *flags):
  proc = subprocess.run(
      [sys.executable, "-m", "jaxseg.main", f"--workdir={workdir}", *flags,
       "--config.total_steps=4", "--config.eval_every=4", "--config.checkpoint_every=4",
       "--config.eval.max_examples=2", "--config.eval.panel_examples=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=one_device_env())  # 1 device, as a user
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _val(workdir):
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in records if "val/miou" in r][-1]


def test_rss_pascal_runlocal_on_the_voc2010_layout_with_multi_scale_eval(tmp_path):
  voc2010 = mock_trees.pascal_context(tmp_path / "data")
  work = tmp_path / "run"
  proc = _main(work, "--config=configs/rss_pascal.py:runlocal", f"--config.data.root={voc2010}",
               "--config.eval.mode=mf", "--config.eval.scales=(0.75,1.0,1.25)")
  assert "model.pretrained: convnext_v2 backbone from" in proc.stderr
  assert "convnextv2_test.safetensors; not used: head." in proc.stderr
  val = _val(work)
  assert len([k for k in val if k.startswith("val/iou/")]) == 59
  assert 0 <= val["val/miou"] <= 1 and 0 <= val["val/miou_mf"] <= 1


@pytest.mark.parametrize("model, family", [("deeplabv3", "resnet"), ("segmenter", "vit")])
def test_rss_pascal_trains_the_other_tab4_models_from_pretrained_weights(tmp_path, model,
                                                                          family):
  voc2010 = mock_trees.pascal_context(tmp_path / "data")
  work = tmp_path / "run"
  proc = _main(work, f"--config=configs/rss_pascal.py:runlocal,model={model}",
               f"--config.data.root={voc2010}")
  assert f"model.pretrained: {family} backbone from" in proc.stderr
  assert 0 <= _val(work)["val/miou"] <= 1


def test_a_paper_config_without_its_weights_stops_before_compiling(tmp_path):
  voc2010 = mock_trees.pascal_context(tmp_path / "data")
  proc = subprocess.run(
      [sys.executable, "-m", "jaxseg.main", f"--workdir={tmp_path / 'run'}",
       "--config=configs/rss_pascal.py:psr_class,model=deeplabv3",
       f"--config.data.root={voc2010}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=one_device_env())
  assert proc.returncode != 0
  assert "timm/resnet101c.gluon_in1k" in proc.stderr
  assert "--config.model.pretrained=PATH" in proc.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_rss_cityscapes_cold_starts_from_a_mapillary_stage(tmp_path):
  cs = mock_trees.cityscapes(tmp_path / "cs", size=(64, 128))
  mapillary = mock_trees.mapillary(tmp_path / "mv", size=(64, 96))
  work = tmp_path / "run"
  proc = _main(work, "--config=configs/rss_cityscapes.py:runlocal", f"--config.data.root={cs}",
               f"--config.cold_start.root={mapillary}", "--config.cold_start.steps=2")
  assert len([k for k in _val(work / "cold") if k.startswith("val/iou/")]) == 65
  assert len([k for k in _val(work / "rss") if k.startswith("val/iou/")]) == 19
  assert f"cold start from {work / 'cold'}" in proc.stderr
  assert "val/iiou" in _val(work / "rss")


@pytest.mark.parametrize("config,arg,writer,classes", [
    ("rss_voc.py", "runlocal", "voc_aug", 21),
    ("ciss_ade20k.py", "ciss,runlocal", "ade20k", 150),
    ("ciss_pascal_context.py", "ciss,runlocal", "pascal_context", 60)])
def test_other_paper_configs_read_their_layout_into_training_batches(tmp_path, config, arg,
                                                                     writer, classes):
  """The configs not run end to end above: their data, as the trainer reads it."""
  root = mock_trees.WRITERS[writer](tmp_path)
  if writer == "voc_aug":
    pascal.convert_sbd(root[1], root[0])
    root = root[0]
  c = config_lib.load_config_file(ROOT / "configs" / config, arg)
  c.data.root = str(root)
  source, info = get_source(c.data, c.data.train_split)
  _, val_info = get_source(c.data, c.data.val_split)
  assert info.num_classes == val_info.num_classes == classes
  batch = next(iter(train_dataset_from_config(c.data, source, global_batch_size=c.batch_size,
                                              seed=0)))
  assert batch["image"].shape == (c.batch_size, *c.data.crop_size, 3)
  assert batch["label"].max() < classes or batch["label"].max() == 255
