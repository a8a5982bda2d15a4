"""ACIS trainer: reads `config.acis` into `algorithms.acis` and runs the stages

  preproc/       PreprocNet: BCE on the foreground and the 8 angle bins.
  cvae[_nosp]/   Actor (one LSTM step from a zero state) + Decoder as a cVAE on
                 one random ground-truth instance: mask loss + β·KL(q ‖ N(0, I)).
  actor_init[_nosp]/  the authors' `001_init`: a fresh actor (`acis.init_actor`)
                 trained like BL at L = `acis.init_length` (1) on load-last
                 episodes (`acis.init_load`) through the frozen decoder, so every
                 variant starts from an actor that already works.
  VARIANT/       from the same init, the decoder frozen; bl (full BPTT),
                 bl_trunc (one-step BPTT), ac / ac_nokl / ac_nosp (critic on
                 discounted matching rewards, actor by the deterministic policy
                 gradient through the decoder)

with the one stage runner: each into WORKDIR/STAGE, reused when finished there
or in the ACIS work dir `config.init_from`. A stage starts from the params of
the stages before it (loaded from their checkpoints) and trains the groups
`steps.TRAINS` names with one Adam each (`optim.per_group`; the critic's at
`acis.critic_lr_factor` × lr, the final actor's clamped to ±`acis.grad_clamp`).

The critic / actor schedule (`acis.critic_warmup` critic-only steps, then
`acis.critic_per_actor` critic steps per actor step) and the sequence length
(`acis.seq_lengths`, equal shares of the run) are functions of the host step:
each (kind, L) is its own compiled step (`loop.Task.step_kind`).
"""
from __future__ import annotations

import copy
import functools
from etils import epath

import jax
import ml_collections
import optax

from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg import optim
from jaxseg import parallel
from jaxseg.algorithms.acis import episode as ep
from jaxseg.algorithms.acis import steps
from jaxseg.data import instance_targets
from jaxseg.data.errors import DataError
from jaxseg.models import acis as nets_lib
from jaxseg.trainers import acis_eval
from jaxseg.trainers import loop
from jaxseg.trainers import stages
from jaxseg.trainers import step as step_lib

METHODS = ("bl", "bl_trunc", "ac")
BLOCKS = ("none", "lstm", "mask")
INIT_ACTORS = ("fresh", "cvae")


def validate(config: ml_collections.ConfigDict) -> None:
  a = config.acis
  config_lib.check_choice("acis.method", a.method, METHODS)
  n = max(len(a.encoder_features), len(a.decoder_features), len(a.critic_features))
  if a.image_size % 2 ** n or a.image_size % 2 ** (len(a.preproc_features) - 1):
    raise ValueError(f"config.acis.image_size={a.image_size} must be divisible by 2**{n} "
                     "(one max-pool / upsampling per encoder, decoder and critic stage).")
  size = (a.image_size, a.image_size)
  for key in ("resize", "crop_size"):
    if tuple(config.data[key] or ()) != size:
      raise ValueError(f"config.data.{key}={config.data[key]} must be (acis.image_size, "
                       f"acis.image_size) = {size}: the networks are built for S x S "
                       "images (set the three together).")
  if len(a.encoder_features) != len(a.decoder_features):
    raise ValueError("config.acis.encoder_features and decoder_features need the same "
                     "number of stages (the bottleneck grid is image_size / 2**stages).")
  if not a.seq_lengths or min(a.seq_lengths) < 1 or max(a.seq_lengths) > a.max_instances:
    raise ValueError(f"config.acis.seq_lengths={tuple(a.seq_lengths)} must be in "
                     f"[1, acis.max_instances={a.max_instances}].")
  step_lib.rollout_unrolled(a.rollout, "acis.rollout")
  if not 0.0 <= a.gamma <= 1.0:
    raise ValueError(f"config.acis.gamma={a.gamma} must be in [0, 1].")
  for b in a.eval_blocks:
    config_lib.check_choice("acis.eval_blocks entry", b, BLOCKS[1:])
  config_lib.check_choice("acis.load_last", a.load_last, ep.LOADS)
  config_lib.check_choice("acis.init_load", a.init_load, ep.LOADS)
  config_lib.check_choice("acis.init_actor", a.init_actor, INIT_ACTORS)
  if a.paint_erode < 0:
    raise ValueError(f"config.acis.paint_erode={a.paint_erode} must be >= 0 (px).")
  config_lib.check_choice("acis.matching", a.matching, ep.MATCHINGS)
  if a.init_steps < 0 or not 1 <= a.init_length <= a.max_instances:
    raise ValueError(f"config.acis.init_steps={a.init_steps} must be >= 0 (0: no actor "
                     f"init stage) and acis.init_length={a.init_length} in [1, "
                     f"acis.max_instances={a.max_instances}].")
  for key in ("preproc_steps", "cvae_steps"):
    if a[key] <= 0 and not config.init_from:
      raise ValueError(f"config.acis.{key}={a[key]} must be > 0 (or set config.init_from "
                       "to an ACIS workdir whose stages have finished).")


