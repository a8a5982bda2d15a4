"""The papers' named rows as data: `configs/*.py:VARIANT` and their `,key=value`
options, each a flat dict of dotted config keys applied with
`config.apply_variant` (so a misspelt key fails like a flag would)."""
from __future__ import annotations

PSR_SINGLE = (1 / 8,)
PSR_MULTI = (1 / 16, 1 / 8, 1 / 4, 1.0)
_IMAGE = {"trainer": "rss", "rss.level": "image"}
# The paper's credits: GRPO over the N maps broadcast to the map (naive, PSR), or
# PSD of the raw rewards ("directly utilizes the score reward difference", §3.2.3).
_MAP = {"rss.credit": "map", "rss.advantage": "grpo"}
_PSD = {"rss.credit": "psd", "rss.advantage": "raw"}
# The RSS paper's Tables 1 and 2 (configs/rss_*.py:VARIANT).
RSS_VARIANTS = {
    "psl": {"trainer": "psl"},
    "pixel": {"trainer": "rss", "rss.level": "pixel", "rss.sync_an": True},
    "pixel_nosync": {"trainer": "rss", "rss.level": "pixel", "rss.sync_an": False},
    "naive": {**_IMAGE, "rss.psr_scales": (1.0,), **_MAP},
    "psr_single": {**_IMAGE, "rss.psr_scales": PSR_SINGLE, **_MAP},
    "psr_single_psd": {**_IMAGE, "rss.psr_scales": PSR_SINGLE, **_PSD},
    "psr_multi": {**_IMAGE, "rss.psr_scales": PSR_MULTI, **_MAP},
    "psr_multi_psd": {**_IMAGE, "rss.psr_scales": PSR_MULTI, **_PSD},
    # jaxseg's per-class recipe (docs/rss_image_level.md): PSR, per-class credit
    # from the mIoU's own IoU terms (C numbers per map, not the paper's scalar),
    # N = 8, ε-uniform exploration, an entropy bonus.
    "psr_class": {**_IMAGE, "rss.psr_scales": PSR_SINGLE, "rss.credit": "class",
                  "rss.advantage": "grpo", "rss.num_samples": 8, "rss.explore_eps": 0.1,
                  "rss.entropy_coef": 0.01},
    # jaxseg's scalar recipe (docs/rss_scalar.md): the paper's one scalar reward
    # per map and PSD credit, with many maps made cheap by PSR (N = 256 at scale
    # 1/8; PSD from class histograms), ε-uniform exploration, PSD advantages
    # divided by their RMS, an entropy bonus, a near-uniform start policy (the
    # classifier initialised normal(0.01), mmsegmentation's conv_seg).
    "scalar": {**_IMAGE, "rss.psr_scales": PSR_SINGLE, **_PSD, "rss.num_samples": 256,
               "rss.explore_eps": 0.1, "rss.psd_std_normalize": True,
               "rss.entropy_coef": 0.01, "model.classifier_init_std": 0.01},
}
# The paper's image-level rows (Tab. 2), as it states them.
RSS_PAPER_IMAGE_ROWS = ("naive", "psr_single", "psr_single_psd", "psr_multi", "psr_multi_psd")
# `:VARIANT,lr_factor=F` (Tab. 3: the classifier's lr factor), `cold=DIR` (cold start:
# every layer of a finished run but the classifier), `pretrained=DIR` (its backbone
# alone, or a timm weights file).
RSS_OPTIONS = {"lr_factor": "optim.last_layer_lr_factor", "cold": "init_from",
               "pretrained": "model.pretrained"}
# CiSS-Net's Tab. 4 rows (configs/ciss_*.py:VARIANT).
CISS_VARIANTS = {
    "baseline": {"trainer": "ciss", "ciss.context": "none", "ciss.entropy_coef": 0.05},
    "pmap": {"trainer": "ciss", "ciss.context": "pmap", "ciss.entropy_coef": 0.05},
    "gated": {"trainer": "ciss", "ciss.context": "policy", "ciss.entropy_coef": 0.001},
    "ciss": {"trainer": "ciss", "ciss.context": "policy", "ciss.entropy_coef": 0.05},
}
# `gamma=G` (Tab. 2), `entropy=L` (λ2, Tab. 3), `trunk=DIR` (= --config.init_from).
CISS_OPTIONS = {"gamma": "ciss.gamma", "entropy": "ciss.entropy_coef", "trunk": "init_from"}
# ACIS's Tab. 1 rows (configs/acis_*.py:VARIANT).
_AC = {"trainer": "acis", "acis.method": "ac"}
ACIS_VARIANTS = {
    "bl": {"trainer": "acis", "acis.method": "bl", "acis.state_pyramid": True},
    "bl_trunc": {"trainer": "acis", "acis.method": "bl_trunc", "acis.state_pyramid": True},
    "ac": {**_AC, "acis.state_pyramid": True},
    "ac_nokl": {**_AC, "acis.kl_weight": 0.0, "acis.state_pyramid": True},
    "ac_nosp": {**_AC, "acis.state_pyramid": False},
}


def paper_last_layer_factor(variant: str, args: dict[str, str]) -> float:
  """The RSS paper's last-layer learning-rate factor for a config's variant:
  Tab. 3's best for its image-level rows — 400 with a cold start (`cold=DIR`,
  or `start=model`), 40 without — and 1 for every other row (pixel level,
  PSL, jaxseg's recipes, which were measured with 1). `lr_factor=F` overrides."""
  if variant not in RSS_PAPER_IMAGE_ROWS:
    return 1.0
  return 400.0 if "cold" in args or args.get("start") == "model" else 40.0
