"""The README's quick start: image-level RSS on the embedded `jaxseg_shapes`
dataset (no download), with PSL trained on the same budget beside it.

    python -m jaxseg.main --config=configs/rss_embedded.py --workdir=/tmp/jaxseg_rss

Trains PSL into WORKDIR/psl (reused when present), then image-level RSS (PSR
multi-scale + PSD) into WORKDIR/rss, and ends with a table (WORKDIR/comparison.md)
and a plot of val mIoU over training (WORKDIR/comparison.png).
`:runlocal` shrinks it to seconds; `:VARIANT` picks another RSS row (see
configs/rss_camvid.py).
"""
from jaxseg import config as config_lib
from jaxseg.trainers import rss


def get_config(arg=None):
  variant, args = config_lib.parse_variant(
      arg, [v for v in rss.VARIANTS if v != "psl"], default="psr_multi_psd")
  c = config_lib.default_config()
  c.data.name = "embedded"
  c.data.image_size = (128, 128)
  c.data.crop_size = (96, 96)
  c.data.scale_range = (0.75, 1.5)
  c.model.name = "sfpnext"
  c.model.backbone = "convnext_v2_atto"
  c.model.fpn_dim = 64
  c.model.head_dim = 64
  c.model.drop_path_rate = 0.0
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 50
  c.batch_size = 8
  c.total_steps = 600
  c.log_every = 25
  c.eval_every = 200
  c.checkpoint_every = 200
  c.eval.crop_size = (128, 128)
  rss.apply_variant(c, variant)
  # As in configs/rss_camvid.py: an entropy bonus against early collapse, on
  # std-normalised PSD advantages.
  c.rss.entropy_coef = 0.2 if c.rss.level == "pixel" else 0.01
  c.rss.psd_std_normalize = True
  c.rss.compare_psl = True
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.data.crop_size = (64, 64)
    c.eval.crop_size = (64, 64)
  return c
