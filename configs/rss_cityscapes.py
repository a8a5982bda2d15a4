"""RSS at paper scale on Cityscapes (19 classes) with the paper's cold start from
Mapillary Vistas: configs/rss_pascal.py with the data swapped, every variant and
option of that file accepted.

    python -m jaxseg.main --config=configs/rss_cityscapes.py:VARIANT \
        --workdir=/tmp/rss_cityscapes --config.data.root=/data/cityscapes \
        --config.cold_start.root=/data/mapillary

With `cold_start.root` the run first trains stage `cold` (PSL on Mapillary v1.2, 65
classes, the same model and crop), then RSS on Cityscapes from its params (classifier
re-initialised); without it RSS starts from scratch, or from `--config.init_from=DIR`.
Crop 512 x 1024, batch 8, 80k iterations (mmsegmentation's Cityscapes schedule);
evaluation on the full 1024 x 2048 labels with sliding 512 x 1024 windows, `val/iiou`
from the instance ids. Layouts: jaxseg/data/cityscapes.py.
"""
import pathlib

from jaxseg import config as config_lib


def get_config(arg=None):
  c = config_lib.load_config_file(pathlib.Path(__file__).with_name("rss_pascal.py"), arg)
  c.data.name = "cityscapes"
  c.cold_start.name = "mapillary"
  if "runlocal" not in (arg or "").split(","):
    c.data.crop_size = c.eval.crop_size = (512, 1024)
    c.batch_size = 8
    c.total_steps = c.cold_start.steps = 80_000
    c.eval_every = c.checkpoint_every = 8000
    c.eval.batch_size = 2
  return c
