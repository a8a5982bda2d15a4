"""`jaxseg.algorithms` imports alone: no input pipeline, checkpointing or plotting."""
import subprocess
import sys

HEAVY = ("orbax", "grain", "tensorflow_datasets", "tqdm", "matplotlib", "tensorboardX")


def test_algorithms_do_not_import_the_trainer_stack():
  code = ("import sys; import jaxseg.algorithms.psl, jaxseg.algorithms.rss, "
          "jaxseg.algorithms.ciss, jaxseg.algorithms.acis; "
          f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr
