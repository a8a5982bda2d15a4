"""Entry point: `python -m jaxseg.main --config=configs/NAME.py[:ARG] --workdir=DIR`.

Any field can be overridden with `--config.a.b=VALUE`; the config is locked, so a
misspelt key or a value of the wrong type fails here, before anything compiles.
"""
import logging as py_logging

from absl import app, flags, logging
from ml_collections import config_flags

from jaxseg import trainers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
flags.mark_flags_as_required(["config", "workdir"])


_QUIET = ("orbax", "tensorflow_datasets", "grain", "jax/_src")


def _drop_library_info(record) -> bool:
  """Keeps the console to jaxseg's own progress: libraries' INFO lines go."""
  return record.levelno >= py_logging.WARNING or not any(q in record.pathname for q in _QUIET)


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_drop_library_info)
  config = _CONFIG.value
  logging.info("config:\n%s", config)
  trainers.get_trainer(config.trainer)(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
