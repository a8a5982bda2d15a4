"""CiSS-Net on CamVid at CPU scale: the paper's Tab. 4 rows as variants.

    python -m jaxseg.main --config=configs/ciss_camvid.py:ciss \
        --workdir=/tmp/ciss_camvid --config.data.root=../shared/data/camvid

One command runs every stage: the PSL trunk (configs/psl_camvid.py's model and
recipe) is trained first into WORKDIR/trunk, or reused from there when it has
finished, or taken from `trunk=DIR` / `--config.init_from=DIR`; then CiSS-Net
trains into WORKDIR/ciss with the trunk frozen.

VARIANT (after the colon, default `ciss`; add `,runlocal` for a smoke run):
  baseline   no context: the Base Net alone on the frozen trunk
  pmap       the raw p-map as context (every position kept, no RL)
  gated      CiSS-Net with λ2 = 0.001 (Tab. 4's gated p-map)
  ciss       CiSS-Net, λ2 = 0.05
Options: `gamma=G` (Tab. 2), `entropy=L` (λ2, Tab. 3), `trunk=DIR`.
`--config.data.root=PATH` (and `--config.data.ignore_index=N`) trains the same
variant on any folder dataset, as in the foundation.
"""
import pathlib

from jaxseg import config as config_lib


def get_config(arg=None):
  variant, args = config_lib.parse_variant(
      arg, config_lib.CISS_VARIANTS,
      default="ciss", options=("runlocal", *config_lib.CISS_OPTIONS))
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("psl_camvid.py"))
  c.ciss.trunk_steps = 2000
  c.total_steps = 1000
  c.eval_every = 250
  c.checkpoint_every = 250
  # Base/Bias/Context Nets at 1/16 of the paper's widths on the atto trunk's
  # 64-channel stride-4 features (24 x 32 maps for 96 x 128 crops). Measured
  # T = 2 step on this CPU: width 64 (context 32) 1007 ms, width 32 (context
  # 16) 328 ms; the baseline step is 91 ms.
  c.ciss.width = 32
  c.ciss.context_dim = 16
  c.ciss.policy_dim = 16
  c.ciss.steps = 2
  # The paper trains the Bias and Context Nets at 1/10 of the Base Net's SGD
  # learning rate. Under AdamW here (bench/ciss_ablation.py, one seed, val mIoU
  # t=0 -> t=2): factor 0.1 0.461 -> 0.471, factor 1 0.452 -> 0.480.
  c.ciss.rl_lr_factor = 1.0
  config_lib.apply_variant(c, config_lib.CISS_VARIANTS, variant)
  config_lib.apply_options(c, args, config_lib.CISS_OPTIONS)
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.ciss.trunk_steps = 4
    c.ciss.width, c.ciss.context_dim, c.ciss.policy_dim = 16, 8, 8
  return c
