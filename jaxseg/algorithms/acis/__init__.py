"""ACIS: actor-critic instance segmentation (SPEC §3), as pure functions.

    episode.py   networks bundle, inputs / targets, one transition, the episode
                 scan, one-step gradients inside a scan, Hungarian assignment
                 and matching rewards
    losses.py    KL, BCE, the mask loss, Dice, termination targets and loss
    steps.py     each stage's gradients in the step contract
                 `(params, batch, rng, step) -> (loss, grads, metrics)`
    infer.py     inference until the termination unit stops, label maps, Tab. 2's
                 Dice*, what each step adds (host-side numpy)

One episode (length L; images with N_rem < L instances left masked at t ≥ N_rem):

  M_0 = the ground truth painted in (`episode.load_episode`: none, the N − L
        "last" or a random number of random instances, each eroded by up to
        `Load.erode` px; the rest are the targets)
  for t < L:  h_t, (μ_t, log σ²_t, c_t) = Actor([x, M_t, angles, fg], h_{t−1})
              a_t = μ_t                (the authors' default: -criticNoise 0
                                        -realNoise 0, BL, inference)
                    μ_t + σ_t ε_t      (`sample`; σ_t ≥ explore_std in critic episodes)
              m_t = σ(Decoder(a_t; x, angles, fg))
              M_{t+1} = max(M_t, m_t)
  φ_t = max-matching Σ soft-Dice(first t masks, remaining ground truth);  r_t = φ_{t+1} − φ_t
  G_t = Σ_{i≥t} γ^{i−t} r_i                       (γ = 0.9, per step — not γ²)
  critic:  min Σ_t (Q(s_t, m_t) − G_t)²
  actor:   min Σ_t −Q(s_t, D(a_t)) + β_KL KL_t + BCE(c_t, [t + 1 < N_rem])
  init / BL / BL-Trunc:  min Σ_t BCE(D(μ_t), T_assigned(t)) + BCE(c_t, [t + 1 < N_rem])
"""
from jaxseg.algorithms.acis import episode, infer, losses, steps

__all__ = ["episode", "infer", "losses", "steps"]