def build_nets(config: ml_collections.ConfigDict) -> ep.Nets:
  a = config.acis
  return ep.Nets(
      preproc=nets_lib.PreprocNet(tuple(a.preproc_features), a.num_angle_bins),
      actor=nets_lib.Actor(tuple(a.encoder_features), a.embed_dim, a.hidden_dim,
                           a.lstm_layers, a.head_dim, a.latent_dim),
      decoder=nets_lib.Decoder(tuple(a.decoder_features), a.state_pyramid),
      critic=nets_lib.Critic(tuple(a.critic_features), tuple(a.critic_fc)))


def init_params(nets: ep.Nets, config, rng):
  a = config.acis
  return ep.init_params(nets, rng, image_size=a.image_size, num_angle_bins=a.num_angle_bins,
                        latent_dim=a.latent_dim)


def seq_length(config, step: int) -> int:
  """L of (1-based) step `step`: `acis.seq_lengths` in equal shares of the run."""
  lengths = tuple(config.acis.seq_lengths)
  share = (step - 1) * len(lengths) // max(config.total_steps, 1)
  return lengths[min(share, len(lengths) - 1)]


def is_actor_step(config, step: int) -> bool:
  """After `critic_warmup` critic-only steps, every (k+1)-th step is the actor's."""
  a = config.acis
  s = step - 1 - a.critic_warmup
  return s >= 0 and s % (a.critic_per_actor + 1) == a.critic_per_actor


def step_kind(config, step: int) -> tuple[str, int]:
  """(kind of `steps` gradient, L) of the final stage's host step `step`."""
  method = config.acis.method
  kind = method if method != "ac" else ("actor" if is_actor_step(config, step) else "critic")
  return kind, seq_length(config, step)


def grads_fn(nets: ep.Nets, config, kind: str, *, frozen, length: int = 0, mesh=None):
  """`steps.{kind}_grads` with `config.acis`'s options bound: the step contract.
  With `mesh` the matching runs per device shard (`parallel.per_shard`)."""
  a = config.acis
  unroll = step_lib.rollout_unrolled(a.rollout, "acis.rollout")
  episode = dict(frozen=frozen, length=length, max_instances=a.max_instances,
                 latent_dim=a.latent_dim, unroll=unroll,
                 load=ep.Load(a.load_last, a.paint_erode))
  matching = dict(matching=a.matching, mesh=mesh)
  supervised = dict(dice_weight=a.dice_loss_weight, termination_weight=a.termination_weight)
  fn, kw = {
      "preproc": (steps.preproc_grads, dict(max_instances=a.max_instances,
                                            num_angle_bins=a.num_angle_bins)),
      "cvae": (steps.cvae_grads, dict(frozen=frozen, max_instances=a.max_instances,
                                      latent_dim=a.latent_dim, kl_weight=a.cvae_kl_weight,
                                      dice_weight=a.dice_loss_weight)),
      "init": (steps.bl_grads, dict(episode, **supervised, **matching, length=a.init_length,
                                    load=ep.Load(a.init_load, a.paint_erode))),
      "bl": (steps.bl_grads, dict(episode, **supervised, **matching)),
      "bl_trunc": (steps.bl_trunc_grads, dict(episode, **supervised, **matching)),
      "critic": (steps.critic_grads, dict(episode, **matching, gamma=a.gamma,
                                          sample=a.sample_actions or a.critic_sample,
                                          explore_std=a.explore_std)),
      "actor": (steps.actor_grads, dict(episode, kl_weight=a.kl_weight,
                                        termination_weight=a.termination_weight,
                                        sample=a.sample_actions)),
  }[kind]
  return functools.partial(fn, nets, **kw)


