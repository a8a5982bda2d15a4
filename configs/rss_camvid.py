"""RSS on CamVid at CPU scale: every row of the paper's Tables 1-3 as a variant.

    python -m jaxseg.main --config=configs/rss_camvid.py \
        --workdir=/tmp/rss_camvid --config.data.root=../shared/data/camvid

VARIANT (after the colon, default `psr_class`; add `,runlocal` for a smoke run):
  psl             supervised baseline, same model, data and budget
  pixel           pixel-level reward, SyncAN                      (Tab. 1)
  pixel_nosync    pixel-level reward, per-shard advantage normalisation
  naive           image-level reward, full-resolution action maps (Tab. 2)
  psr_single      image-level, one PSR scale (1/8)
  psr_single_psd  + pair-wise spatial difference
  psr_multi       image-level, PSR scales 1/16, 1/8, 1/4, 1
  psr_multi_psd   + PSD
  psr_class       jaxseg's image-level recipe: PSR 1/8, N = 8, each position
                  credited with the IoU of the class it chose, ε = 0.1 uniform
                  exploration (docs/rss_image_level.md)
Options: `lr_factor=F` (Tab. 3: the classifier's learning-rate factor) and
`cold=DIR` (cold start from another run's checkpoint, e.g. PSL on the embedded
dataset: Tab. 1-3's cold-start rows). As in the foundation,
`--config.data.root=PATH` (and `--config.data.ignore_index=N`) trains the same
variant on any folder dataset.
"""
import pathlib

from jaxseg import config as config_lib


def get_config(arg=None):
  variant, args = config_lib.parse_variant(
      arg, config_lib.RSS_VARIANTS,
      default="psr_class", options=("runlocal", "start", *config_lib.RSS_OPTIONS))
  # Data, model and optimiser: configs/psl_camvid.py's, measured there, without
  # its class weights (RSS has no cross-entropy to weight) and on a shorter budget.
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("psl_camvid.py"))
  c.data.class_weighting = "none"
  c.total_steps = 1500
  c.eval_every = 250
  c.rss.num_samples = 4
  # SyncAN off on one CPU device would change nothing: split the batch of 8
  # into 4 shards of 2 images, as the paper's 8 GPUs x 2 images.
  c.rss.nosync_groups = 4
  config_lib.apply_variant(c, config_lib.RSS_VARIANTS, variant)
  # Measured on this machine (500-step probes, val mIoU): without an entropy
  # bonus the policy collapses to a few classes within ~100 steps (entropy
  # 2.4 -> 0.1 nats). Pixel level: bonus 0 -> 0.175, 0.05 -> 0.200, 0.2 -> 0.264,
  # 0.5 -> 0.256. Image level (PSR 1/8 + PSD, advantages divided by their std):
  # 0.005 -> 0.201 (entropy still falls to 0.2), 0.05 -> 0.181 and 0.2 -> 0.177
  # (the policy stays near uniform).
  c.rss.entropy_coef = 0.2 if c.rss.level == "pixel" else 0.01
  c.rss.psd_std_normalize = True
  # Per-class collapse diagnostics (train/cls/*; plots: bench/rss_collapse.py).
  c.rss.class_diagnostics = True
  # The pretrained start's stand-in (ImageNet weights cannot be fetched at CPU
  # scale): PSL on IDD-Lite, another road-scene dataset, as stage `cold`.
  c.cold_start.name = "folder"
  c.cold_start.ignore_index = 255
  c.cold_start.steps = 3000
  c.cold_start.lr = 1e-3
  if "start" in args:
    config_lib.check_choice("start (configs/rss_camvid.py)", args["start"], ("model", "backbone"))
    c.cold_start.load = args["start"]
    c.cold_start.root = "../shared/data/idd_lite"
  config_lib.apply_options(c, args, config_lib.RSS_OPTIONS)
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.rss.nosync_groups = 2
  return c
