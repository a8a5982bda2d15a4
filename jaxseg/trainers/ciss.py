"""CiSS-Net trainer: reads `config.ciss` into `algorithms.ciss`, trains the PSL
trunk first when no `config.init_from` is given (a stage, into WORKDIR/trunk,
reused when finished), then CiSS-Net into WORKDIR/ciss with the trunk frozen
and the Bias/Context Nets at `ciss.rl_lr_factor` × lr. Evaluation reports
val/miou_t{t} for every `ciss.eval_steps` t (extra logit heads of one pass)."""
from __future__ import annotations

import functools
import logging
from etils import epath

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg import models as models_lib
from jaxseg import plots
from jaxseg.algorithms import ciss
from jaxseg.models.ciss import CiSSNet
from jaxseg.models.sfpnext import resize_bilinear
from jaxseg.trainers import psl
from jaxseg.trainers import semantic
from jaxseg.trainers import stages
from jaxseg.trainers import step as step_lib


def validate(config: ml_collections.ConfigDict) -> None:
  cc = config.ciss
  config_lib.check_choice("ciss.context", cc.context, ciss.CONTEXTS)
  for key in ("steps", "inference_steps"):
    if cc[key] < 0:
      raise ValueError(f"config.ciss.{key}={cc[key]} must be >= 0.")
  if any(t < 0 for t in cc.eval_steps):
    raise ValueError(f"config.ciss.eval_steps={tuple(cc.eval_steps)} must be >= 0.")
  if not 0.0 <= cc.gamma <= 1.0:
    raise ValueError(f"config.ciss.gamma={cc.gamma} must be in [0, 1].")
  step_lib.rollout_unrolled(cc.rollout, "ciss.rollout")
  if any(w % 2 == 0 or w < 1 for w in cc.window):
    raise ValueError(f"config.ciss.window={tuple(cc.window)} must be positive odd sizes.")
  if cc.width % 16:
    raise ValueError(f"config.ciss.width={cc.width} must be a multiple of 16 "
                     "(GroupNorm groups of 16 channels).")


def build_model(config: ml_collections.ConfigDict, info) -> CiSSNet:
  cc = config.ciss
  return CiSSNet(trunk=models_lib.build_model(config.model, info.num_classes),
                 num_classes=info.num_classes, width=cc.width,
                 context_dim=cc.context_dim, policy_dim=cc.policy_dim, dropout=cc.dropout)


def make_loss(config, *, model, info, mesh=None):
  """The CiSS-Net loss (Eq. 7) of `config.ciss` on `model` (a `CiSSNet`)."""
  del mesh
  validate(config)
  cc = config.ciss
  return ciss.make_loss(
      model, num_classes=info.num_classes, ignore_index=info.ignore_index,
      class_weights=info.class_weights, context=cc.context, steps=cc.steps, gamma=cc.gamma,
      window=tuple(cc.window), beta_correct=cc.beta_correct,
      beta_uncertain=cc.beta_uncertain, ce_weight=cc.ce_weight,
      entropy_coef=cc.entropy_coef, value_coef=cc.value_coef,
      unroll=step_lib.rollout_unrolled(cc.rollout, "ciss.rollout"))


def eval_steps(config) -> tuple[tuple[int, ...], int]:
  """The steps evaluated (sorted, with the inference step) and the main one's index."""
  ts = sorted(set(config.ciss.eval_steps) | {config.ciss.inference_steps})
  return tuple(ts), ts.index(config.ciss.inference_steps)


def make_predict(model, config):
  """predict(params, images) -> (n, H, W, len(ts)·C) logits of the steps ts."""
  ts, main = eval_steps(config)
  predict = jax.jit(functools.partial(ciss.predict_steps, model,
                                      context=config.ciss.context, steps=ts))
  return predict, tuple(f"t{t}" for t in ts), main


def make_panel(model, config, info):
  """Rows of [image | label | p-map t=0 | K_0 | p-map t=1 | K_1 | …] (Fig. 1);
  context maps show "uncertain" in white."""
  steps = min(max(eval_steps(config)[0]), 3)

  @jax.jit
  def run(params, images):
    zs, ks = ciss.rollout_logits(model, params, images, context=config.ciss.context,
                                 steps=steps)
    h, w = images.shape[1:3]
    return jnp.stack([jnp.argmax(resize_bilinear(z, h, w), -1) for z in zs]), ks

  def panel(params, images, labels):
    preds, ks = jax.device_get(run(params, images))
    col = lambda m: plots.colorize(m, info.num_classes, info.ignore_index)

    def context_tile(k):
      f = images.shape[1] // k.shape[0]
      k = np.repeat(np.repeat(k, f, 0), f, 1)
      tile = col(k - 1)
      tile[k == 0] = 255  # uncertain
      return tile

    return plots.tile_rows([
        [images[i], col(labels[i]), col(preds[0, i])]
        + [x for t in range(steps) for x in (context_tile(ks[t, i]), col(preds[t + 1, i]))]
        for i in range(images.shape[0])])

  return panel


def load_trunk(params, config):
  """Fresh CiSS params with `params["trunk"]` from the PSL checkpoint `init_from`."""
  loaded = ckpt_lib.load_params(config.init_from)
  merged, _ = ckpt_lib.merge_init(params["trunk"], loaded, reinit_pattern="^$")
  logging.info("CiSS-Net trunk from %s (frozen)", config.init_from)
  return {**params, "trunk": merged}


def lr_multipliers(config: ml_collections.ConfigDict) -> tuple:
  """`optim.lr_multipliers` of a CiSS-Net run: the trunk frozen (factor 0), the
  Bias and Context Nets at `ciss.rl_lr_factor`, then the config's own."""
  return ((ciss.TRUNK_PATTERN, 0.0), (ciss.RL_PATTERN, config.ciss.rl_lr_factor),
          *config.optim.lr_multipliers)


def train_ciss(config: ml_collections.ConfigDict, workdir, earlier=None):
  """CiSS-Net on the frozen trunk `config.init_from`."""
  del earlier
  config.optim.lr_multipliers = lr_multipliers(config)
  return semantic.train(config, workdir, make_loss=make_loss, build_model=build_model,
                        init_params=load_trunk, make_predict=make_predict,
                        make_panel=make_panel)


def stage_plan(config: ml_collections.ConfigDict) -> list[stages.Stage]:
  """[trunk (PSL, `ciss.trunk_steps`) unless `init_from` names one,] ciss."""
  if config.init_from:
    return [stages.Stage("ciss", train_ciss, final=True)]
  if config.ciss.trunk_steps <= 0:
    raise ValueError("CiSS-Net needs a frozen trunk: set config.init_from to a PSL "
                     "checkpoint directory or config.ciss.trunk_steps > 0 to train one "
                     "into WORKDIR/trunk first.")
  return [stages.Stage("trunk", psl.train_and_evaluate, {"trainer": "psl", "init_from": ""},
                       steps=config.ciss.trunk_steps),
          stages.Stage("ciss", train_ciss, lambda done: {"init_from": str(done["trunk"].workdir)},
                       final=True)]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, earlier=None):
  """The PSL trunk stage when needed (WORKDIR/trunk), then CiSS-Net (WORKDIR/ciss)."""
  del earlier
  validate(config)
  return stages.run_stages(config, epath.Path(workdir), stage_plan(config))["ciss"]
