"""The one stage runner: a multi-stage run is a list of `Stage`s.

RSS's PSL comparison (psl → rss), CiSS-Net's trunk (trunk → ciss) and ACIS
(preproc → cvae → variant) are all plans for `run_stages`: each stage trains
into WORKDIR/NAME with its own config (the run's, with the stage's overrides
and length), and a stage that has finished there before — or in `reuse_from`
/ NAME, another run's work dir — is reused instead of trained. The final stage
is always run: it resumes, or, when finished, is evaluated once. A stage may
name its own `workdir` (a folder several runs share, e.g. one pre-training
for every row of an ablation); its `key_fields` (config key prefixes) must
then match the finished run's `config.json` before it is reused.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from etils import epath
from typing import Any, Callable

import ml_collections

from jaxseg import checkpoint as ckpt_lib
from jaxseg import config as config_lib
from jaxseg.trainers import loop
from jaxseg.trainers import resume
from jaxseg.trainers import writer as writer_lib

# train(config, workdir, earlier results by stage name) -> Result
StageTrain = Callable[[ml_collections.ConfigDict, epath.Path, dict], loop.Result]


@dataclasses.dataclass(frozen=True)
class Stage:
  """name: its directory under the run's; train: how to train it; overrides:
  flattened config overrides, or a function of the earlier stages' results
  returning them; steps: its length (None: `config.total_steps`); final:
  never reused; workdir: where it trains and is found (None: the run's
  WORKDIR/NAME); key_fields: config key prefixes a finished run must share
  to be reused (checked against its `config.json`)."""
  name: str
  train: StageTrain
  overrides: dict[str, Any] | Callable[[dict], dict[str, Any]] = dataclasses.field(
      default_factory=dict)
  steps: int | None = None
  final: bool = False
  workdir: str | None = None
  key_fields: tuple[str, ...] = ()


def finished(path: epath.Path, steps: int) -> bool:
  """A run in `path` has a checkpoint of at least `steps` (> 0) steps."""
  return (ckpt_lib.latest_step(path) or 0) >= steps > 0


def reused(path: epath.Path) -> loop.Result:
  """The `Result` of a finished run from its files (params stay on disk:
  `checkpoint.load_params(result.workdir)`)."""
  metrics = {}
  if (path / "metrics.jsonl").exists():
    for record in writer_lib.read_metrics(path):
      metrics.update({k: v for k, v in record.items() if k.startswith("val/")})
  return loop.Result(workdir=path, step=ckpt_lib.latest_step(path) or 0, metrics=metrics)


def check_reusable(stage: Stage, path: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every `stage.key_fields` field in which the
  finished run in `path` differs from the stage's `config`."""
  saved = resume.read_config(path)
  if not stage.key_fields or saved is None:
    return
  changed = [c for c in resume.config_changes(saved, config)
             if c.startswith(stage.key_fields)]
  if changed:
    raise ValueError(f"stage {stage.name}: the finished run in {path} was trained with "
                     f"another config ({'; '.join(changed)}); point this run elsewhere "
                     f"or move that folder away.")


def stage_config(config: ml_collections.ConfigDict, stage: Stage,
                 earlier: dict[str, loop.Result]) -> ml_collections.ConfigDict:
  c = copy.deepcopy(config)
  overrides = stage.overrides(earlier) if callable(stage.overrides) else stage.overrides
  c.update_from_flattened_dict(dict(overrides))
  c.total_steps = c.total_steps if stage.steps is None else stage.steps
  c.eval_every = min(c.eval_every, c.total_steps)  # evaluated and saved at its end
  c.checkpoint_every = min(c.checkpoint_every, c.total_steps)
  return c


def run_stages(config: ml_collections.ConfigDict, workdir, plan: list[Stage], *,
               reuse_from: str | epath.Path | None = None) -> dict[str, loop.Result]:
  """Runs (or reuses) every stage of `plan` in order; results by stage name."""
  workdir = epath.Path(workdir)
  done: dict[str, loop.Result] = {}
  for stage in plan:
    c = stage_config(config, stage, done)
    own = epath.Path(stage.workdir) if stage.workdir else workdir / stage.name
    other = epath.Path(reuse_from) / stage.name if reuse_from else None
    if not stage.final and other is not None and finished(other, c.total_steps):
      logging.info("stage %s: from the finished run in %s", stage.name, other)
      done[stage.name] = reused(other)
    elif not stage.final and finished(own, c.total_steps):
      check_reusable(stage, own, c)
      logging.info("stage %s: reusing the finished run in %s", stage.name, own)
      done[stage.name] = reused(own)
    else:
      logging.info("stage %s: %d steps into %s", stage.name, c.total_steps, own)
      done[stage.name] = stage.train(c, own, done)
  return done


COLD_LOADS = ("model", "backbone")
# What a cold-start stage's run must share with the one it is reused for.
COLD_KEY_FIELDS = ("trainer", "model.", "data.", "optim.", "batch_size", "total_steps",
                   "cold_start.")


def cold_stage(config: ml_collections.ConfigDict, train: StageTrain) -> list[Stage]:
  """Stage "cold" (`train`, the PSL trainer, on `config.cold_start`'s dataset)
  when `cold_start.root` is set, else none; `cold_init` then points later
  stages at its params (semantic methods: PSL, RSS).

  It trains in `cold_start.workdir` (default WORKDIR/cold; a finished one with
  the same model, data and optimizer fields is reused, so several runs can
  share one), with this run's model and crop, its own data (`name`, `root`,
  `ignore_index`), learning rate (`lr`) and a last-layer factor of 1."""
  cs = config.cold_start
  if not cs.root:
    return []
  if config.init_from:
    raise ValueError("config.cold_start.root trains a cold start and config.init_from "
                     "loads one: set one of them.")
  if not cs.name:
    raise ValueError("config.cold_start.root needs config.cold_start.name (its data.name, "
                     "e.g. mapillary or folder).")
  config_lib.check_choice("cold_start.load", cs.load, COLD_LOADS)
  overrides = {"trainer": "psl", "data.name": cs.name, "data.root": cs.root,
               "optim.last_layer_lr_factor": 1.0}
  if cs.ignore_index >= 0:
    overrides["data.ignore_index"] = cs.ignore_index
  if cs.lr > 0:
    overrides["optim.lr"] = cs.lr
  return [Stage("cold", train, overrides, steps=cs.steps or None,
                workdir=cs.workdir or None, key_fields=COLD_KEY_FIELDS)]


def cold_init(config, plan, overrides=None):
  """Overrides of a stage after `plan`: the cold stage's params as its start —
  the whole model but the classifier (`init_from`, `cold_start.load="model"`)
  or the backbone alone (`model.pretrained`, fresh neck and head)."""
  overrides = dict(overrides or {})
  if not plan:
    return overrides
  key = "init_from" if config.cold_start.load == "model" else "model.pretrained"
  return lambda earlier: {**overrides, key: str(earlier["cold"].workdir)}
