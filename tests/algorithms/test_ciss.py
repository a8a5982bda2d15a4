"""CiSS-Net (jaxseg.algorithms.ciss): gradients go where Eq. 7 says and the
policy learns the rewarded action."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg import algorithms
from jaxseg import config as config_lib
from jaxseg import models
from jaxseg import optim
from jaxseg.algorithms import ciss
from jaxseg.models.ciss import CiSSNet
from jaxseg.trainers import step as step_lib

IGNORE = 255
NUM_CLASSES = 5


def _setup(seed=0):
  c = config_lib.runlocal(config_lib.default_config())
  model = CiSSNet(trunk=models.build_model(c.model, NUM_CLASSES), num_classes=NUM_CLASSES,
                  width=16, context_dim=8, policy_dim=8, dropout=0.1)
  params = model.init({"params": jax.random.key(seed)}, jnp.zeros((1, 64, 64, 3)))["params"]
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, NUM_CLASSES, (2, 4, 4))
  labels = np.repeat(np.repeat(coarse, 16, 1), 16, 2).astype(np.int32)
  labels[:, :8] = IGNORE
  batch = {"image": jnp.asarray(rng.integers(0, 255, (2, 64, 64, 3)), jnp.uint8),
           "label": jnp.asarray(labels)}
  return model, params, batch


def _loss(model, **options):
  return ciss.make_loss(model, num_classes=NUM_CLASSES, ignore_index=IGNORE, **options)


def _grad_norms(**options):
  model, params, batch = _setup()
  loss_fn = _loss(model, **options)
  grads = jax.grad(lambda p: loss_fn(p, batch, jax.random.key(1), 0)[0])(params)
  norm = lambda *names: float(optax.tree.norm({n: grads[n] for n in names}))
  return {"trunk": norm("trunk"), "base": norm("base_conv", "base_classifier"),
          "bias": norm("bias_net", "context_encoder"),
          "context": norm("context_net", "policy_encoder")}


def test_actor_critic_trains_only_the_context_net():
  """Without the cross-entropy (λ1 = 0) the policy, value and entropy terms
  reach the Context Net only; with it, the S-Net learns; the trunk never."""
  g = _grad_norms(ce_weight=0.0)
  assert g["trunk"] == 0 and g["base"] == 0 and g["bias"] == 0 and g["context"] > 0
  g = _grad_norms()
  assert g["trunk"] == 0 and g["base"] > 0 and g["bias"] > 0 and g["context"] > 0
  g = _grad_norms(context="pmap")
  assert g["bias"] > 0 and g["context"] == 0
  g = _grad_norms(context="none")
  assert g["base"] > 0 and g["bias"] == 0 and g["context"] == 0


def test_policy_learns_the_rewarded_action():
  """With β2 = 2 (reward for "uncertain") the keep fraction falls."""
  model, params, batch = _setup()
  loss_fn = _loss(model, beta_uncertain=2.0, beta_correct=0.0, ce_weight=0.0,
                  entropy_coef=0.0, gamma=0.0)
  c = config_lib.default_config().optim
  c.lr, c.warmup_steps, c.grad_clip_norm = 1e-2, 0, 0.0
  tx, schedule = optim.make_optimizer(c, params, total_steps=1000)
  update = jax.jit(step_lib.make_update(algorithms.as_grads_fn(loss_fn), tx, schedule))
  state = step_lib.init_state(params, tx=tx, rng=jax.random.key(0))
  keep = []
  for _ in range(30):
    state, metrics, finite = update(state, batch)
    assert bool(finite)
    keep.append(float(metrics["train/keep_fraction"]))
  assert keep[0] > 0.3 and keep[-1] < 0.5 * keep[0], keep


def test_scan_and_unroll_agree():
  model, params, batch = _setup()
  out = [_loss(model, steps=2, unroll=u)(params, batch, jax.random.key(1), 0) for u in (0, 1)]
  np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-5)
  for k in out[0][1]:
    np.testing.assert_allclose(out[0][1][k], out[1][1][k], rtol=1e-4, atol=1e-6, err_msg=k)
