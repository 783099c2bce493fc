"""Presenting pipeline results: a Markdown table and a PNG bar chart."""

import numpy as np

from expert_hub import io_utils


def percent(x):
  """An accuracy in [0, 1] as percent with one decimal, "-" for None (the results tables' format)."""
  return "-" if x is None else f"{100 * x:.1f}"


def markdown_table(results):
  """One row per task: kNN pick and its accuracy, the generalist, the oracle; then means and timings."""
  rows = ["| task | domain | kNN-selected expert | selected acc | generalist acc | oracle expert | oracle acc |",
          "|---|---|---|---|---|---|---|"]
  for t in results["tasks"]:
    rows.append(f"| {t['task']} | {t['domain'] or 'structured'} | {t['selected']} | "
                f"{percent(t['selected_accuracy'])} | {percent(t['generalist_accuracy'])} | "
                f"{t['oracle_expert'] or '-'} | {percent(t['oracle_accuracy'])} |")
  tasks = results["tasks"]
  if tasks:
    mean = lambda key: float(np.mean([t[key] for t in tasks])) if all(t[key] is not None for t in tasks) else None
    rows.append(f"| **mean** | | | **{percent(mean('selected_accuracy'))}** | "
                f"**{percent(mean('generalist_accuracy'))}** | | **{percent(mean('oracle_accuracy'))}** |")
  timing = ", ".join(f"{k} {v:.0f} s" for k, v in results["timings"].items() if not k.startswith("task:"))
  task_seconds = sum(v for k, v in results["timings"].items() if k.startswith("task:"))
  text = "\n".join(rows) + f"\n\nTest top-1 accuracy (%). Timings: {timing}; fine-tuning {task_seconds:.0f} s."
  select_s = sum(t["seconds"]["selection"] for t in tasks if "seconds" in t)
  finetune_all_s = sum(sum(t["seconds"]["finetune"].values()) for t in tasks if "seconds" in t)
  if tasks and all(t.get("oracle_expert") for t in tasks) and finetune_all_s > 0:
    text += (f" Selection cost {select_s:.0f} s over all tasks, {100 * select_s / finetune_all_s:.1f}% of "
             f"fine-tuning every module once ({finetune_all_s:.0f} s).")
  return text


def plot_results(results, path):
  """Grouped bars per task (selected / generalist / oracle), written atomically as PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = results["tasks"]
  names = [t["task"].split("/")[-1] for t in tasks]
  series = [("kNN-selected", "selected_accuracy"), ("generalist", "generalist_accuracy"),
            ("oracle", "oracle_accuracy")]
  x = np.arange(len(tasks))
  fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks)), 4))
  for i, (label, key) in enumerate(series):
    values = [100 * (t[key] or 0) for t in tasks]
    ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label)
  ax.set_xticks(x, names, rotation=30, ha="right")
  ax.set_ylabel("test top-1 (%)")
  ax.set_title(f"expert_hub ({results.get('config', '')}): fine-tuned accuracy per task")
  ax.legend()
  save_figure(fig, path)


def save_figure(fig, path, dpi=100):
  """Writes a matplotlib figure to `path` atomically (temp file + rename) and closes it."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig.tight_layout()
  try:
    # Readable by everyone who can read the workdir: a results plot is not private.
    with io_utils.atomic_writer(path, "wb") as f:
      fig.savefig(f, format="png", dpi=dpi)
  finally:
    plt.close(fig)
