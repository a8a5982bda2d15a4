"""RSS on CamVid at CPU scale: every row of the paper's Tables 1-3 as a variant.

    python -m jaxseg.main --config=configs/rss_camvid.py:psr_multi_psd \
        --workdir=/tmp/rss_camvid --config.data.root=../shared/data/camvid

VARIANT (after the colon, default `psr_multi_psd`; add `,runlocal` for a smoke run):
  psl             supervised baseline, same model, data and budget
  pixel           pixel-level reward, SyncAN            (Tab. 1)
  pixel_nosync    pixel-level reward, per-shard advantage normalisation
  naive           image-level reward on full-resolution action maps (Tab. 2)
  psr_single      image-level, one PSR scale (1/8)
  psr_single_psd  + pair-wise spatial difference
  psr_multi       image-level, PSR scales 1/16, 1/8, 1/4, 1
  psr_multi_psd   + PSD
Options: `lr_factor=F` (Tab. 3: the classifier's learning-rate factor),
`cold=DIR` (cold start from another run's checkpoint, e.g. PSL on the embedded
dataset). As in the foundation, `--config.data.root=PATH` (and
`--config.data.ignore_index=N`) trains the same variant on any folder dataset.
"""
from jaxseg import config as config_lib

VARIANTS = ("psl", "pixel", "pixel_nosync", "naive", "psr_single", "psr_single_psd",
            "psr_multi", "psr_multi_psd")


def apply_variant(c, variant: str):
  """Sets the RSS fields of one ablation row (shared with rss_pascal.py)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown RSS variant {variant!r}; choose from {VARIANTS}.")
  if variant == "psl":
    c.trainer = "psl"
    return c
  c.trainer = "rss"
  if variant.startswith("pixel"):
    c.rss.level = "pixel"
    c.rss.sync_an = variant == "pixel"
    return c
  c.rss.level = "image"
  c.rss.psr_scales = {"naive": (1.0,), "psr_single": (1 / 8,), "psr_single_psd": (1 / 8,),
                      "psr_multi": (1 / 16, 1 / 8, 1 / 4, 1.0),
                      "psr_multi_psd": (1 / 16, 1 / 8, 1 / 4, 1.0)}[variant]
  c.rss.psd = variant.endswith("_psd")
  return c


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  variants = [a for a in args if a in VARIANTS]
  unknown = [a for a in args if a not in VARIANTS and a not in ("runlocal", "lr_factor", "cold")]
  if unknown or len(variants) > 1:
    raise ValueError(f"configs/rss_camvid.py: unknown or repeated argument(s) "
                     f"{unknown or variants}; use VARIANT[,runlocal][,lr_factor=F][,cold=DIR] "
                     f"with VARIANT one of {VARIANTS}.")
  c = config_lib.default_config()
  # Data, model and optimiser: configs/psl_camvid.py's, measured there.
  c.data.name = "folder"
  c.data.root = "../shared/data/camvid"
  c.data.ignore_index = 11
  c.data.resize = (120, 160)
  c.data.crop_size = (96, 128)
  c.data.scale_range = (0.75, 1.5)
  c.model.name = "sfpnext"
  c.model.backbone = "convnext_v2_atto"
  c.model.fpn_dim = 64
  c.model.head_dim = 64
  c.model.drop_path_rate = 0.0
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.batch_size = 8
  c.total_steps = 1500
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  c.eval.crop_size = (128, 160)
  c.rss.num_samples = 4
  # SyncAN off on one CPU device would change nothing: split the batch of 8
  # into 4 shards of 2 images, as the paper's 8 GPUs × 2 images.
  c.rss.nosync_groups = 4
  c = apply_variant(c, variants[0] if variants else "psr_multi_psd")
  if "lr_factor" in args:
    c.optim.last_layer_lr_factor = float(args["lr_factor"])
  if "cold" in args:
    c.init_from = args["cold"]
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.rss.nosync_groups = 2
  return c