def lr_schedule(config, fractions, updates: int | None = None):
  """A stage's learning rate: lr, then ×0.1 from each fraction in `fractions`
  of `updates` (default `total_steps`), counted in the group's own optimizer
  updates: `acis.cvae_lr_steps` (the authors: 2e-4 for 400 epochs, 2e-5 to
  600, 2e-6 to 800, i.e. steps at 0.5 and 0.75) and `acis.final_lr_steps`."""
  n = config.total_steps if updates is None else updates
  return optax.piecewise_constant_schedule(
      config.optim.lr, {max(int(f * n), 1): 0.1 for f in fractions})


def optimizer(config, trains: tuple[str, ...], *, kind: str) -> optax.GradientTransformation:
  """Adam per trained group; the critic's at `critic_lr_factor` × lr. The
  actor-init and final stages add L2 weight decay `acis.weight_decay` to the
  gradient (torch's `optim.adam` weightDecay, as the authors train) and the
  final stage clamps the actor gradient to ±`acis.grad_clamp` before it.
  With lr steps each group's schedule runs over its own updates (AC's actor
  gets one step in four after warm-up, its critic the rest)."""
  a = config.acis
  fractions = {"cvae": a.cvae_lr_steps, "final": a.final_lr_steps}.get(kind)
  kinds = [step_kind(config, i)[0] for i in range(1, config.total_steps + 1)] \
      if kind == "final" and fractions else []

  def rate(group: str, factor: float = 1.0):
    if not fractions:
      return config.optim.lr * factor
    n = sum(k == group for k in kinds) if group in kinds else None  # else every step
    lr = lr_schedule(config, fractions, n)
    return lambda s: lr(s) * factor

  def adam(lr):
    tx = optax.adam(lr, b1=config.optim.b1, b2=config.optim.b2)
    return optax.chain(optax.add_decayed_weights(a.weight_decay), tx) \
        if a.weight_decay and kind in ("init", "final") else tx
  txs = {k: adam(rate(k, a.critic_lr_factor if k == "critic" else 1.0)) for k in trains}
  if kind == "final" and a.grad_clamp:
    txs["actor"] = optax.chain(optax.clip(a.grad_clamp), txs["actor"])
  return optim.per_group(txs)


def variant_name(a: ml_collections.ConfigDict) -> str:
  """The Tab. 1 row `config.acis` describes (the final stage's directory)."""
  if a.method != "ac":
    return a.method
  if not a.state_pyramid:
    return "ac_nosp"
  return "ac_nokl" if a.kl_weight == 0 else "ac"


def _check_counts(source, config, split: str) -> None:
  k = config.acis.max_instances
  for i in range(len(source)):
    n = instance_targets.count_instances(source[i]["instances"])
    if n > k:
      raise DataError(f"{split} image {source[i].get('name', i)!r} has {n} instances, more "
                      f"than config.acis.max_instances={k}; raise it.")


def unresized(data_config):
  """The val split is read at its original size (masks are pasted back)."""
  c = copy.deepcopy(data_config)
  c.resize = None
  return c


EVALUATORS = {"preproc": acis_eval.preproc_evaluator, "cvae": acis_eval.cvae_evaluator,
              "init": acis_eval.episode_evaluator, "final": acis_eval.episode_evaluator}
CURVE_KEYS = {"preproc": "val/fg_iou", "cvae": "val/recon_dice", "init": "val/sbd",
              "final": "val/sbd"}


def stage_trains(config, kind: str) -> tuple[str, ...]:
  """The parameter groups a stage (preproc, cvae, init or final) trains: those of
  every gradient kind it steps (`steps.TRAINS`)."""
  a = config.acis
  kinds = (kind,) if kind != "final" else ("critic", "actor") if a.method == "ac" else (a.method,)
  return tuple(sorted({g for k in kinds for g in steps.TRAINS[k]}))


