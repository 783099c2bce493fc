"""The experiments' tables and plots: the pipeline's results, the VTAB leaderboard, transfer cost, proxy evaluation.

Plain functions from an experiment's results (the dicts its JSON files hold) to Markdown, CSV or PNG; they compute
no statistics (experiments/stats.py does) and read nothing else. The only module that imports matplotlib; every
figure is written atomically (save_figure).
"""

import csv
import io
import math
import os

import numpy as np

from expert_hub import io_utils
from expert_hub import naming
from expert_hub.tasks import vtab

ORACLE = "oracle"  # the oracle's row in proxy evaluation results (every model fine-tuned, the best kept)


# ---------------------------------------------------------------------------------------------- formatting
def percent(x):
  """An accuracy in [0, 1] as percent with one decimal, "-" for None (the results tables' format)."""
  return "-" if x is None else f"{100 * x:.1f}"


def interval(cell, scale=100, signed=False):
  """{"mean", "ci95"} as "72.6 ± 1.2" (percent; ci95 None: the mean alone), "-" for None."""
  if cell is None:
    return "-"
  mean = f"{scale * cell['mean']:+.1f}" if signed else f"{scale * cell['mean']:.1f}"
  return mean if cell.get("ci95") is None else f"{mean} ± {scale * cell['ci95']:.1f}"


def _num(x, digits=2):
  return "-" if x is None else f"{x:.{digits}f}"


