"""Trainers: the only code with loops, I/O and config reading.

`TRAINERS` maps `config.trainer` to `train_and_evaluate(config, workdir)`,
which returns a `loop.Result`. Shared by every method: `step` (the compiled
update), `loop` (the run), `stages` (multi-stage runs), `semantic` (model,
optimizer and mIoU evaluation of the semantic methods).
"""
from jaxseg.trainers import acis, ciss, psl, rss

TRAINERS = {
    "acis": acis.train_and_evaluate,
    "ciss": ciss.train_and_evaluate,
    "psl": psl.train_and_evaluate,
    "rss": rss.train_and_evaluate,
}


def get_trainer(name: str):
  if name not in TRAINERS:
    raise ValueError(f"config.trainer={name!r} is unknown; choose from {sorted(TRAINERS)}.")
  return TRAINERS[name]
