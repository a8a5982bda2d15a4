"""The one config schema every jaxseg run starts from.

Config files (`configs/*.py`) call `default_config()` and change fields; they never
add keys. The dict is locked before command-line overrides are applied, so
`--config.optim.lrr=1` (a typo) or `--config.optim.lr=fast` (a wrong type) fails
while the flags are parsed, before any data is read or anything compiles.
"""
from __future__ import annotations

import ast
import importlib.util
import pathlib

import ml_collections

# The papers' named rows live in jaxseg/variants.py; re-exported here, where
# configs and benches have always looked them up (`config.RSS_VARIANTS`).
from jaxseg.variants import (ACIS_VARIANTS, CISS_OPTIONS, CISS_VARIANTS,  # noqa: F401
                             PSR_MULTI, PSR_SINGLE, RSS_OPTIONS, RSS_PAPER_IMAGE_ROWS,
                             RSS_VARIANTS, paper_last_layer_factor)


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "psl"  # key of jaxseg.trainers.TRAINERS
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "embedded"  # embedded | folder | instance_folder
  c.data.root = ""  # folder datasets: images/{split}, labels/{split}, classes.txt
  c.data.ignore_index = 255
  c.data.train_split = "train"
  c.data.val_split = "val"
  c.data.resize = ml_collections.FieldReference(None, field_type=tuple)  # (H, W) at load
  # Decode a split once into memory: True, False (decode in the input workers) or
  # None (when the decoded split fits in 2 GiB; the papers' datasets do not).
  c.data.cache = ml_collections.FieldReference(None, field_type=bool)
  c.data.data_dir = ""  # embedded dataset cache ("" = $JAXSEG_DATA_DIR or ~/.cache)
  c.data.image_size = (128, 128)  # embedded dataset image size
  c.data.crop_size = (128, 128)
  c.data.scale_range = (0.5, 2.0)
  c.data.flip = True
  c.data.photometric = True
  c.data.rotate = False  # random 90° rotations (square crops)
  c.data.worker_count = 0  # grain worker processes (0 = in the main process)
  # Cross-entropy class weights: explicit (C,) values, or computed from the train
  # labels: "none" | "median_frequency" | "sqrt_median_frequency".
  c.data.class_weights = ml_collections.FieldReference(None, field_type=tuple)
  c.data.class_weighting = "none"

  c.model = ml_collections.ConfigDict()
  c.model.name = "sfpnext"  # key of jaxseg.models.MODELS
  c.model.backbone = "convnext_v2_nano"
  c.model.drop_path_rate = 0.1
  c.model.fpn_dim = 256
  c.model.head_dim = 128
  c.model.attention = True
  c.model.dropout = 0.1
  c.model.dtype = "float32"
  # The classifier's init: <= 0: Flax's LeCun normal; > 0: normal(std), 0.01 as
  # mmsegmentation's conv_seg (a fresh classifier is then a near-uniform policy).
  # LeCun measured better for PSL from IDD-Lite starts on CamVid (0.461 vs 0.428
  # with a cold start, 0.462 vs 0.418 from a backbone); RSS `scalar` keeps 0.01
  # (steadier over seeds; docs/rss_scalar.md).
  c.model.classifier_init_std = 0.0
  c.model.depthwise_impl = "auto"  # auto | shift (fast on CPU) | lax (grouped conv)
  c.model.norm = "group"  # ResNets: group | affine (imported BatchNorm, folded)
  # Backbone weights (jaxseg.models.weights): a .safetensors / .pth / .bin file in
  # timm's names, or a jaxseg checkpoint dir; "none" = from scratch on purpose.
  c.model.pretrained = ""
  c.model.pretrained_source = ""  # what a paper config expects (named in its error)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # adamw | sgd
  c.optim.momentum = 0.9  # sgd only
  c.optim.lr = 1e-4
  c.optim.end_lr = 0.0
  c.optim.weight_decay = 0.05
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.warmup_steps = 100
  c.optim.poly_power = 1.0
  c.optim.grad_clip_norm = 1.0  # 0 = off
  c.optim.last_layer_lr_factor = 1.0  # the RSS paper's last-layer factor
  # Weight average evaluated, saved as `ema_params` and handed on (0 = off;
  # e.g. 0.999): trainers/step.py ema_update.
  c.optim.ema_decay = 0.0
  # Extra (regex over "a/b/kernel" param paths, factor) pairs; first match wins.
  c.optim.lr_multipliers = ml_collections.FieldReference((), field_type=tuple)

  c.batch_size = 16  # global
  c.total_steps = 1000
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.init_from = ""  # checkpoint dir of another run (cold start)
  # A cold start trained first, as stage "cold": PSL on another dataset (e.g. RSS on
  # Cityscapes from Mapillary), with this run's model and data settings; its params
  # then start every later stage. Used by RSS when `cold_start.root` is set.
  c.cold_start = ml_collections.ConfigDict()
  c.cold_start.name = ""  # data.name of the other dataset
  c.cold_start.root = ""  # its data.root ("" = no cold-start stage)
  c.cold_start.steps = 0  # its length (0 = total_steps)
  c.cold_start.ignore_index = -1  # its data.ignore_index (-1 = this run's)
  c.cold_start.lr = 0.0  # its optim.lr (0 = this run's); its last-layer factor is 1
  # What later stages take from it: model = every layer but the classifier
  # (init_from, the paper's "cold start") | backbone = the backbone alone
  # (model.pretrained, fresh neck and head: an ImageNet-pretrained start's stand-in).
  c.cold_start.load = "model"
  c.cold_start.workdir = ""  # where it trains / is reused ("" = WORKDIR/cold)

  # RSS, trainer "rss" (SPEC §1; jaxseg/algorithms/rss.py).
  c.rss = ml_collections.ConfigDict()
  c.rss.level = "image"  # pixel | image
  c.rss.num_samples = 4  # N action maps (image) or actions per pixel (pixel)
  c.rss.sync_an = True  # advantage statistics over the global batch
  c.rss.nosync_groups = 0  # sync_an=False: shards normalising alone (0 = devices)
  c.rss.pixel_group = "global"  # pixel level: global | per_pixel
  c.rss.image_group = "image"  # image level without PSD: image | global
  c.rss.score = "miou"  # key of jaxseg.algorithms.rss.SCORES
  # PSR: fractions of the label map, e.g. (1/16, 1/8, 1/4, 1); (1.0,) = naive.
  c.rss.psr_scales = ml_collections.FieldReference((1.0,), field_type=tuple)
  c.rss.psr_weights = ml_collections.FieldReference((), field_type=tuple)  # () = 1 each
  c.rss.psr_schedule = "all"  # all | coarse_to_fine
  c.rss.psr_unlock_fraction = 0.5  # coarse_to_fine: every scale on by this fraction
  # Image level: how a position is credited — map (one advantage per map: naive /
  # PSR) | psd (pair-wise spatial difference) | greedy (PSD against the greedy map's
  # reward, self-critical) | critic (a per-position critic fitted to the scalar
  # rewards; the classifier gets 2·C outputs) | class (jaxseg's psr_class: the IoU
  # term of the class it chose, C numbers per map instead of the paper's one scalar).
  c.rss.credit = "map"
  c.rss.critic_coef = 1.0  # credit "critic": weight of its regression loss
  # Advantage over the N maps of an image (rewards.group_advantages): raw | grpo |
  # drgrpo (no std division) | rloo (leave-one-out) | rank (GRPO of the ranks).
  c.rss.advantage = "grpo"
  c.rss.psd_std_normalize = False  # divide PSD advantages by the RMS of the non-zero ones
  c.rss.drop_flat = False  # images whose N rewards are equal leave the loss's normaliser
  # Image level: each map redraws a position with this probability, else takes a draw
  # shared by the N maps (common random numbers; 1 = independent maps, the paper's).
  c.rss.resample = 1.0
  # The policy loss (algorithms/policy.py): reinforce | clip (PPO's clipped ratio, ε =
  # clip_eps), and how many updates each draw feeds (epochs > 1: image level).
  c.rss.policy_loss = "reinforce"
  c.rss.clip_eps = 0.2
  c.rss.epochs = 1
  c.rss.entropy_coef = 0.0  # entropy bonus
  c.rss.explore_eps = 0.0  # sample from (1 - eps) * pi + eps * uniform
  c.rss.class_diagnostics = False  # log train/cls/{pred,label,entropy,sampled}/<c>
  c.rss.compare_psl = False  # also train PSL on the same budget and compare

  # CiSS-Net, trainer "ciss" (SPEC §2; jaxseg/algorithms/ciss.py). Paper values.
  c.ciss = ml_collections.ConfigDict()
  c.ciss.context = "policy"  # policy (CiSS-Net) | pmap (raw p-map) | none (baseline)
  c.ciss.steps = 2  # T iterations unrolled in the train step (authors' code: 8)
  c.ciss.rollout = "auto"  # scan | unroll | auto (unroll on CPU, scan elsewhere)
  c.ciss.inference_steps = 2  # t reported as val/miou
  c.ciss.eval_steps = (0, 2, 4, 6)  # val/miou_t{t}
  c.ciss.gamma = 0.9
  c.ciss.window = (5, 5)  # reward window (Ch, Cw)
  c.ciss.beta_correct = 0.4  # β1
  c.ciss.beta_uncertain = 0.2  # β2
  c.ciss.ce_weight = 1.0  # λ1
  c.ciss.entropy_coef = 0.05  # λ2 (0.001 = "gated p-map")
  c.ciss.value_coef = 1.0
  c.ciss.rl_lr_factor = 0.1  # Bias Net + Context Net lr / Base Net lr
  c.ciss.width = 512
  c.ciss.context_dim = 256  # F_e channels per PPM bin
  c.ciss.policy_dim = 64  # Context Net PPM channels per bin
  c.ciss.dropout = 0.1
  c.ciss.trunk_steps = 0  # no init_from: train the PSL trunk this long first

  # ACIS, trainer "acis" (SPEC §3; jaxseg/algorithms/acis/). Paper / authors' values.
  c.acis = ml_collections.ConfigDict()
  c.acis.method = "ac"  # bl | bl_trunc | ac
  c.acis.image_size = 224  # S: images are resized to S x S (masks pasted back for eval)
  c.acis.max_instances = 21  # padded ground truth per image; inference steps
  c.acis.latent_dim = 16
  c.acis.encoder_features = (32, 48, 64, 96, 128)  # [conv3x3, ReLU, pool] stages
  c.acis.decoder_features = (96, 64, 48, 32, 16)  # State-Pyramid decoder stages
  c.acis.embed_dim = 512
  c.acis.hidden_dim = 512  # LSTM
  c.acis.lstm_layers = 2
  c.acis.head_dim = 256
  c.acis.critic_features = (32, 64, 128, 256, 512)
  c.acis.critic_fc = (1024, 1024, 512)
  c.acis.preproc_features = (32, 64, 128)
  c.acis.num_angle_bins = 8
  c.acis.state_pyramid = True  # False: AC-Dice-NoSP
  c.acis.kl_weight = 1e-4  # β_KL of the actor update (0: AC-Dice-NoKL)
  c.acis.cvae_kl_weight = 1e-4  # β of the cVAE pre-training
  c.acis.cvae_lr_steps = ()  # fractions of the cVAE stage where its lr drops ×0.1
  c.acis.final_lr_steps = ()  # the same for the final stage (BL, BL-Trunc, AC)
  c.acis.sample_actions = False  # True: critic / actor episodes sample a = μ + σε (paper
  # text); False: a = μ, as the authors' code runs them (-criticNoise 0 -realNoise 0)
  c.acis.explore_std = 0.0  # with sample_actions, critic episodes use σ ≥ this
  c.acis.critic_sample = False  # True: critic episodes sample (σ ≥ explore_std) while
  # the actor's stay at μ, so Q also sees masks around the actor's
  c.acis.load_last = "random"  # M_0 of episodes: none | last | random | any (episode.load_episode)
  c.acis.init_steps = 2000  # the supervised actor init stage (0: none, AC from the cVAE)
  c.acis.init_length = 1  # its episode length, the authors' -seq_length 1
  c.acis.init_load = "random"  # its M_0 (the authors': last)
  c.acis.paint_erode = 0  # painted instances eroded by r ~ U{0..this} px (authors: 0)
  c.acis.init_actor = "fresh"  # fresh | cvae: the actor it starts from
  c.acis.weight_decay = 0.0  # L2 on the actor-init and final stages' gradients
  c.acis.matching = "device"  # device | host: Hungarian matching on device or by scipy
  c.acis.gamma = 0.9
  c.acis.critic_warmup = 1024  # critic-only steps
  c.acis.critic_per_actor = 3  # then critic k steps, actor 1
  c.acis.critic_lr_factor = 2.0
  c.acis.grad_clamp = 1.0  # actor gradient clamped to ±this (0 = off)
  c.acis.seq_lengths = (5, 10, 15)  # episode length, equal shares of the run
  c.acis.termination_weight = 1.0
  c.acis.dice_loss_weight = 0.0  # cVAE / BL mask loss: BCE + w·(1 − soft Dice); paper: 0
  c.acis.rollout = "auto"  # scan | unroll | auto (unroll on CPU); see trainers/step.py
  c.acis.preproc_steps = 2000
  c.acis.cvae_steps = 2000
  c.acis.eval_blocks = ("lstm", "mask")  # Tab. 2: also evaluate with one state zeroed

  c.eval = ml_collections.ConfigDict()
  c.eval.crop_size = ml_collections.FieldReference(None, field_type=tuple)  # None = data.crop_size
  c.eval.stride_fraction = 2 / 3  # sliding window stride as a fraction of the crop
  c.eval.batch_size = 8  # windows per forward pass
  c.eval.max_examples = 0  # 0 = the whole split
  c.eval.panel_examples = 4
  # "ss": single scale; "mf": also multi-scale + flip (val/miou_mf beside val/miou).
  c.eval.mode = "ss"
  c.eval.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # MF scales of the test image
  c.eval.flip = True  # MF adds the mirrored image at every scale
  # (long, short): rescale each val image to fit, keeping its aspect (mmsegmentation's
  # test resize), predictions resized back to the full-resolution label; None = as is.
  c.eval.image_scale = ml_collections.FieldReference(None, field_type=tuple)
  return c


