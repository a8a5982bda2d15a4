"""jaxseg/host.py: the allocator policy, checked on the process it runs in."""
import os
import subprocess
import sys
import textwrap

import pytest

from jaxseg import host

# Allocates, writes and frees a 64 MB block with malloc 6 times and prints the
# page faults of the last 5 (the first maps the memory under either policy).
# (Not numpy: it asks for transparent huge pages, 2 MB per fault.)
_PROBE = textwrap.dedent("""
    import ctypes, resource
    from jaxseg import host
    print(host.configure(), flush=True)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    def touch():
      p = libc.malloc(64 * 2**20)
      libc.memset(p, 1, 64 * 2**20)
      libc.free(ctypes.c_void_p(p))
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
      touch()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
""")


def _probe(policy: str) -> tuple[str, int]:
  env = {**os.environ, "JAXSEG_MALLOC": policy}
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_reuses_freed_blocks():
  applied, faults = _probe("keep")
  assert applied == "True"
  assert faults < 500  # pages already mapped
  applied, faults = _probe("default")
  assert applied == "False"
  assert faults > 10_000  # 64 MB = 16k pages mapped afresh each time


def test_policy_from_argv_and_env(monkeypatch):
  assert host.argv_policy(["x", "--malloc=keep"]) == "keep"
  assert host.argv_policy(["x", "--malloc", "default", "--steps", "3"]) == "default"
  assert host.argv_policy(["x", "--steps", "3"]) is None
  monkeypatch.setenv("JAXSEG_MALLOC", "kep")
  with pytest.raises(ValueError, match="'kep'"):
    host.configure()


@pytest.mark.skipif(host.thp_mode() not in ("always", "madvise")
                    or (host.glibc_version() or (0, 0)) < (2, 35),
                    reason="needs transparent huge pages and glibc >= 2.35")
def test_hugepages_restarts_with_the_tunable_and_maps_2mb_pages():
  applied, faults = _probe("hugepages")
  assert applied == "True"
  assert faults < 2_000  # 64 MB in 2 MB pages (32 faults), not 16k of 4 kB
