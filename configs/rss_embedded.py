"""The README's quick start: image-level RSS on the embedded `jaxseg_shapes`
dataset (no download), with PSL trained on the same budget beside it.

    python -m jaxseg.main --config=configs/rss_embedded.py --workdir=/tmp/jaxseg_rss

Trains PSL into WORKDIR/psl (reused when present), then image-level RSS
(jaxseg's per-class recipe `psr_class`: PSR 1/8, C per-class IoU terms per map,
ε-exploration) into
WORKDIR/rss, and ends with a table (WORKDIR/comparison.md)
and a plot of val mIoU over training (WORKDIR/comparison.png).
`:runlocal` shrinks it to seconds; `:VARIANT` picks another RSS row (see
configs/rss_camvid.py).
"""
import pathlib

from jaxseg import config as config_lib


def get_config(arg=None):
  variant, args = config_lib.parse_variant(
      arg, [v for v in config_lib.RSS_VARIANTS if v != "psl"], default="psr_class")
  # Data, model, optimiser and budget: configs/psl_embedded.py's, so the PSL
  # run beside it is that config exactly.
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("psl_embedded.py"),
                                  "runlocal" if "runlocal" in args else None)
  # As in configs/rss_camvid.py: the pixel level's entropy bonus; the image-level
  # variants carry their own (none for the paper's rows, as it states them).
  c.rss.entropy_coef = 0.2
  config_lib.apply_variant(c, config_lib.RSS_VARIANTS, variant)
  if c.rss.level == "image" and variant in config_lib.RSS_PAPER_IMAGE_ROWS:
    c.rss.entropy_coef = 0.0
  c.rss.class_diagnostics = True  # train/cls/*: see bench/rss_collapse.py
  c.rss.compare_psl = True
  return c