def _pyplot():
  """matplotlib.pyplot on the Agg backend (files only, no display); imported when a plot is first drawn."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path, dpi=100):
  """Writes a matplotlib figure to `path` atomically (temp file + rename) and closes it."""
  plt = _pyplot()
  fig.tight_layout()
  try:
    # Readable by everyone who can read the workdir: a results plot is not private.
    with io_utils.atomic_writer(path, "wb") as f:
      fig.savefig(f, format="png", dpi=dpi)
  finally:
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- the pipeline
FROZEN_COLUMNS = (("knn_loo", "frozen kNN LOO"), ("linear_probe", "frozen probe CV"),
                  ("knn_test", "frozen kNN test"), ("linear_probe_test", "frozen probe test"))


def frozen_table(tasks):
  """Fine-tuned vs frozen features, per task, for the selected expert: its fine-tuned test top-1 (mean over
  seeds) beside the kNN and linear-probe accuracy of its frozen features (on the selection split: leave-one-out
  and cross-validated; on the test split: fitted on the selection split), and its final train loss (a schedule
  still far from a plateau shows there)."""
  rows = ["| task | selected expert | fine-tuned | " + " | ".join(title for _, title in FROZEN_COLUMNS)
          + " | fine-tune train loss |", "|---|---|---|" + "---|" * len(FROZEN_COLUMNS) + "---|"]
  for t in tasks:
    frozen = t.get("frozen") or {}
    loss = (t.get("train_loss") or {}).get(t["selected"])
    below = t["selected_accuracy"] < max(frozen.get(key, 0) for key, _ in FROZEN_COLUMNS)
    rows.append(f"| {t['task']} | {t['selected']} | {percent(t['selected_accuracy'])}{' (below)' if below else ''} | "
                + " | ".join(percent(frozen.get(key)) for key, _ in FROZEN_COLUMNS)
                + f" | {'-' if loss is None else f'{loss:.3f}'} |")
  return ("\n".join(rows) + "\n\nFrozen accuracies of the train800val200 images selection embeds: kNN leave-one-out "
          "and the 5-fold cross-validated probe; and on the test split fine-tuning is scored on, kNN and probe "
          "fitted on train800val200. \"(below)\": fine-tuning ended under one of these frozen-feature classifiers "
          "of the same expert.")


def markdown_table(results):
  """The results a user reads: per task the kNN pick, its accuracy, the generalist's and the control's (mean ±
  95% interval over seeds), and the pick's paired gain over each; then the mean gains over tasks (interval over
  tasks), full vs adapter experts, and timings."""
  tasks = results["tasks"]
  rows = ["| task | domain | kNN-selected expert | selected | generalist | control | gain vs generalist | "
          "gain vs control |", "|---|---|---|---|---|---|---|---|"]
  for t in tasks:
    acc, gain = t.get("accuracy", {}), t.get("gain", {})
    rows.append(f"| {t['task']} | {t['domain'] or 'structured'} | {t['selected']} | "
                f"{interval(acc.get(t['selected']))} | {interval(acc.get('generalist'))} | "
                f"{interval(acc.get('control'))} | {interval(gain.get('generalist'), signed=True)} | "
                f"{interval(gain.get('control'), signed=True)} |")
  if tasks:
    mean = lambda key: float(np.mean([t[key] for t in tasks])) if all(t.get(key) is not None for t in tasks) else None
    summary = results.get("summary", {})
    rows.append(f"| **mean** | | | **{percent(mean('selected_accuracy'))}** | "
                f"**{percent(mean('generalist_accuracy'))}** | **{percent(mean('control_accuracy'))}** | "
                f"**{interval(summary.get('gain_vs_generalist_all'), signed=True)}** | "
                f"**{interval(summary.get('gain_vs_control_all'), signed=True)}** |")
  seeds = results.get("seeds", 1)
  text = "\n".join(rows) + (
      f"\n\nTest top-1 accuracy (%), mean ± 95% interval over {seeds} fine-tuning seed(s), the same seeds for "
      "every model; gains are the kNN-selected expert's minus the baseline's, paired by seed (points).")
  summary = results.get("summary", {})
  if summary.get("domain_tasks"):
    n = len(summary["domain_tasks"])
    text += (f"\n\nOn the {n} domain tasks (95% interval over tasks): the selected expert gains "
             f"{interval(summary.get('gain_vs_generalist_domain'), signed=True)} points over the generalist and "
             f"{interval(summary.get('gain_vs_control_domain'), signed=True)} over the equal-compute control; "
             f"the best-ranked full expert gains {interval(summary.get('full_gain_domain'), signed=True)} and the "
             f"best-ranked adapter expert {interval(summary.get('adapter_gain_domain'), signed=True)} over the "
             "generalist.")
  if tasks and all(t.get("oracle_expert") for t in tasks):
    text += (f" Oracle (best fine-tuned expert) mean {percent(float(np.mean([t['oracle_accuracy'] for t in tasks])))}.")
  if any(t.get("frozen") for t in tasks):
    text += "\n\n" + frozen_table(tasks)
  timing = ", ".join(f"{k} {v:.0f} s" for k, v in results["timings"].items() if not k.startswith("task:"))
  task_seconds = sum(v for k, v in results["timings"].items() if k.startswith("task:"))
  text += f"\n\nTimings: {timing}; fine-tuning {task_seconds:.0f} s."
  select_s = sum(t["seconds"]["selection"] for t in tasks if "seconds" in t)
  finetune_s = sum(sum(t["seconds"]["finetune"].values()) for t in tasks if "seconds" in t)
  if tasks and finetune_s > 0:
    per_module = finetune_s / sum(len(t["seconds"]["finetune"]) for t in tasks) / max(1, seeds)
    all_modules = per_module * (len(results.get("experts", [])) + 1) * len(tasks)
    text += (f" Selection cost {select_s:.0f} s over all tasks, {100 * select_s / all_modules:.1f}% of fine-tuning "
             f"every module once on every task (~{all_modules:.0f} s at the measured {per_module:.1f} s per "
             "fine-tune).")
  return text


def plot_results(results, path):
  """The kNN-selected expert's paired gain per task over the generalist and the control, with 95% intervals
  (over seeds), and the domain-task mean (interval over tasks); written atomically as PNG."""
  plt = _pyplot()
  tasks = results["tasks"]
  summary = results.get("summary", {})
  names = [t["task"].split("/")[-1] for t in tasks] + ["mean (domain)"]
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
  for i, baseline in enumerate(("generalist", "control")):
    cells = [t.get("gain", {}).get(baseline) for t in tasks] + [summary.get(f"gain_vs_{baseline}_domain")]
    mean = [100 * c["mean"] if c else np.nan for c in cells]
    err = [100 * c["ci95"] if c and c.get("ci95") is not None else 0 for c in cells]
    ax.errorbar(x + (i - 0.5) * 0.25, mean, yerr=err, fmt="o", capsize=4, label=f"vs {baseline}")
  ax.axhline(0, color="black", linewidth=0.8)
  ax.set_xticks(x, names, rotation=30, ha="right")
  ax.set_ylabel("gain of the selected expert (points)")
  ax.set_title(f"expert_hub ({results.get('config', '')}): paired gain, 95% intervals")
  ax.legend()
  save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- VTAB
# `runs` below is the leaderboard's {run: dict(run.json, tasks={task: result.json}, summary=group means)}, the
# "runs" of vtab_results.json (vtab_runner.write_leaderboard).
OTHER_GROUP = "other"  # the leaderboard's group of tasks that are not VTAB's (world/, tfds:, folder: specs)


def other_task_names(names):
  """The task names among `names` that are not VTAB tasks, sorted: the OTHER_GROUP of a leaderboard."""
  vtab_names = set(vtab.TASKS.names())
  return sorted({n for n in names if n not in vtab_names})


def group_task_names(runs, group):
  """The tasks of a leaderboard group: VTAB's for its groups; for OTHER_GROUP every run's non-VTAB tasks."""
  if group == OTHER_GROUP:
    return other_task_names(n for data in runs.values() for n in data["tasks"])
  return vtab.TASKS.names(group)


def leaderboard_groups(runs):
  """VTAB's groups, then OTHER_GROUP when some run holds a task that is not VTAB's."""
  return list(vtab.GROUPS) + ([OTHER_GROUP] if group_task_names(runs, OTHER_GROUP) else [])


def leaderboard_csv(runs):
  """VTAB leaderboard shape: one row per run, a column per task (top-1 %; VTAB's 19, then any other task a run
  holds), group means (VTAB's groups, then OTHER_GROUP when there are other tasks), the mean and tasks done."""
  groups = leaderboard_groups(runs)
  tasks = [n for g in groups for n in group_task_names(runs, g)]
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["run", "expert"] + tasks + groups + ["mean", "tasks_done"])
  pct = lambda x: "" if x is None else f"{100 * x:.1f}"
  for run, data in runs.items():
    summary = data["summary"]
    row = [run, data.get("expert", "")]
    row += [pct(data["tasks"][n]["test_accuracy"]) if n in data["tasks"] else "" for n in tasks]
    row += [pct(summary.get(g)) for g in groups] + [pct(summary["mean"]), summary["tasks_done"]]
    writer.writerow(row)
  return out.getvalue()


