"""PSL (supervised) on the embedded `jaxseg_shapes` dataset: no download needed.

    python -m jaxseg.main --config=configs/psl_embedded.py --workdir=/tmp/psl_shapes
    python -m jaxseg.main --config=configs/psl_embedded.py:runlocal --workdir=/tmp/x

A few minutes on a 2-core CPU.
"""
from jaxseg import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg)
  c = config_lib.default_config()
  c.trainer = "psl"
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
  c.optim.weight_decay = 0.05
  c.batch_size = 8
  c.total_steps = 600
  c.log_every = 25
  c.eval_every = 200
  c.checkpoint_every = 200
  c.eval.crop_size = (128, 128)
  c.eval.batch_size = 8
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.data.crop_size = (64, 64)
    c.eval.crop_size = (64, 64)
  return c