def weight_fixture(name: str) -> str:
  """A tiny timm-named weights file of tests/fixtures/weights/ (a `*_test` model
  size), for the `runlocal` variants of configs that start from pretrained weights."""
  root = pathlib.Path(__file__).resolve().parent.parent
  return str(root / "tests" / "fixtures" / "weights" / f"{name}.safetensors")


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to seconds on a laptop CPU: tiny model, few steps."""
  c.model.backbone = "convnext_v2_debug"
  c.model.fpn_dim = 16
  c.model.head_dim = 16
  c.model.depthwise_impl = "lax"  # compiles faster than the CPU-tuned "shift"
  c.batch_size = 2
  c.total_steps = 6
  c.log_every = 2
  c.eval_every = 6
  c.checkpoint_every = 3
  c.optim.warmup_steps = 2
  c.eval.max_examples = 4
  return c


def _split_arg(arg: str | None) -> dict[str, str]:
  out = {}
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    out[key.strip()] = value.strip() or "1"
  return out


def parse_arg(arg: str | None, options=("runlocal",)) -> dict[str, str]:
  """Parses the `:ARG` of `--config=file.py:ARG` as `name` or `k=v,k2=v2`;
  anything not in `options` (e.g. the typo `runlocla`) is an error."""
  out = _split_arg(arg)
  unknown = [a for a in out if a not in options]
  if unknown:
    raise ValueError(f"config argument(s) {unknown} not understood; this config takes "
                     f"{' or '.join(options) or 'no argument'}.")
  return out


def parse_variant(arg: str | None, variants, *, default: str,
                  options=("runlocal",)) -> tuple[str, dict[str, str]]:
  """`--config=file.py:VARIANT[,opt][,opt=v]` -> (variant, {opt: v}).

  Exactly one of `variants` (or `default` when none is given); every other
  entry must be in `options`, so a typo fails while the flags are parsed.
  """
  args = _split_arg(arg)
  chosen = [a for a in args if a in variants]
  unknown = [a for a in args if a not in variants and a not in options]
  if unknown or len(chosen) > 1:
    raise ValueError(
        f"config argument(s) {unknown or chosen} not understood: use VARIANT"
        f"{''.join(f'[,{o}]' for o in options)} with VARIANT one of {tuple(variants)}.")
  return (chosen[0] if chosen else default), args


def check_choice(key: str, value, choices) -> None:
  """Raises `config.KEY=VALUE is unknown; choose from (...)` unless VALUE is one
  of `choices`: the one "must be one of" check every module uses."""
  if value not in choices:
    raise ValueError(f"config.{key}={value!r} is unknown; choose from {tuple(choices)}.")


def apply_variant(c: ml_collections.ConfigDict, table: dict, name: str
                  ) -> ml_collections.ConfigDict:
  """`table[name]`'s flattened overrides, in place."""
  check_choice("VARIANT", name, table)
  c.update_from_flattened_dict(dict(table[name]))
  return c