def plot_vtab_group(runs, group, path):
  """Bars of test top-1 per task of `group` (and the group mean), one colour per run; written atomically."""
  plt = _pyplot()
  names = [n for n in group_task_names(runs, group) if any(n in d["tasks"] for d in runs.values())]
  labels = names + ["mean"]
  x = np.arange(len(labels))
  width = 0.8 / max(1, len(runs))
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 4))
  for i, (run, data) in enumerate(runs.items()):
    values = [100 * data["tasks"][n]["test_accuracy"] if n in data["tasks"] else 0 for n in names]
    values.append(100 * (data["summary"].get(group) or 0))
    ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=run)
  ax.set_xticks(x, labels, rotation=30, ha="right")
  ax.set_ylabel("test top-1 (%)")
  ax.set_ylim(0, 100)
  title = "tasks outside VTAB" if group == OTHER_GROUP else f"VTAB-1k {group}"
  ax.set_title(f"{title}: fine-tuned test accuracy per task")
  ax.legend()
  save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- transfer cost
def budget_markdown(rows):
  """Table of transfer_cost.budget_ratios rows: [(label, ratios dict)]."""
  lines = ["| budgets | (a) TFLOPs | (c) TFLOPs | shared fine-tune TFLOPs | c/a | c/a before fine-tune |",
           "|---" * 6 + "|"]
  for label, r in rows:
    lines.append(f"| {label} | {r['a_flops'] / 1e12:.1f} | {r['c_flops'] / 1e12:.1f} | "
                 f"{r['finetune_flops'] / 1e12:.1f} | {r['c/a flops']:.0f}x | {r['c/a flops before finetune']:.0f}x |")
  return "\n".join(lines)


