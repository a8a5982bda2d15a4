"""ACIS: actor-critic instance segmentation (SPEC §3), as pure functions.

    episode.py   networks bundle, inputs / targets, one transition, the episode
                 scan, one-step gradients inside a scan, Hungarian assignment
                 and matching rewards
    losses.py    KL, BCE, the mask loss, Dice, termination targets and loss
    steps.py     each stage's gradients in the step contract
                 `(params, batch, rng, step) -> (loss, grads, metrics)`
    infer.py     inference until the termination unit stops, label maps, Tab. 2's
                 Dice* (host-side numpy)

One episode (fixed length L, images with N < L instances masked at t ≥ N):

  M_0 = 0;  for t < L:  h_t, (μ_t, log σ²_t, c_t) = Actor([x, M_t, angles, fg], h_{t−1})
                        a_t = μ_t + σ_t ε_t   (μ_t in BL and at inference;
                                               σ_t ≥ explore_std in critic episodes)
                        m_t = σ(Decoder(a_t; x, angles, fg))
                        M_{t+1} = max(M_t, m_t)
  φ_t = max-matching Σ soft-Dice(first t masks, ground truth);  r_t = φ_{t+1} − φ_t
  G_t = Σ_{i≥t} γ^{i−t} r_i                       (γ = 0.9, per step — not γ²)
  critic:  min Σ_t (Q(s_t, m_t) − G_t)²
  actor:   min Σ_t −Q(s_t, D(μ_t + sg(σ_t) ε_t)) + β_KL KL_t + BCE(c_t, [t + 1 < N])
"""
from jaxseg.algorithms.acis import episode, infer, losses, steps

__all__ = ["episode", "infer", "losses", "steps"]