def apply_options(c: ml_collections.ConfigDict, args: dict[str, str],
                  options: dict[str, str]) -> ml_collections.ConfigDict:
  """Each `options` entry (option name -> dotted key) given in `args` (parsed
  `:ARG` strings), converted to the field's type, in place."""
  for opt, key in options.items():
    if opt in args:
      node = c
      for part in key.split("."):
        node = node[part]
      c.update_from_flattened_dict({key: type(node)(args[opt])})
  return c


def apply_sets(c: ml_collections.ConfigDict, items) -> ml_collections.ConfigDict:
  """The benchmarks' `--set KEY=VALUE` overrides (VALUE a Python literal, else a
  string), in place, with the dict locked meanwhile: a typo in a key is a
  KeyError naming it. The dict is left locked or unlocked as it came."""
  was_locked = c.is_locked
  c.lock()
  try:
    for item in items:
      key, _, value = item.partition("=")
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass
      c.update_from_flattened_dict({key: value})
  finally:
    if not was_locked:
      c.unlock()
  return c


def load_config_spec(spec: str, base: str | pathlib.Path = "") -> ml_collections.ConfigDict:
  """`PATH[:ARG]` as `--config` takes it (PATH relative to `base`)."""
  path, _, arg = str(spec).partition(":")
  return load_config_file(pathlib.Path(base) / path, arg or None)


def load_config_file(path: str | pathlib.Path, arg: str | None = None
                     ) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file, loaded as `--config=PATH:ARG` loads it
  (a module with `__file__`, so configs can build on their neighbours)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"jaxseg_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