def transfer_cost_markdown(results, one_off):
  """The side-by-side table: per task cost of (a), (b), (c), their ratios and accuracies (transfer_cost.py)."""
  lines = ["| task | (a) expert_hub s | (b) oracle s | (c) DAT s | b/a | c/a (s) | c/a (FLOPs) "
           "| c/a before fine-tune (FLOPs) | acc (a) | acc (b) | acc (c) |", "|---" * 11 + "|"]
  for r in results:
    a, b, c = r["a_expert_hub"], r["b_oracle"], r["c_dat"]
    before = r["ratios"].get("c/a flops before finetune", float("nan"))  # absent in results cached before it
    lines.append(f"| {r['task']} | {a['seconds']:.1f} | {b['seconds']:.1f} | {c['seconds']:.1f} | "
                 f"{r['ratios']['b/a seconds']:.1f}x | {r['ratios']['c/a seconds']:.1f}x | "
                 f"{r['ratios']['c/a flops']:.1f}x | {before:.1f}x | {100 * a['accuracy']:.1f} | "
                 f"{100 * b['accuracy']:.1f} | {100 * c['accuracy']:.1f} |")
  mean = lambda key, part: np.mean([r[part][key] for r in results])  # pylint: disable=unnecessary-lambda-assignment
  lines.append(f"| **mean** | {mean('seconds', 'a_expert_hub'):.1f} | {mean('seconds', 'b_oracle'):.1f} | "
               f"{mean('seconds', 'c_dat'):.1f} | {np.mean([r['ratios']['b/a seconds'] for r in results]):.1f}x | "
               f"{np.mean([r['ratios']['c/a seconds'] for r in results]):.1f}x | "
               f"{np.mean([r['ratios']['c/a flops'] for r in results]):.1f}x | "
               f"{np.mean([r['ratios'].get('c/a flops before finetune', np.nan) for r in results]):.1f}x | "
               f"{100 * mean('accuracy', 'a_expert_hub'):.1f} | {100 * mean('accuracy', 'b_oracle'):.1f} | "
               f"{100 * mean('accuracy', 'c_dat'):.1f} |")
  lines.append("")
  n = max(len(results), 1)
  for group, e in one_off.items():
    lines.append(f"One-off {group} ({e['models']} models): {e['seconds']:.0f} s, {e['flops'] / 1e12:.2f} TFLOPs; "
                 f"amortised over {n} tasks: {e['seconds'] / n:.1f} s per task.")
  return "\n".join(lines)


def plot_transfer_cost(results, path):
  """Cost per task (log seconds) of the three routes, and their test accuracy."""
  plt = _pyplot()
  names = [r["task"].split("/")[-1] for r in results]
  routes = [("a_expert_hub", "(a) expert_hub"), ("b_oracle", "(b) oracle"), ("c_dat", "(c) DAT")]
  x = np.arange(len(results))
  fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results)), 4))
  for i, (key, label) in enumerate(routes):
    axes[0].bar(x + (i - 1) * 0.27, [r[key]["seconds"] for r in results], 0.27, label=label)
    axes[1].bar(x + (i - 1) * 0.27, [100 * r[key]["accuracy"] for r in results], 0.27, label=label)
  axes[0].set_yscale("log")
  axes[0].set_ylabel("wall seconds per task (log)")
  axes[1].set_ylabel("test top-1 (%)")
  for ax in axes:
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
  axes[0].legend()
  save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- proxy evaluation
