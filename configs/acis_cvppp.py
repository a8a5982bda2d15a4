"""ACIS on CVPPP LSC A1 leaves (SPEC §3): the paper's Tab. 1 rows as variants.

    python -m jaxseg.main --config=configs/acis_cvppp.py:ac --workdir=/tmp/acis \
        --config.data.root=../shared/data/cvppp_a1

One command runs every stage it needs, each into WORKDIR/STAGE and reused from
there once finished (or from the ACIS workdir `--config.init_from=DIR`):
preproc (foreground + angles FCN), cvae (or cvae_nosp: the cVAE pre-training),
actor_init (a fresh actor trained like BL at L = 1 on load-last episodes, the
authors' 001_init), then the variant from that actor with the decoder frozen. Metrics go to WORKDIR/STAGE/metrics.jsonl
(`val/sbd`, `val/abs_dic`, `val/mwcov`, ...).

VARIANT (after the colon, default `ac`):
  bl         actor alone, BCE against Hungarian-assigned instances, full BPTT
  bl_trunc   the same, one-step BPTT
  ac         AC-Dice: actor-critic with the soft-Dice matching reward
  ac_nokl    AC-Dice without the KL term in the actor loss
  ac_nosp    AC-Dice without the State Pyramid (its own cVAE stage)
Options: `cpu` (the 112 x 112, narrow-network scale bench/acis_ablation.py runs
on 2 CPU cores), `runlocal` (a smoke run of a few steps).

The paper: 500 x 530 images downsized by 2, 224 x 224 (here the whole image is
resized to S x S, with flips and 90° rotations), latent 16, batch 8, Adam 5e-4
(critic x2), critic warm-up 1024 steps then 3 critic steps per actor step,
sequence length 5 -> 10 -> 15. The stage lengths are this project's guesses.
"""
from jaxseg import config as config_lib


def get_config(arg=None):
  variant, args = config_lib.parse_variant(arg, config_lib.ACIS_VARIANTS, default="ac",
                                           options=("runlocal", "cpu"))
  c = config_lib.default_config()
  c.data.name = "instance_folder"
  c.data.root = "../shared/data/cvppp_a1"
  c.data.flip = True
  c.data.rotate = True
  c.data.photometric = False
  c.data.scale_range = (1.0, 1.0)
  c.optim.lr = 5e-4
  c.batch_size = 8
  c.acis.preproc_steps = 5000
  c.acis.cvae_steps = 10000
  c.total_steps = 20000
  c.log_every = 50
  c.eval_every = 2000
  c.checkpoint_every = 1000
  c.eval.panel_examples = 4
  # Measured choices (docs/acis_ablation_cvppp.md, "Config choices"): BCE +
  # soft Dice, the cVAE's own β. As the authors train (their cvppp_*.sh): a
  # supervised actor init, mean-action episodes from load-last states, weight
  # decay 1e-5; `acis.sample_actions=True` explores with σ ≥ explore_std.
  c.acis.dice_loss_weight = 1.0
  c.acis.cvae_kl_weight = 1e-3
  c.acis.cvae_lr_steps = (0.5, 0.75)  # the authors' 2e-4 → 2e-5 → 2e-6 (cvppp_pretrain.sh)
  c.acis.explore_std = 1.0
  c.acis.init_steps = 4000
  c.acis.weight_decay = 1e-5
  if "cpu" in args:
    c.acis.image_size = 112
    c.acis.encoder_features = (16, 32, 48, 64)
    c.acis.decoder_features = (64, 48, 32, 16)
    c.acis.embed_dim = c.acis.hidden_dim = 256
    c.acis.head_dim = 128
    c.acis.critic_features = (16, 32, 64, 128)
    c.acis.critic_fc = (256, 256, 128)
    c.acis.preproc_features = (16, 32, 64)
    c.acis.preproc_steps = 1500
    c.acis.cvae_steps = 4000
    c.acis.init_steps = 3000
    c.acis.critic_warmup = 200
    c.acis.seq_lengths = (5,)  # the authors' first phase (epochs 601-7000 of AC)
    c.batch_size = 4
    c.total_steps = 800
    c.eval_every = 400
    c.checkpoint_every = 400
  s = c.acis.image_size
  c.data.resize = c.data.crop_size = (s, s)
  config_lib.apply_variant(c, config_lib.ACIS_VARIANTS, variant)
  if "runlocal" in args:
    c = config_lib.runlocal(c)
    c.acis.image_size = 32
    c.data.resize = c.data.crop_size = (32, 32)
    c.acis.encoder_features = c.acis.critic_features = (4, 4)
    c.acis.decoder_features = (4, 4)
    c.acis.preproc_features = (4, 4)
    c.acis.embed_dim = c.acis.hidden_dim = c.acis.head_dim = 8
    c.acis.critic_fc = (8,)
    c.acis.latent_dim = 4
    c.acis.preproc_steps = c.acis.cvae_steps = c.acis.init_steps = 2
    c.acis.critic_warmup = 2
    c.acis.critic_per_actor = 1
    c.acis.seq_lengths = (2, 3)
    c.eval.panel_examples = 2
  return c
