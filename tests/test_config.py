"""Config files and command-line overrides fail early and name the key."""
import pathlib
import subprocess
import sys

import pytest

from jaxseg import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_main(*flags):
  return subprocess.run(
      [sys.executable, "-m", "jaxseg.main", *flags], cwd=ROOT, capture_output=True,
      text=True, timeout=120)


@pytest.mark.parametrize("flag, message", [
    ("--config.optim.lrr=1", 'Did you mean "lr"'),
    ("--config.optim.lr=fast", "could not convert string to float: 'fast'"),
    ("--config.data.crop_size=(65,64)", "data.crop_size=(65, 64) must be divisible by 32"),
    ("--config.trainer=nope", "config.trainer='nope' is unknown"),
    ("--config.data.name=folder", "data.root"),
    ("--config.checkpoint_every=0", "config.checkpoint_every=0 must be a positive integer"),
])
def test_bad_config_fails_before_compiling_and_names_the_key(tmp_path, flag, message):
  proc = run_main("--config=configs/psl_embedded.py:runlocal", f"--workdir={tmp_path}", flag,
                  f"--config.data.data_dir={tmp_path / 'tfds'}")
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "checkpoints").exists()


def test_every_config_file_loads_and_runlocal_shrinks_it():
  for path in sorted((ROOT / "configs").glob("*.py")):
    full = config_lib.load_config_file(path)
    local = config_lib.load_config_file(path, "runlocal")
    assert set(full.keys()) == set(config_lib.default_config().keys()), path
    assert local.total_steps < full.total_steps, path


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.stem)
def test_every_config_file_rejects_an_unknown_argument(path):
  with pytest.raises(ValueError, match="runlocla"):
    config_lib.load_config_file(path, "runlocla")


def test_parse_arg():
  assert config_lib.parse_arg("runlocal") == {"runlocal": "1"}
  assert config_lib.parse_arg("variant=pixel,runlocal", options=("variant", "runlocal")) == {
      "variant": "pixel", "runlocal": "1"}
  with pytest.raises(ValueError, match="runlocla"):
    config_lib.parse_arg("runlocla")
  assert config_lib.parse_arg(None) == {}


def _load(name, arg=None):
  return config_lib.load_config_file(ROOT / "configs" / name, arg)


def test_rss_variants_set_their_ablation_row():
  for variant in config_lib.RSS_VARIANTS:
    c = _load("rss_camvid.py", f"{variant},runlocal")
    assert c.trainer == ("psl" if variant == "psl" else "rss")
  c = _load("rss_camvid.py", "psr_multi_psd,lr_factor=40,cold=/x")
  assert (c.rss.level, c.rss.credit, c.rss.advantage, len(c.rss.psr_scales)) == (
      "image", "psd", "raw", 4)
  assert c.optim.last_layer_lr_factor == 40.0 and c.init_from == "/x"
  c = _load("rss_camvid.py", "pixel_nosync")
  assert (c.rss.level, c.rss.sync_an) == ("pixel", False)
  # Tab. 3's best factor per column: 40 without a cold start, 400 with one.
  assert _load("rss_pascal.py", "psr_multi_psd").optim.last_layer_lr_factor == 40.0
  assert _load("rss_pascal.py", "psr_multi_psd,cold=/x").optim.last_layer_lr_factor == 400.0
  assert _load("rss_pascal.py", "naive,cold=/x,lr_factor=4").optim.last_layer_lr_factor == 4.0
  assert _load("rss_pascal.py", "pixel").optim.last_layer_lr_factor == 1.0
  # jaxseg's recipe is every RSS config's default; the paper's rows stay as they were.
  for name in ("rss_camvid.py", "rss_embedded.py", "rss_pascal.py"):
    c = _load(name)
    assert (c.rss.level, c.rss.credit, c.rss.num_samples,
            c.rss.explore_eps, c.optim.last_layer_lr_factor) == ("image", "class", 8,
                                                                  0.1, 1.0), name
  c = _load("rss_embedded.py", "psr_multi_psd")
  assert (c.rss.credit, c.rss.explore_eps) == ("psd", 0.0)
  with pytest.raises(ValueError, match="not understood"):
    _load("rss_camvid.py", "psr_mutli")