def proxy_markdown_table(results):
  """A summary table (a row per proxy, then the oracle), a per-task table of picks and regrets and, with domain
  tasks, the full vs adapter table (kind_markdown_table)."""
  summary, tasks = results["summary"], results["tasks"]
  rows = ["| proxy | mean regret | max regret | oracle hits | Kendall τ-b | Spearman ρ | selection s | "
          "vs fine-tune all |", "|---|---|---|---|---|---|---|---|"]
  for label, s in summary.items():
    rows.append(f"| {label} | {percent(s['mean_regret'])} | {percent(s['max_regret'])} | "
                f"{s['oracle_hits']}/{s['num_tasks']} | {_num(s['mean_kendall_tau'])} | "
                f"{_num(s['mean_spearman_rho'])} | {s['selection_seconds']:.1f} | "
                f"{_num(None if s['cost_vs_finetune_all'] is None else 100 * s['cost_vs_finetune_all'], 1)}% |")
  labels = list(results["proxies"]) + [ORACLE]
  rows += ["", "| task | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
  for t in tasks:
    cells = []
    for label in labels:
      r = t[ORACLE] if label == ORACLE else t["proxies"][label]
      cells.append("-" if r["selected"] is None else
                   f"{r['selected']} {percent(r['selected_accuracy'])} ({percent(r['regret'])})")
    rows.append(f"| {t['task']} | " + " | ".join(cells) + " |")
  text = ("\n".join(rows) + "\n\nRegret: oracle test top-1 minus the fine-tuned test top-1 of the proxy's pick "
          "(points). Oracle hits: tasks where the pick is the best fine-tuned model. τ-b and ρ: between proxy scores "
          "and fine-tuned accuracies, mean over tasks where defined. Selection s: proxy + the inputs it reads "
          "(embeddings, logits), all tasks; vs fine-tune all: that over the seconds of fine-tuning every model. "
          "Per task: pick, its accuracy (regret).")
  kinds = results.get("full_vs_adapter") or {}
  return text + ("\n\n" + kind_markdown_table(kinds) if kinds.get("tasks") else "")


_RULE_TITLES = {"domain": "domain's own", "best": "best fine-tuned"}


def kind_markdown_table(kinds):
  """Full vs adapter experts (proxy_evaluation.compare_kinds): per domain task and pick rule the full and the
  adapter expert's paired gain over the baseline (expert named where it is not the domain's own), then the
  mean over tasks and the adapter's minus the full expert's gain, each with its 95% interval over tasks."""
  rules = kinds["rules"]
  title = lambda rule: _RULE_TITLES.get(rule, f"{rule}-ranked")
  header = "| task | " + " | ".join(f"{title(r)}: full | {title(r)}: adapter" for r in rules) + " |"
  rows = [header, "|---" * (1 + 2 * len(rules)) + "|"]

  def cell(pick, rule):
    if pick is None:
      return "-"
    gain = interval(pick["gain"], signed=True)
    return gain if rule == "domain" else f"{pick['expert']} {gain}"
  for t in kinds["tasks"]:
    rows.append(f"| {t['task']} | " + " | ".join(cell(t["picks"][kind].get(rule), rule)
                                                 for rule in rules for kind in ("full", "adapter")) + " |")
  summary = kinds["summary"]
  for label, key in (("**mean**", None), ("**adapter - full**", "adapter_minus_full")):
    cells = []
    for rule in rules:
      if key:
        cells += [f"**{interval(summary.get(key, {}).get(rule), signed=True)}**", ""]
      else:
        cells += [f"**{interval(summary.get(kind, {}).get(rule), signed=True)}**" for kind in ("full", "adapter")]
    rows.append(f"| {label} | " + " | ".join(cells) + " |")
  return ("\n".join(rows) + f"\n\nFull vs adapter experts on the domain tasks: each pick's test top-1 gain over "
          f"the {kinds['baseline']} (points; per task ± 95% interval over seeds, paired; the mean rows ± 95% "
          "interval over tasks). Rules: the task's own domain expert, the kind's best fine-tuned expert (an "
          f"oracle within the kind), the kind's best by {kinds['proxy']}.")


def plot_kind_comparison(kinds, path):
  """Bars of full and adapter experts' mean gain over the baseline per pick rule, with 95% intervals over
  tasks, and each task's gain as a dot."""
  plt = _pyplot()
  rules, summary = kinds["rules"], kinds["summary"]
  x = np.arange(len(rules))
  fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rules) + 2), 4))
  for offset, kind, color in ((-0.2, "full", "tab:blue"), (0.2, "adapter", "tab:orange")):
    means = [100 * summary.get(kind, {}).get(rule, {}).get("mean", np.nan) for rule in rules]
    errors = [100 * (summary.get(kind, {}).get(rule, {}).get("ci95") or 0) for rule in rules]
    ax.bar(x + offset, means, 0.38, yerr=errors, capsize=4, color=color, alpha=0.7, label=f"{kind} experts")
    for i, rule in enumerate(rules):
      dots = [100 * t["picks"][kind][rule]["gain"]["mean"] for t in kinds["tasks"] if rule in t["picks"][kind]]
      ax.scatter(np.full(len(dots), i + offset), dots, s=12, color="black", zorder=3)
  ax.axhline(0, color="black", linewidth=0.8)
  low, high = ax.get_ylim()
  ax.set_ylim(low, high + 0.25 * (high - low))  # room for the legend above the tallest dot
  ax.set_xticks(x, [_RULE_TITLES.get(r, f"{r}-ranked") for r in rules])
  ax.set_ylabel(f"gain over the {kinds['baseline']} (top-1 points)")
  ax.set_title("full vs adapter experts on the domain tasks (mean ± 95% interval over tasks; dots: tasks)",
               fontsize=9)
  ax.legend(loc="upper right", ncol=2)
  save_figure(fig, path)


