"""RSS trainer: it validates `config.rss`, shards, runs and compares with PSL."""
import json

import jax
import numpy as np
import pytest

from jaxseg.trainers import rss


@pytest.mark.parametrize("override, match", [
    ({"rss.psr_scales": (0.3,)}, "1/k"),
    ({"rss.psr_scales": (1 / 128,)}, "must divide"),
    ({"rss.num_samples": 1}, "N >= 2"),
    ({"rss.level": "pixels"}, "rss.level"),
    ({"rss.score": "dice"}, "rss.score"),
    ({"rss.psr_weights": (1.0, 2.0)}, "psr_weights"),
    ({"rss.sync_an": False, "rss.nosync_groups": 3}, "SyncAN-off shards"),
    ({"rss.credit": "pixel"}, "rss.credit"),
    ({"rss.explore_eps": 1.0}, "explore_eps"),
    ({"rss.advantage": "loo"}, "rss.advantage"),
    ({"rss.advantage": "rloo", "rss.image_group": "global"}, "advantage='grpo'"),
    ({"rss.credit": "class", "rss.image_group": "global"}, "scalar credit"),
])
def test_bad_rss_config_names_the_key(tiny_config, data_dir, override, match):
  c = tiny_config(data_dir, trainer="rss", **override)

  class Info:
    num_classes, ignore_index = 7, 255

  with pytest.raises(ValueError, match=match):
    rss.make_loss(c, model=None, info=Info)


@pytest.mark.parametrize("level", ["pixel", "image", "image_class"])
def test_sharded_rss_step_matches_single_device(tiny_config, data_dir, level,
                                                one_step_on_1_and_8_devices):
  """The whole step (sampling, SyncAN, PSD or per-class credit, ε-exploration,
  diagnostics, update) on 8 devices == on 1."""
  recipe = {"rss.credit": "class", "rss.advantage": "grpo", "rss.explore_eps": 0.1,
            "rss.class_diagnostics": True}
  c = tiny_config(data_dir, trainer="rss", **{
      "rss.level": level.split("_")[0], "rss.credit": "psd", "rss.advantage": "raw",
      "rss.psr_scales": (0.25, 1.0),
      **(recipe if level == "image_class" else {})})
  results = one_step_on_1_and_8_devices(c, rss.make_loss)
  for k in results[0][0]:
    # Same samples and rewards; only float summation order differs (the loss is
    # a near-cancelling sum of mean-zero advantages, hence the absolute tolerance).
    np.testing.assert_allclose(results[0][0][k], results[1][0][k], rtol=1e-3, atol=1e-4,
                               err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
               results[0][1], results[1][1])


def test_recipe_trains_and_logs_class_diagnostics(tiny_config, data_dir, tmp_path):
  """The default image-level recipe (per-class credit, ε-exploration) runs
  through the trainer and logs the per-class diagnostics of every class."""
  c = tiny_config(data_dir, trainer="rss", **{
      "rss.credit": "class", "rss.explore_eps": 0.1, "rss.advantage": "rloo",
      "rss.psr_scales": (0.25,), "rss.class_diagnostics": True})
  run = rss.train_and_evaluate(c, str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if "train/loss" in r][-1]
  n = sum(k.startswith("train/cls/pred/") for k in train)
  assert n == 7, sorted(train)
  assert abs(sum(train[f"train/cls/pred/{k}"] for k in range(n)) - 1) < 1e-4
  assert abs(sum(train[f"train/cls/label/{k}"] for k in range(n)) - 1) < 1e-4
  assert all(0 <= train[f"train/cls/sampled/{k}"] <= 1 for k in range(n))
  assert run.step == c.total_steps and 0 <= run.metrics["val/miou"] <= 1


def test_rss_trainer_logs_reward_statistics_and_compares_with_psl(
    tiny_config, data_dir, tmp_path):
  c = tiny_config(data_dir, trainer="rss", **{
      "rss.credit": "psd", "rss.psr_scales": (0.25, 1.0), "rss.compare_psl": True})
  run = rss.train_and_evaluate(c, str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / "rss" / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if "train/loss" in r][-1]
  for key in ("train/reward_s4", "train/reward_s1", "train/adv_std_s4", "train/entropy",
              "train/psd_nonzero_s1", "train/pg_loss_s4"):
    assert np.isfinite(train[key]), key
  assert 0 < train["train/psd_nonzero_s1"] <= 1
  assert run.step == c.total_steps and 0 <= run.metrics["val/miou"] <= 1
  table = (tmp_path / "comparison.md").read_text()
  assert "| psl |" in table and "| rss |" in table
  assert (tmp_path / "comparison.png").exists()
  assert (tmp_path / "psl" / "metrics.jsonl").exists()


def test_clipped_epochs_train_through_the_trainer(tiny_config, data_dir, tmp_path):
  """`rss.epochs=2` with the clipped ratio: each step draws once and updates
  twice (tests/trainers/test_step.py), logging both epochs' clip fractions."""
  c = tiny_config(data_dir, trainer="rss", **{
      "rss.credit": "psd", "rss.advantage": "rank", "rss.psr_scales": (0.25,),
      "rss.policy_loss": "clip", "rss.epochs": 2, "rss.explore_eps": 0.1})
  run = rss.train_and_evaluate(c, str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if "train/loss" in r][-1]
  assert train["train/clip_frac_s4"] == 0.0  # the first epoch is on-policy: ratio 1
  assert 0.0 <= train["train/clip_frac_s4_last"] <= 1.0
  assert run.step == c.total_steps and 0 <= run.metrics["val/miou"] <= 1


def test_critic_credit_trains_and_evaluates_both_heads(tiny_config, data_dir, tmp_path):
  """credit "critic": the classifier has 2·C outputs; the run logs the
  critic's regression loss and evaluates the policy and the critic's argmax."""
  c = tiny_config(data_dir, trainer="rss", **{
      "rss.credit": "critic", "rss.psr_scales": (0.25,), "rss.explore_eps": 0.1,
      "rss.psd_std_normalize": True, "rss.class_diagnostics": True})
  run = rss.train_and_evaluate(c, str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train = [r for r in records if "train/loss" in r][-1]
  assert np.isfinite(train["train/critic_loss_s4"]) and train["train/critic_loss_s4"] > 0
  assert sum(k.startswith("train/cls/pred/") for k in train) == 7
  assert "val/miou_critic" in run.metrics and 0 <= run.metrics["val/miou"] <= 1
  assert run.params["classifier"]["kernel"].shape[-1] == 14