def prepare(config):
  """What every stage of one command shares, read and checked once: (train
  source, val source at its original size, info), the networks and their
  fresh params (host)."""
  sources = loop.read_sources(config, val_data=unresized(config.data))
  train_source, _, info = sources
  if not info.has_instances:
    raise DataError(f"ACIS needs instance labels; dataset {info.name!r} has none (use "
                    "data.name='instance_folder').")
  _check_counts(train_source, config, config.data.train_split)
  nets = build_nets(config)
  params = jax.device_get(jax.jit(functools.partial(init_params, nets, config))(
      jax.random.key(config.seed)))
  return sources, nets, params


def train_stage(config, workdir, earlier: dict[str, loop.Result], *, kind: str, shared):
  """Trains one stage (`kind`: preproc, cvae, init or final) from the earlier
  stages' params (the init stage's actor fresh unless `acis.init_actor` is
  "cvae"); `shared` is `prepare(config)`."""
  sources, nets, params = shared
  run = loop.open_run(config, workdir, sources=sources)
  parallel.check_batch_size(config.batch_size, run.mesh)
  fresh_actor = params["actor"]
  for result in earlier.values():
    params = {**params, **(result.params if result.params is not None
                           else ckpt_lib.load_params(result.workdir))}
  if kind == "init" and config.acis.init_actor == "fresh":
    params["actor"] = fresh_actor
  final = kind == "final"
  trains = stage_trains(config, kind)
  frozen_host = {k: v for k, v in params.items() if k not in trains}
  frozen = jax.device_put(frozen_host, parallel.replicated(run.mesh))
  eval_config = config
  if kind == "init":  # Tab. 2's zeroed states are for the variants only
    eval_config = copy.deepcopy(config)
    eval_config.acis.eval_blocks = ()
  evaluate = EVALUATORS[kind](nets, eval_config)

  def run_eval(step, trained):
    p = {**frozen_host, **jax.device_get(trained)}
    metrics = evaluate(p, run.val_source, config.eval.max_examples)
    panel = None
    if final and config.eval.panel_examples and jax.process_index() == 0:
      panel = acis_eval.order_panel(p, infer=evaluate.infer, config=config,
                                    source=run.val_source, count=config.eval.panel_examples)
    return metrics, panel

  return run.train(loop.Task(
      params={k: params[k] for k in trains}, tx=optimizer(config, trains, kind=kind),
      grads=lambda k: grads_fn(nets, config, k[0], frozen=frozen, length=k[1],
                               mesh=run.mesh),
      step_kind=functools.partial(step_kind, config) if final else lambda _: (kind, 0),
      evaluate=run_eval, rng=jax.random.key(config.seed + 1),
      batch_keys=("image", "instances"), curve_keys=("train/loss", CURVE_KEYS[kind]),
      title=f"ACIS {epath.Path(workdir).name}"))


def stage_plan(config, shared=None) -> list[stages.Stage]:
  """preproc → cvae (cvae_nosp) → actor_init (_nosp; none when
  `acis.init_steps` is 0) → the variant; `shared` is `prepare(config)`."""
  a = config.acis
  stage = lambda kind: functools.partial(train_stage, kind=kind, shared=shared)  # noqa: E731
  nosp = "" if a.state_pyramid else "_nosp"
  init = [stages.Stage("actor_init" + nosp, stage("init"), steps=a.init_steps)] \
      if a.init_steps else []
  return [
      stages.Stage("preproc", stage("preproc"), steps=a.preproc_steps),
      stages.Stage("cvae" + nosp, stage("cvae"), steps=a.cvae_steps),
      *init,
      stages.Stage(variant_name(a), stage("final"), final=True),
  ]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, earlier=None, *,
                       pretrain_only: bool = False) -> loop.Result:
  """Runs the stages `config` needs (only the pre-training ones with
  `pretrain_only`); returns the last one's `Result`."""
  del earlier
  validate(config)
  plan = stage_plan(config, prepare(config))
  plan = plan[:-1] if pretrain_only else plan
  done = stages.run_stages(config, workdir, plan, reuse_from=config.init_from or None)
  return done[plan[-1].name]
