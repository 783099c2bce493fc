"""Model cards: the README.md written beside every module's expert.json, generated from it.

A card says, as TF Hub and Kaggle pages do: what the module is, its hierarchy node and labels, its training data
and budget, its measured quality (the expert's precision@1 on its labels next to the generalist's, when
expert.json records them), the input contract, and how to load it four ways (hub.load, hub.KerasLayer under
tf-keras, keras.layers.TFSMLayer, expert_hub.ExpertLayer). A pack's card lists its experts.

expert.json stays the machine-readable source: the card holds nothing that is not in it, so
`write_model_card(path)` regenerates it, byte for byte. It is written before the sha256 manifest is taken and
is in it, like every file of the module but expert.json: an edited card is reported as a modified file.
"""

import os

from expert_hub import io_utils

MODEL_CARD_FILE = "README.md"
_MAX_LABELS = 30

_KINDS = {
    "generalist": "the generalist: the whole network trained on every upstream label; every expert starts from it",
    "full": "a full expert: the whole generalist network fine-tuned on the images of one hierarchy node",
    "adapter": "an adapter expert: the generalist's trunk, frozen, plus residual adapters trained on the images of "
               "one hierarchy node",
    "control": "the equal-compute control: the generalist trained on, on every upstream label, for as many steps "
               "and with the same recipe as a full expert (a baseline that tells specialisation from extra compute)",
    "dat": "a DAT-style transfer model: the generalist continued on upstream data re-sampled towards one task",
    "pack": "a pack: the generalist trunk stored once plus several adapter experts as named sub-modules",
}


def _fmt(value):
  if isinstance(value, float):
    return f"{value:.4g}"
  return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _architecture(info):
  model = info.get("model")
  if not model:
    return "not recorded"
  units = model.get("units")
  depth = 1 + 3 * sum(units) + 1 if units else model.get("depth")  # stem + 3 convs per unit + head, as BiT counts
  text = (f"ResNet-v2, {depth} layers (units per stage {units}), width x{_fmt(model.get('width', 1.0))}, GroupNorm "
          f"({model.get('max_groups')} groups) + Weight Standardization (BiT)")
  adapter = info.get("adapter")
  if adapter:
    text += f"; residual adapters {', '.join(f'{k}={v}' for k, v in sorted(adapter.items()))}"
  return text


def _labels(info):
  labels, names = info.get("labels"), info.get("label_names")
  if labels is None:
    return "Upstream labels: not recorded."
  shown = list(names) if names else [str(l) for l in labels]
  more = len(shown) - _MAX_LABELS
  listing = ", ".join(f"`{n}`" for n in shown[:_MAX_LABELS]) + (f", ... and {more} more" if more > 0 else "")
  return f"{len(labels)} upstream labels (the `logits` endpoint's outputs, in this order): {listing}."


def _quality(info):
  train = info.get("train") or {}
  own, generalist = train.get("eval_precision_at_1"), train.get("generalist_eval_precision_at_1")
  if own is None:
    return "expert.json records no measured quality for this module."
  rows = ["| model | precision@1 on this module's labels (upstream eval split) |", "|---|---|",
          f"| this module | {100 * own:.1f}% |"]
  if generalist is not None:
    rows.append(f"| the generalist, on the same labels | {100 * generalist:.1f}% |")
  elif info.get("kind") == "generalist":
    rows[-1] = f"| this module (all labels) | {100 * own:.1f}% |"
  return "\n".join(rows)


def _training(info):
  train = info.get("train") or {}
  lines = [f"- Upstream: `{info.get('upstream')}`" + (f", {_fmt(info['num_images'])} images of this node"
                                                        if info.get("num_images") else "")]
  if info.get("image_size"):
    lines.append(f"- Image size: {info['image_size']} px")
  budget = [f"{k.replace('_', ' ')} {_fmt(train[k])}" for k in ("steps", "seconds", "images_per_second")
            if train.get(k) is not None]
  lines.append("- Budget: " + (", ".join(budget) if budget else "not recorded"))
  return "\n".join(lines)


def _contract(info):
  endpoints = info.get("endpoints") or ["__call__"]
  lines = [f"- Input: {info.get('input', 'float32 [batch, height, width, 3] in [0, 1]')}, any height and width"
           + (f" (trained at {info['image_size']} px)" if info.get("image_size") else "") + ".",
           f"- Output: `module(images, training=False)` -> float32 [batch, {info.get('feature_dim')}] features.",
           f"- Endpoints: {', '.join(f'`{e}`' for e in endpoints)}"
           + ("; `logits(images)` -> [batch, number of labels] upstream logits" if "logits" in endpoints else "")
           + ".",
           f"- Parameters: {_fmt(info.get('num_params'))} ({_fmt(info.get('num_trainable_params'))} trainable)."]
  return "\n".join(lines)


