"""Entry point: `python -m jaxseg.main --config=configs/NAME.py[:ARG] --workdir=DIR`.

Any field can be overridden with `--config.a.b=VALUE`; the config is locked, so a
misspelt key or a value of the wrong type fails here, before anything compiles.

The same command runs as one of several processes (`launch/`): `jax.distributed`
starts when a launcher says so (SLURM, Open MPI, a multi-host Cloud TPU slice,
`--distributed=on`) or when `--coordinator_address`, `--num_processes` and
`--process_id` (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES,
$JAX_PROCESS_ID) are given; see `trainers/cluster.py`.

Exit status: 0 finished; 1 a clear error (bad data, config, checkpoint or a
non-finite loss: the message names the culprit); `EXIT_PREEMPTED` (75) stopped
by SIGTERM / Ctrl-C after saving a checkpoint: rerun the same command.

`JAXSEG_MALLOC=hugepages` (2 MB pages) or `keep` sets the host allocator (jaxseg/host.py; opt-in).
"""
from jaxseg import host

host.configure()  # before any library starts a thread (jaxseg/host.py)

import errno  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import logging as py_logging  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from jaxseg import checkpoint as ckpt_lib  # noqa: E402
from jaxseg import trainers  # noqa: E402
from jaxseg.data import DataError  # noqa: E402
from jaxseg.trainers import cluster  # noqa: E402

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go (a local "
                               "path or anything etils.epath opens, e.g. gs://).")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", cluster.MODES,
                                 "Start jax.distributed: auto (when launched as one of "
                                 "several processes), on, off.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


_QUIET = ("orbax", "tensorflow_datasets", "grain", "jax/_src")


def _drop_library_info(record) -> bool:
  """Keeps the console to jaxseg's own progress: libraries' INFO lines go."""
  return record.levelno >= py_logging.WARNING or not any(q in record.pathname for q in _QUIET)


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_drop_library_info)
  how = cluster.initialize(_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                           num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  logging.info("jaxseg: %s", how)
  config = _CONFIG.value
  try:
    trainers.get_trainer(config.trainer)(config, _WORKDIR.value)
  except cluster.Preempted as e:
    logging.warning("%s", e)
    sys.exit(EXIT_PREEMPTED)
  except (DataError, ckpt_lib.CheckpointError, FloatingPointError) as e:
    logging.error("%s: %s", type(e).__name__, e)
    sys.exit(1)
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    logging.error("no space left on the device of %s; checkpoints already saved are "
                  "intact. Free space and rerun the same command.", e.filename or _WORKDIR.value)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
