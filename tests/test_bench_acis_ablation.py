"""bench/acis_ablation.py: `--set KEY=VALUE` reaches every row's config."""
import argparse
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import acis_ablation  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _args(*sets):
  return argparse.Namespace(scale="cpu", root=pathlib.Path("/data/leaves"), steps=1200,
                            set=list(sets))


def test_set_overrides_with_literals_and_strings():
  c = acis_ablation.load_config("ac", _args("acis.critic_warmup=600",
                                            "acis.critic_sample=True",
                                            "acis.load_last=last"))
  assert (c.acis.critic_warmup, c.acis.critic_sample, c.acis.load_last) == (600, True, "last")
  assert (c.total_steps, c.data.root) == (1200, "/data/leaves")
  default = acis_ablation.load_config("ac", _args())
  assert (default.acis.critic_warmup, default.acis.critic_sample) == (200, False)


def test_set_with_a_typo_names_the_key():
  with pytest.raises(KeyError, match="critic_warmpu"):
    acis_ablation.load_config("ac", _args("acis.critic_warmpu=600"))