def plot_proxy_scores(results, workdir):
  """One PNG per proxy, `proxy_scores_<proxy>.png`: a subplot per task of proxy score vs fine-tuned accuracy,
  the pick marked with a star and the oracle ringed. Returns the paths written."""
  plt = _pyplot()
  tasks, paths = results["tasks"], []
  cols = min(4, len(tasks))
  rows = math.ceil(len(tasks) / cols)
  for label in results["proxies"]:
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
      r = t["proxies"][label]
      names = [n for n in r["scores"] if n in t["finetune_accuracy"]]
      x = [r["scores"][n] for n in names]
      y = [100 * t["finetune_accuracy"][n] for n in names]
      ax.scatter(x, y, s=18, color="tab:blue")
      for n, xi, yi in zip(names, x, y):
        if n == r["selected"]:
          ax.scatter([xi], [yi], marker="*", s=160, color="tab:orange", zorder=3, label="pick")
        if n == t[ORACLE]["selected"]:
          ax.scatter([xi], [yi], s=110, facecolors="none", edgecolors="tab:red", zorder=4, label="oracle")
      ax.set_title(f"{t['task'].split('/')[-1][:28]}\nτ={_num(r['kendall_tau'])} ρ={_num(r['spearman_rho'])}",
                   fontsize=9)
      ax.tick_params(labelsize=7)
    for ax in axes.flat[len(tasks):]:
      ax.axis("off")
    for ax in axes[:, 0]:
      ax.set_ylabel("fine-tuned top-1 (%)", fontsize=8)
    for ax in axes[-1, :]:
      ax.set_xlabel(f"{label} score", fontsize=8)
    handles, legend_labels = axes.flat[0].get_legend_handles_labels()
    unique = dict(zip(legend_labels, handles))
    if unique:
      fig.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    fig.suptitle(f"proxy {label}: score vs fine-tuned accuracy per task", fontsize=10)
    path = os.path.join(workdir, f"proxy_scores_{naming.folder_name(label)}.png")
    save_figure(fig, path)
    paths.append(path)
  return paths


def plot_proxy_regret(results, path):
  """Bars of each proxy's mean regret (points), with every task's regret as a dot; the oracle is 0."""
  plt = _pyplot()
  labels = list(results["proxies"])
  x = np.arange(len(labels))
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4))
  means = [100 * (results["summary"][label]["mean_regret"] or 0) for label in labels]
  ax.bar(x, means, 0.6, color="tab:blue", alpha=0.7, label="mean over tasks")
  for i, label in enumerate(labels):
    per_task = [100 * t["proxies"][label]["regret"] for t in results["tasks"]
                if t["proxies"][label]["regret"] is not None]
    ax.scatter(np.full(len(per_task), i), per_task, s=12, color="black", zorder=3,
               label="one task" if i == 0 else None)
  ax.set_xticks(x, labels, rotation=30, ha="right")
  ax.set_ylabel("regret (top-1 points)")
  ax.set_title(f"expert_hub ({results.get('config', '')}): regret of each proxy's pick vs the oracle")
  ax.legend()
  save_figure(fig, path)
