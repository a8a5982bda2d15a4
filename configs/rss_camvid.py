"""RSS on CamVid at CPU scale: every row of the paper's Tables 1-3 as a variant.

    python -m jaxseg.main --config=configs/rss_camvid.py:VARIANT[,start=model] \
        --workdir=/tmp/rss_camvid --config.data.root=../shared/data/camvid

VARIANT (after the colon; add `,runlocal` for a smoke run):
  psl             supervised baseline, same model, data, start and budget
  pixel           pixel-level reward, SyncAN                      (Tab. 1)
  pixel_nosync    pixel-level reward, per-shard advantage normalisation
  The paper's image-level rows, one scalar reward (the map's mIoU) per sampled
  map, as the paper states them (no entropy bonus, no exploration floor, raw
  PSD advantages; last-layer factor 400 with a cold start, 40 without, Tab. 3):
  naive           full-resolution action maps                     (Tab. 2)
  psr_single      one PSR scale (1/8)
  psr_single_psd  + pair-wise spatial difference
  psr_multi       PSR scales 1/16, 1/8, 1/4, 1, all from the start (the paper's
                  text: small scales help "particularly during the initial
                  training stage. Meanwhile, we also maintain a larger action
                  space"; `rss.psr_schedule=coarse_to_fine` is jaxseg's option)
  psr_multi_psd   + PSD
  jaxseg's recipes (docs/rss_scalar.md, docs/rss_image_level.md):
  scalar          the paper's scalar reward and PSD, N = 256 maps at PSR scale
                  1/8, ε = 0.1 exploration, RMS-normalised PSD, an entropy
                  bonus, last-layer factor 1, classifier init normal(0.01)
  psr_class       (default) per-class credit: each position credited with the IoU
                  term of the class it chose — C numbers per map, feedback the
                  paper's scalar setting does not give
Options: `lr_factor=F` (Tab. 3: the classifier's learning-rate factor);
`cold=DIR` (every layer of a finished run but the classifier: the paper's cold
start); `pretrained=DIR` (its backbone alone); `start=model|backbone` (train
that start first as stage `cold`: PSL on IDD-Lite, `cold_start.*`, the CPU
stand-in for the paper's pretrained starts; `--config.cold_start.workdir=DIR`
shares one between runs). As in the foundation, `--config.data.root=PATH` (and
`--config.data.ignore_index=N`) trains the same variant on any folder dataset.
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
  # Pixel level, measured on this machine (500-step probes, val mIoU): without an
  # entropy bonus the policy collapses to a few classes within ~100 steps (entropy
  # 2.4 -> 0.1 nats): bonus 0 -> 0.175, 0.05 -> 0.200, 0.2 -> 0.264, 0.5 -> 0.256.
  c.rss.entropy_coef = 0.2
  config_lib.apply_variant(c, config_lib.RSS_VARIANTS, variant)
  if c.rss.level == "image" and variant in config_lib.RSS_PAPER_IMAGE_ROWS:
    c.rss.entropy_coef = 0.0  # as the paper states them
  c.optim.last_layer_lr_factor = config_lib.paper_last_layer_factor(variant, args)
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
