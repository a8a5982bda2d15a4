import numpy as np
import pytest

from jaxseg.data import FolderSource
from jaxseg.data.statistics import median_frequency_weights


def reference_weights(labels, num_classes, ignore, power):
  freq = []
  for c in range(num_classes):
    pix = tot = 0
    for lab in labels:
      valid = lab[lab != ignore]
      n = int((valid == c).sum())
      if n:
        pix += n
        tot += valid.size
    freq.append(pix / tot if tot else np.nan)
  med = np.nanmedian(freq)
  return np.array([0.0 if np.isnan(f) else (med / f) ** power for f in freq])


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_median_frequency_matches_loop(power):
  rng = np.random.default_rng(0)
  labels = [rng.choice([0, 1, 1, 2, 255], size=(6, 7)) for _ in range(5)]
  labels[0][:] = 3  # class 3 only in one image
  source = [{"label": lab} for lab in labels]
  got = median_frequency_weights(source, num_classes=5, ignore_index=255, power=power)
  np.testing.assert_allclose(got, reference_weights(labels, 5, 255, power), rtol=1e-6)
  assert got[4] == 0.0  # absent class


def test_camvid_weights_are_close_to_segnets(camvid_root):
  source = FolderSource(camvid_root, "train", ignore_index=11)
  got = median_frequency_weights(source, num_classes=11, ignore_index=11)
  segnet = np.array([0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418,
                     0.6823, 6.2478, 7.3614])
  # SegNet's weights come from its own (train+val) label set; the ranking of
  # rare and common classes must agree, the values roughly.
  assert np.corrcoef(np.log(got), np.log(segnet))[0, 1] > 0.95
  assert np.all(got[[2, 6, 9, 10]] > 3) and np.all(got[[0, 1, 3]] < 0.3)
