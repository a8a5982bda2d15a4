"""The CamVid config trains on any folder dataset given only root and ignore."""
import json
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
from tests.conftest import one_device_env

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write_folder_dataset(root: pathlib.Path, num_classes=4, ignore=250, size=(48, 64)):
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for i in range(3):
      label = rng.integers(0, num_classes, size, dtype=np.uint8)
      label[:4] = ignore
      Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(
          root / "images" / split / f"im{i}.jpg")
      Image.fromarray(label).save(root / "labels" / split / f"im{i}.png")
  lines = [f"{c} class {c}" for c in range(num_classes)] + [f"{ignore} void"]
  (root / "classes.txt").write_text("\n".join(lines) + "\n")


def test_psl_camvid_config_on_another_folder_dataset(tmp_path):
  write_folder_dataset(tmp_path / "data")
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "jaxseg.main", "--config=configs/psl_camvid.py:runlocal",
       f"--workdir={workdir}", f"--config.data.root={tmp_path / 'data'}",
       "--config.data.ignore_index=250"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=one_device_env())  # 1 device, as a user
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  val = [r for r in records if "val/miou" in r][-1]
  assert sorted(k for k in val if k.startswith("val/iou/")) == [
      f"val/iou/class {c}" for c in range(4)]
