"""The one stage runner: a multi-stage run is a list of `Stage`s.

RSS's PSL comparison (psl → rss), CiSS-Net's trunk (trunk → ciss) and ACIS
(preproc → cvae → variant) are all plans for `run_stages`: each stage trains
into WORKDIR/NAME with its own config (the run's, with the stage's overrides
and length), and a stage that has finished there before — or in `reuse_from`
/ NAME, another run's work dir — is reused instead of trained. The final stage
is always run: it resumes, or, when finished, is evaluated once.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from etils import epath
from typing import Any, Callable

import ml_collections

from jaxseg import checkpoint as ckpt_lib
from jaxseg.trainers import loop
from jaxseg.trainers import writer as writer_lib

# train(config, workdir, earlier results by stage name) -> Result
StageTrain = Callable[[ml_collections.ConfigDict, epath.Path, dict], loop.Result]


@dataclasses.dataclass(frozen=True)
class Stage:
  """name: its directory under the run's; train: how to train it; overrides:
  flattened config overrides, or a function of the earlier stages' results
  returning them; steps: its length (None: `config.total_steps`); final:
  never reused."""
  name: str
  train: StageTrain
  overrides: dict[str, Any] | Callable[[dict], dict[str, Any]] = dataclasses.field(
      default_factory=dict)
  steps: int | None = None
  final: bool = False


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
    own = workdir / stage.name
    other = epath.Path(reuse_from) / stage.name if reuse_from else None
    if not stage.final and other is not None and finished(other, c.total_steps):
      logging.info("stage %s: from the finished run in %s", stage.name, other)
      done[stage.name] = reused(other)
    elif not stage.final and finished(own, c.total_steps):
      logging.info("stage %s: reusing the finished run in %s", stage.name, own)
      done[stage.name] = reused(own)
    else:
      logging.info("stage %s: %d steps into %s", stage.name, c.total_steps, own)
      done[stage.name] = stage.train(c, own, done)
  return done
