"""Tiny ACIS networks, params and a synthetic batch for the algorithm tests."""
import jax
import numpy as np
import pytest

from jaxseg.algorithms.acis import episode as ep
from jaxseg.models import acis as nets_lib

S, LATENT, MAX_INSTANCES = 32, 4, 21
# The episode options every step takes (configs/acis_cvppp.py:runlocal's values).
EPISODE = dict(max_instances=MAX_INSTANCES, latent_dim=LATENT)
OPTIONS = dict(dice_weight=1.0, termination_weight=1.0)


def synthetic_batch(b=8, s=S, seed=0, max_count=5):
  """Rectangles as instances (later ones on top), 1..max_count per image."""
  rng = np.random.default_rng(seed)
  inst = np.zeros((b, s, s), np.int32)
  for i in range(b):
    for k in range(1, rng.integers(1, max_count + 1) + 1):
      y, x = rng.integers(0, s - 8, 2)
      inst[i, y:y + rng.integers(4, 9), x:x + rng.integers(4, 9)] = 3 * k + 1
  return {"image": rng.integers(0, 255, (b, s, s, 3), dtype=np.uint8), "instances": inst}


@pytest.fixture(scope="session")
def setup():
  nets = ep.Nets(preproc=nets_lib.PreprocNet((4, 4), 8),
                 actor=nets_lib.Actor((4, 4), 8, 8, 2, 8, LATENT),
                 decoder=nets_lib.Decoder((4, 4), True),
                 critic=nets_lib.Critic((4, 4), (8,)))
  params = jax.jit(lambda r: ep.init_params(nets, r, image_size=S, num_angle_bins=8,
                                            latent_dim=LATENT))(jax.random.key(0))
  return nets, params
