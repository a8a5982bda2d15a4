"""Policy-gradient pieces shared by the reward methods: exploration and the
surrogate losses, chosen by name (as tunix's and verl's registries do).

A surrogate turns the log-probabilities of the sampled actions under the
current policy, `logp`, into a loss whose gradient is the policy gradient:

    reinforce:  L = −Σ A·log q(a) / (N·#valid)
    clip:       L = −Σ min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) / (N·#valid),
                ρ = exp(log q(a) − log q_old(a))   (PPO's clipped ratio)

On the policy that drew the actions (one update per draw) ρ = 1 and both have
the same gradient; the clipped ratio matters when a draw is reused for several
updates (`trainers.step.Epochs`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

POLICY_LOSSES = ("reinforce", "clip")


def explore_logits(logits, eps: float):
  """Log of the ε-uniform mixture `q = (1 − ε)·softmax(z) + ε/C`, as logits.

  Sampling from q keeps every class drawn with probability ≥ ε/C however
  sharp π becomes; the loss differentiates `log q(a)` (q is the policy that
  acted, so the gradient stays on-policy), and argmax q = argmax π at eval.
  """
  if not eps:
    return logits
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.logaddexp(logp + jnp.log1p(-eps), jnp.log(eps / logits.shape[-1]))


def masked_std(x, mask):
  """Standard deviation of `x` over the entries where `mask` holds."""
  n = jnp.maximum(jnp.sum(mask), 1)
  mean = jnp.sum(jnp.where(mask, x, 0)) / n
  return jnp.sqrt(jnp.sum(jnp.where(mask, (x - mean) ** 2, 0)) / n)


def surrogate(logp, adv, valid, *, old_logp=None, kind: str = "reinforce",
              clip_eps: float = 0.2):
  """The policy loss `kind` (module docstring) and its clip fraction.

  logp / adv / old_logp (B, N, ...) — the sampled actions' log-probabilities
  under the current policy, their advantages, and (for `clip`) their
  log-probabilities under the policy that drew them (None: this one, ρ = 1);
  valid (B, ...) positions that count. The advantages carry no gradient.
  Returns (loss, fraction of valid entries whose ratio was clipped).
  """
  if kind not in POLICY_LOSSES:
    raise ValueError(f"policy loss {kind!r} is unknown; choose from {POLICY_LOSSES}.")
  mask = jnp.broadcast_to(valid[:, None], logp.shape).astype(jnp.float32)
  count = jnp.maximum(jnp.sum(mask), 1.0)
  adv = jax.lax.stop_gradient(adv)
  if kind == "reinforce":
    return -jnp.sum(adv * logp * mask) / count, jnp.zeros(())
  old = jax.lax.stop_gradient(logp if old_logp is None else old_logp)
  ratio = jnp.exp(logp - old)
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  loss = -jnp.sum(jnp.minimum(ratio * adv, clipped * adv) * mask) / count
  frac = jnp.sum((jnp.abs(ratio - 1.0) > clip_eps) * mask) / count
  return loss, frac
