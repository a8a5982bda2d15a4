"""Jittable reward functions, usable alone from any JAX code:

    from jaxseg import rewards
    r = jax.vmap(functools.partial(rewards.image_miou, num_classes=21))(maps, labels)

No flax, optax or config imports live under this package.
"""
from jaxseg.rewards.context import (
    context_reward,
    improvement,
    nstep_returns,
    window_mean,
)
from jaxseg.rewards.instance import (
    iou_scores,
    matching_potentials,
    matching_rewards,
    soft_dice_scores,
)
from jaxseg.rewards.host_matching import host_matching_potentials, host_max_matching
from jaxseg.rewards.matching import max_matching
from jaxseg.rewards.semantic import (
    ADVANTAGE_ESTIMATORS,
    ScoreFn,
    action_log_probs,
    class_iou,
    downsample_labels,
    downsample_logits,
    entropy,
    group_advantages,
    host_score,
    image_miou,
    leave_one_out_advantages,
    mid_ranks,
    normalize_advantages,
    pairwise_spatial_difference,
    pixel_correctness,
    sample_actions,
    sample_scores,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "ScoreFn",
    "action_log_probs",
    "class_iou",
    "context_reward",
    "downsample_labels",
    "host_matching_potentials",
    "host_max_matching",
    "downsample_logits",
    "entropy",
    "group_advantages",
    "host_score",
    "image_miou",
    "improvement",
    "leave_one_out_advantages",
    "mid_ranks",
    "iou_scores",
    "matching_potentials",
    "matching_rewards",
    "max_matching",
    "normalize_advantages",
    "nstep_returns",
    "pairwise_spatial_difference",
    "pixel_correctness",
    "sample_actions",
    "sample_scores",
    "soft_dice_scores",
    "window_mean",
]
