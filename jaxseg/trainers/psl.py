"""PSL trainer: the supervised baseline (`algorithms.psl`) on the semantic run."""
from __future__ import annotations

from jaxseg import algorithms
from jaxseg.algorithms import psl
from jaxseg.trainers import semantic
from jaxseg.trainers import stages


def make_loss(config, *, model, info, mesh=None):
  """Cross-entropy with the dataset's ignore value and optional class weights."""
  del config, mesh
  return psl.make_loss(algorithms.make_apply_fn(model), ignore_index=info.ignore_index,
                       class_weights=info.class_weights)


def train_psl(config, workdir, earlier=None):
  del earlier  # a stage of its own (see `stages`)
  return semantic.train(config, workdir, make_loss=make_loss)


def train_and_evaluate(config, workdir, earlier=None):
  """PSL; with `cold_start.root`, PSL on that dataset first (stage `cold`,
  `stages.cold_stage`) and this run from its params into WORKDIR/psl."""
  del earlier
  cold = stages.cold_stage(config, train_psl)
  if not cold:
    return train_psl(config, workdir)
  plan = [*cold, stages.Stage("psl", train_psl, stages.cold_init(config, cold), final=True)]
  return stages.run_stages(config, workdir, plan)["psl"]
