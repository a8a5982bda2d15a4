"""Test setup: 8 fake CPU devices so the sharded paths run on a laptop.

XLA reads the flag once, when the backend starts, so it is set before anything
imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()


os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same small programs many times (train, resume, cold start):
# a persistent compilation cache makes each shape compile once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), "jaxseg-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib  # noqa: E402

import pytest  # noqa: E402

def one_device_env() -> dict[str, str]:
  """The environment for a subprocess that runs as a user's would, on one CPU
  device (without the suite's fake-device flag)."""
  return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared_dataset(name: str) -> pathlib.Path:
  root = SHARED_DATA / name
  if not root.is_dir():
    pytest.skip(f"real data not found at {root}")
  return root


@pytest.fixture
def camvid_root():
  return _shared_dataset("camvid")


@pytest.fixture
def cvppp_root():
  return _shared_dataset("cvppp_a1")
