"""`cluster`: when jax.distributed starts, the stop request, one-process reductions."""
import os
import signal

import numpy as np
import pytest

from jaxseg.trainers import cluster


def test_a_plain_run_stays_one_process_and_never_waits_for_peers(monkeypatch):
  called = []
  monkeypatch.setattr(cluster.jax.distributed, "initialize", lambda **kw: called.append(kw))
  assert cluster.initialize("auto", environ={}) == "one process"
  assert cluster.initialize("off", environ={"JAX_NUM_PROCESSES": "4"}) == "one process"
  # An sbatch script outside `srun` is one process, too.
  assert cluster.initialize("auto", environ={"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}) \
      == "one process"
  assert not called


def test_explicit_settings_and_launchers_start_jax_distributed(monkeypatch):
  called = []
  monkeypatch.setattr(cluster.jax.distributed, "initialize", lambda **kw: called.append(kw))
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
         "JAX_PROCESS_ID": "1"}
  cluster.initialize("auto", environ=env)
  assert called[-1] == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                        "process_id": 1}
  cluster.initialize("auto", coordinator_address="h:1", num_processes=4, process_id=0,
                     environ=env)  # flags win over the environment
  assert called[-1] == {"coordinator_address": "h:1", "num_processes": 4, "process_id": 0}
  slurm = {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8", "SLURM_STEP_NODELIST": "n[1-2]"}
  assert cluster.detected_cluster(slurm) == "SLURM"
  assert cluster.detected_cluster({"OMPI_COMM_WORLD_SIZE": "4"}) == "Open MPI"
  assert cluster.detected_cluster({"TPU_WORKER_HOSTNAMES": "a,b"}) == "Cloud TPU"
  cluster.initialize("auto", environ=slurm)
  assert called[-1] == {}  # JAX reads SLURM's variables itself
  cluster.initialize("on", environ={})
  assert called[-1] == {}
  with pytest.raises(ValueError, match="--process_id"):
    cluster.initialize("auto", environ={"JAX_NUM_PROCESSES": "2",
                                        "JAX_COORDINATOR_ADDRESS": "h:1"})
  with pytest.raises(ValueError, match="--distributed='maybe'"):
    cluster.initialize("maybe", environ={})


def test_sigterm_and_ctrl_c_request_a_stop_and_a_second_ctrl_c_interrupts():
  before = signal.getsignal(signal.SIGINT)
  for sig in (signal.SIGTERM, signal.SIGINT):
    with cluster.StopRequest() as stop:
      assert not stop.stop(1)
      os.kill(os.getpid(), sig)
      assert stop.stop(2)
      if sig == signal.SIGINT:
        with pytest.raises(KeyboardInterrupt):
          os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_one_process_reductions_are_the_identity():
  x = np.arange(6, dtype=np.int64).reshape(2, 3) * (1 << 40)  # beyond int32
  np.testing.assert_array_equal(cluster.sum_over_processes(x), x)
  keys, rows = cluster.gather_rows(np.array([3, 1, 3]), np.array([[0.5], [1.5], [2.5]]))
  np.testing.assert_array_equal(keys, [1, 3, 3])
  np.testing.assert_array_equal(rows[:, 0], [1.5, 0.5, 2.5])
  assert list(cluster.share(5)) == [0, 1, 2, 3, 4]
