"""launch/: every script parses (`bash -n`) and its dry run prints the commands."""
import os
import pathlib
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"


def dry(*cmd, **env):
  return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=True,
                        env={**os.environ, "DRY_RUN": "1", **env}).stdout


@pytest.mark.parametrize("script", ["local_cpu.sh", "slurm_gpu.sbatch", "tpu_pod.sh"])
def test_scripts_parse(script):
  subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True, timeout=30)


def test_local_cpu_runs_one_main_per_process_with_its_own_devices():
  out = dry(str(LAUNCH / "local_cpu.sh"), "2", "--config=c.py", "--workdir=w",
            PORT="1234", CPU_DEVICES="3", PYTHON="python3").splitlines()
  assert len(out) == 2
  for i, line in enumerate(out):
    assert "--xla_force_host_platform_device_count=3" in line
    assert "python3 -m jaxseg.main --config=c.py --workdir=w" in line
    assert f"--coordinator_address=127.0.0.1:1234 --num_processes=2 --process_id={i}" in line
  one = dry(str(LAUNCH / "local_cpu.sh"), "1", "--config=c.py", "--workdir=w")
  assert "--num_processes" not in one  # one process: no jax.distributed


def test_slurm_runs_srun_over_the_job():
  out = dry("bash", str(LAUNCH / "slurm_gpu.sbatch"), "--config=c.py", "--workdir=w")
  assert out.strip() == "srun --kill-on-bad-exit=1 python3 -m jaxseg.main --config=c.py --workdir=w"
  text = (LAUNCH / "slurm_gpu.sbatch").read_text()
  assert "#SBATCH --signal=TERM@120" in text and "#SBATCH --requeue" in text


def test_tpu_pod_creates_copies_installs_and_runs_on_every_worker():
  out = dry(str(LAUNCH / "tpu_pod.sh"), "all", "--config=configs/rss_pascal.py",
            WORKDIR="gs://b/run", TPU_NAME="pod", ZONE="z", ACCELERATOR="v5p-64")
  lines = out.splitlines()
  assert lines[0].startswith("gcloud compute tpus tpu-vm create pod --zone=z "
                             "--accelerator-type=v5p-64")
  assert any("scp" in l and "--worker=all" in l for l in lines)
  assert any("jax\\[tpu\\]" in l and "--worker=all" in l for l in lines)
  run = [l for l in lines if "jaxseg.main" in l]
  assert run and "--worker=all" in run[0] and "--distributed=on" in run[0]
  assert "--workdir=gs://b/run" in run[0]
  assert "--worker=0" in lines[-1] and "tail" in lines[-1]  # streams worker 0's log
  assert "delete pod" in dry(str(LAUNCH / "tpu_pod.sh"), "delete", TPU_NAME="pod")
  with pytest.raises(subprocess.CalledProcessError):
    dry(str(LAUNCH / "tpu_pod.sh"), "run", "--config=c.py", WORKDIR="")