def _loading(handle, folder, packed=None, endpoints=(), adapter=False):
  sub = f".{packed}" if packed else ""
  expert_handle = f"{handle}#{packed}" if packed else handle
  if packed:
    tfsm = "None  # TFSMLayer reaches the pack's root only; use 1, 2 or 4 for its experts"
  elif "serve" in endpoints:
    tfsm = 'keras.layers.TFSMLayer(path, call_endpoint="serve", call_training_endpoint="call_training", trainable=True)'
  else:
    tfsm = "None  # exported without the serve / call_training endpoints; use 1, 2 or 4"
  only_adapters = ", train_adapters_only=True" if adapter else ""
  return f"""```python
path = "/path/to/{folder}"   # this folder

# 1. TF Hub / TensorFlow: the Reusable SavedModel
import tensorflow_hub as hub
module = hub.load(path){sub}
features = module(images, training=False)

# 2. tf-keras (TF_USE_LEGACY_KERAS=1; hub.KerasLayer cannot share a process with Keras 3)
import tf_keras
layer = hub.KerasLayer({'module' if packed else 'path'}, trainable=True)

# 3. Keras 3 TFSMLayer (no regularization losses, training only through the two endpoints)
import keras
layer = {tfsm}

# 4. Keras 3 ExpertLayer, by name under its export dir
import expert_hub
layer = expert_hub.ExpertLayer("{expert_handle}", trainable=True{only_adapters}, export_dirs=["/path/to"])
```"""


def _pack_table(info):
  rows = ["| expert | kind | node | labels | own params | precision@1 (generalist) |", "|---|---|---|---|---|---|"]
  for name, e in sorted((info.get("experts") or {}).items()):
    train = e.get("train") or {}
    own, gen = train.get("eval_precision_at_1"), train.get("generalist_eval_precision_at_1")
    quality = "not recorded" if own is None else f"{100 * own:.1f}%" + (f" ({100 * gen:.1f}%)" if gen is not None
                                                                        else "")
    rows.append(f"| `{name}` | {e.get('kind')} | `{e.get('node')}` | {len(e.get('labels') or [])} | "
                f"{_fmt(e.get('num_own_params'))} | {quality} |")
  return "\n".join(rows)


def render(info):
  """The card's Markdown text for one module's expert.json content."""
  upstream, name, version = info.get("upstream"), info.get("name"), info.get("version")
  handle = f"{upstream}/{name}/{version}"
  kind = info.get("kind")
  folder = f"{upstream}/{name}/{version}"
  parts = [f"# {handle}", "",
           f"An expert_hub module: {_KINDS.get(kind, f'a module of kind {kind!r}')}. "
           f"Upstream `{upstream}`, hierarchy node `{info.get('node')}`.",
           "", "## What it is", "", f"- Kind: `{kind}`", f"- Architecture: {_architecture(info)}",
           f"- Format: {info.get('format', 'tf2-reusable-savedmodel')}"]
  if kind == "pack":
    experts = sorted(info.get("experts") or {})
    parts += ["", f"## Experts ({len(experts)})", "",
              f"Each is a named sub-module (`module.<expert>`, with its own `variables` and "
              f"`trainable_variables`); load one as `\"{handle}#<expert>\"`."
              + (" `module.embed_all(images)` returns every expert's features [E, B, D] in the order of "
                 "`module.embed_all_experts`." if info.get("embed_all") else ""), "", _pack_table(info)]
  else:
    parts += ["", "## Hierarchy node and labels", "", f"Node: `{info.get('node')}`. {_labels(info)}",
              "", "## Training data and budget", "", _training(info),
              "", "## Measured quality", "", _quality(info)]
  parts += ["", "## Input contract", "", _contract(info),
            "", "## How to load it", "",
            _loading(handle, folder, packed=(sorted(info.get("experts") or {}) or [None])[0] if kind == "pack"
                     else None, endpoints=info.get("endpoints") or (), adapter=kind in ("adapter", "pack")),
            "", "## Integrity", "",
            "`expert.json` lists the sha256 of every file of this module but itself (this card included); "
            "expert_hub checks them on every load and names any file that differs.", ""]
  return "\n".join(parts)


def write_model_card(path, info=None):
  """Writes `<path>/README.md` from `info` (default: the module's expert.json); returns the card's path."""
  if info is None:
    info = io_utils.read_json(os.path.join(path, "expert.json"),
                              missing=f"{path!r} is not an expert_hub module (expert.json is missing).")
  card = os.path.join(path, MODEL_CARD_FILE)
  io_utils.atomic_write_text(card, render(info))
  return card
