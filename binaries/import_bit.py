r"""Imports a BiT weight file as the generalist hub module (with its upstream head as the logits endpoint).

  python binaries/import_bit.py --npz=BiT-M-R50x1.npz --export_dir=/tmp/experts --upstream=in21k
Files come from the BiT release (BiT-M-R50x1.npz, R50x3, R101x1, ...); this never downloads them.
"""

import os
import zipfile

from absl import app
from absl import flags

from expert_hub import flags_common
from expert_hub.hub import export
from expert_hub.models import bit_import
from expert_hub.models import resnet_v2

FLAGS = flags.FLAGS
flags.DEFINE_string("npz", None, "Path of a BiT .npz weight file.")
flags.DEFINE_string("export_dir", None, "Root of exported modules.")
flags.DEFINE_string("upstream", "in21k", "Upstream name used in the export path.")
flags.DEFINE_string("name", "generalist", "Module name.")
flags.DEFINE_integer("version", 1, "Module version.", lower_bound=1)
flags.DEFINE_integer("image_size", 224, "Resolution the weights were trained at (metadata only).", lower_bound=1)
flags.DEFINE_string("label_names_file", None, "Optional text file, one upstream label name per line.")
flags.mark_flags_as_required(["npz", "export_dir"])


def main(argv):
  del argv
  flags_common.setup_logging()
  export.check_name(FLAGS.upstream, "--upstream")  # both become folders of the export path
  export.check_name(FLAGS.name, "--name")
  flags_common.check_workdir(FLAGS.export_dir, "--export_dir")
  if not os.path.exists(FLAGS.npz):
    raise app.UsageError(f"--npz={FLAGS.npz!r} does not exist.")
  if FLAGS.label_names_file is not None and not os.path.isfile(FLAGS.label_names_file):
    raise app.UsageError(f"--label_names_file={FLAGS.label_names_file!r} is not a file.")
  try:
    arrays = bit_import.load_bit_npz(FLAGS.npz)
  except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f"--npz={FLAGS.npz!r} is not a readable .npz weight file ({type(e).__name__}: {e}).") from None
  model, cfg, num_classes = bit_import.build_from_bit(arrays)
  metadata = {"kind": "generalist", "node": None, "image_size": FLAGS.image_size, "model": cfg.to_dict(),
              "adapter": None, "source": os.path.basename(FLAGS.npz), "labels": list(range(num_classes or 0))}
  head = None
  if num_classes:
    head = model.get_layer("head")
    if FLAGS.label_names_file:
      with open(FLAGS.label_names_file) as f:
        names = [line.strip() for line in f if line.strip()]
      if len(names) != num_classes:
        raise app.UsageError(f"--label_names_file has {len(names)} names; the head has {num_classes} outputs.")
      metadata["label_names"] = names
  backbone = resnet_v2.get_backbone(model) if num_classes else model
  path = export.export_module(backbone, FLAGS.export_dir, FLAGS.upstream, FLAGS.name, FLAGS.version, metadata,
                              head=head)
  print(path)


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
