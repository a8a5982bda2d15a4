"""Test setup: 8 fake CPU devices so the sharded paths run on a laptop.

XLA reads the flag once, when the backend starts, so it is set before anything
imports jax.
"""
import os

# Tests compile many small programs and run each a few steps: LLVM's optimiser
# is most of XLA:CPU's compile time (a PSPNet init: 21 s -> 5 s without it), so
# the suite skips it. Float results can differ from optimised code in the last
# bits (other fusion and contraction), which the tolerances allow; benchmarks
# and users keep the optimiser on.
FAST_COMPILE = os.environ.get("JAXSEG_TEST_XLA", "--xla_backend_optimization_level=0")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 "
    + FAST_COMPILE).strip()


def one_device_env() -> dict[str, str]:
  """The environment for a subprocess that runs as a user's would, on one CPU
  device (the suite's fast-compile flag kept)."""
  return {**os.environ, "XLA_FLAGS": FAST_COMPILE}
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same small programs many times (train, resume, cold start):
# a persistent compilation cache makes each shape compile once per session.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), "jaxseg-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib  # noqa: E402

import pytest  # noqa: E402

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