def test_config_argument_typo_fails_at_flag_parsing(tmp_path):
  proc = run_main("--config=configs/rss_camvid.py:psr_mutli", f"--workdir={tmp_path}")
  assert proc.returncode != 0 and "psr_mutli" in proc.stderr, proc.stderr[-2000:]


def test_rss_pascal_says_what_data_it_needs(tmp_path):
  proc = run_main("--config=configs/rss_pascal.py", f"--workdir={tmp_path}")
  assert proc.returncode != 0
  for text in ("'pascal_context' dataset needs --config.data.root=PATH",
               "VOCdevkit/VOC2010"):
    assert text in proc.stderr, proc.stderr[-2000:]


def test_configs_import_only_the_config_module():
  """Configs are data: they import jaxseg.config (and ml_collections), never a trainer."""
  import ast
  for path in sorted((ROOT / "configs").glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
            a.name for a in node.names]
        for name in names:
          assert name.split(".")[0] in ("jaxseg", "ml_collections", "pathlib", "__future__"), (
              path.name, name)
          assert not name.startswith("jaxseg.") or name == "jaxseg.config", (path.name, name)
        if isinstance(node, ast.ImportFrom) and node.module == "jaxseg":
          assert [a.name for a in node.names] == ["config"], path.name


def test_variants_and_options_are_flattened_overrides():
  c = config_lib.apply_variant(config_lib.default_config(), config_lib.ACIS_VARIANTS, "ac_nokl")
  assert (c.trainer, c.acis.method, c.acis.kl_weight) == ("acis", "ac", 0.0)
  c = config_lib.apply_options(c, {"gamma": "0.5", "trunk": "/t"}, config_lib.CISS_OPTIONS)
  assert c.ciss.gamma == 0.5 and c.init_from == "/t"
  with pytest.raises(ValueError, match=r"config.VARIANT='acc' is unknown; choose from"):
    config_lib.apply_variant(c, config_lib.ACIS_VARIANTS, "acc")
  with pytest.raises(ValueError, match=r"config.a.b='x' is unknown; choose from \('y', 'z'\)"):
    config_lib.check_choice("a.b", "x", ("y", "z"))
  for table in (config_lib.RSS_VARIANTS, config_lib.CISS_VARIANTS, config_lib.ACIS_VARIANTS):
    for name in table:  # every override names a field of the schema
      config_lib.apply_variant(config_lib.default_config(), table, name)


def test_rss_paper_rows_are_as_the_paper_states_them_and_recipes_are_labelled():
  """The paper's image-level rows: one scalar per map, no entropy bonus, no
  exploration floor, raw PSD, independent maps, Tab. 3's factor for the start
  (400 with a cold start, 40 without); jaxseg's `scalar` keeps the scalar
  reward (credit map/psd), `psr_class` is the per-class credit."""
  for name in ("rss_camvid.py", "rss_pascal.py"):
    for variant in config_lib.RSS_PAPER_IMAGE_ROWS:
      c = _load(name, variant)
      assert (c.rss.level, c.rss.entropy_coef, c.rss.explore_eps, c.rss.resample,
              c.rss.psd_std_normalize) == ("image", 0.0, 0.0, 1.0, False), (name, variant)
      assert c.rss.credit == ("psd" if variant.endswith("psd") else "map")
      assert c.optim.last_layer_lr_factor == 40.0
      assert _load(name, f"{variant},cold=/x").optim.last_layer_lr_factor == 400.0
    assert _load(name, "scalar").rss.credit in ("map", "psd", "greedy", "critic")
    assert _load(name, "psr_class").rss.credit == "class"
    assert _load(name, "scalar,cold=/x").optim.last_layer_lr_factor == 1.0
    assert _load(name, "scalar").model.classifier_init_std == 0.01  # a near-uniform start
    assert _load(name, "psl").model.classifier_init_std <= 0  # LeCun
  assert _load("rss_camvid.py", "psr_multi_psd,start=model").optim.last_layer_lr_factor == 400.0
  c = _load("rss_camvid.py", "psr_multi_psd,start=backbone")
  assert (c.optim.last_layer_lr_factor, c.cold_start.load) == (40.0, "backbone")
  assert c.cold_start.root.endswith("idd_lite")
  assert _load("rss_camvid.py", "pixel").rss.entropy_coef == 0.2
