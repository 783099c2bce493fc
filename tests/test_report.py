"""The experiments' tables and plots (experiments/report.py) from hand-made results: cells, CSV rows and PNGs."""

import csv
import io
import os

from expert_hub.experiments import report
from expert_hub.experiments import vtab_runner
from expert_hub.tasks import vtab


def _proxy_results():
  """Two tasks, proxies knn and random; random picks nothing on the second task."""
  def record(selected, accuracy, regret, scores):
    return {"selected": selected, "selected_accuracy": accuracy, "regret": regret, "kendall_tau": 0.5,
            "spearman_rho": None, "scores": scores}
  tasks = [{"task": "world/a", "finetune_accuracy": {"x": 0.7, "y": 0.6},
            "oracle": {"selected": "x", "selected_accuracy": 0.7, "regret": 0.0},
            "proxies": {"knn": record("x", 0.7, 0.0, {"x": 2.0, "y": 1.0}),
                        "random": record("y", 0.6, 0.1, {"x": 0.1, "y": 0.2})}},
           {"task": "world/b", "finetune_accuracy": {"x": 0.5, "y": 0.8},
            "oracle": {"selected": "y", "selected_accuracy": 0.8, "regret": 0.0},
            "proxies": {"knn": record("x", 0.5, 0.3, {"x": 2.0, "y": 1.0}),
                        "random": record(None, None, None, {})}}]
  row = lambda mean, hits, tasks: {"mean_regret": mean, "max_regret": mean, "oracle_hits": hits, "num_tasks": tasks,
                                   "mean_kendall_tau": 0.5, "mean_spearman_rho": None, "selection_seconds": 2.0,
                                   "cost_vs_finetune_all": 0.0125}
  summary = {"knn": row(0.15, 1, 2), "random": row(0.1, 0, 1), report.ORACLE: row(0.0, 2, 2)}
  return {"config": "tiny", "proxies": ["knn", "random"], "tasks": tasks, "summary": summary}


def test_frozen_table_marks_fine_tunes_below_any_frozen_classifier():
  frozen = {"knn_loo": 0.70, "linear_probe": 0.72, "knn_test": 0.69, "linear_probe_test": 0.75}
  tasks = [{"task": "world/a", "selected": "x", "selected_accuracy": 0.74, "frozen": frozen,
            "train_loss": {"x": 0.5}},
           {"task": "world/b", "selected": "y", "selected_accuracy": 0.76, "frozen": frozen}]
  lines = report.frozen_table(tasks).splitlines()
  assert lines[0].count("|") == 9 and "frozen probe test" in lines[0]
  assert lines[2] == "| world/a | x | 74.0 (below) | 70.0 | 72.0 | 69.0 | 75.0 | 0.500 |"  # under the test probe
  assert lines[3] == "| world/b | y | 76.0 | 70.0 | 72.0 | 69.0 | 75.0 | - |"


def test_proxy_table_rows_and_cells():
  lines = report.proxy_markdown_table(_proxy_results()).splitlines()
  assert lines[2] == "| knn | 15.0 | 15.0 | 1/2 | 0.50 | - | 2.0 | 1.2% |"
  assert lines[4] == "| oracle | 0.0 | 0.0 | 2/2 | 0.50 | - | 2.0 | 1.2% |"
  assert "| world/a | x 70.0 (0.0) | y 60.0 (10.0) | x 70.0 (0.0) |" in lines
  assert "| world/b | x 50.0 (30.0) | - | y 80.0 (0.0) |" in lines  # random picked nothing there


def test_proxy_plots_write_one_png_per_proxy(tmp_path):
  results = _proxy_results()
  paths = report.plot_proxy_scores(results, str(tmp_path))
  assert paths == [os.path.join(str(tmp_path), f"proxy_scores_{p}.png") for p in results["proxies"]]
  report.plot_proxy_regret(results, str(tmp_path / "regret.png"))
  for path in paths + [str(tmp_path / "regret.png")]:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _kinds():
  """compare_kinds' output for one task: the full domain expert and a kNN pick that is not the domain's."""
  gain = lambda mean, ci: {"mean": mean, "ci95": ci}
  picks = {"full": {"domain": {"expert": "a", "gain": gain(0.2, 0.01)},
                    "best": {"expert": "b", "gain": gain(0.25, None)},
                    "knn": {"expert": "a", "gain": gain(0.2, 0.01)}},
           "adapter": {"domain": {"expert": "a_adapter", "gain": gain(0.05, 0.02)},
                       "best": {"expert": "a_adapter", "gain": gain(0.05, 0.02)},
                       "knn": {"expert": "b_adapter", "gain": gain(-0.01, 0.03)}}}
  summary = {"full": {r: dict(gain(0.2, 0.1), tasks=1) for r in ("domain", "best", "knn")},
             "adapter": {r: dict(gain(0.05, 0.1), tasks=1) for r in ("domain", "best", "knn")},
             "adapter_minus_full": {r: dict(gain(-0.15, 0.05), tasks=1) for r in ("domain", "best", "knn")}}
  return {"proxy": "knn", "baseline": "generalist", "rules": ["domain", "best", "knn"],
          "tasks": [{"task": "world/a", "domain": "a", "picks": picks}], "summary": summary}


def test_kind_table_rows_and_plot(tmp_path):
  lines = report.kind_markdown_table(_kinds()).splitlines()
  assert lines[0] == ("| task | domain's own: full | domain's own: adapter | best fine-tuned: full | "
                      "best fine-tuned: adapter | knn-ranked: full | knn-ranked: adapter |")
  assert lines[2] == ("| world/a | +20.0 ± 1.0 | +5.0 ± 2.0 | b +25.0 | a_adapter +5.0 ± 2.0 | a +20.0 ± 1.0 | "
                      "b_adapter -1.0 ± 3.0 |")
  assert lines[3] == ("| **mean** | **+20.0 ± 10.0** | **+5.0 ± 10.0** | **+20.0 ± 10.0** | **+5.0 ± 10.0** | "
                      "**+20.0 ± 10.0** | **+5.0 ± 10.0** |")
  assert lines[4] == "| **adapter - full** | **-15.0 ± 5.0** |  | **-15.0 ± 5.0** |  | **-15.0 ± 5.0** |  |"
  results = dict(_proxy_results(), full_vs_adapter=_kinds())  # appended to the proxy evaluation's tables
  assert report.proxy_markdown_table(results).endswith(report.kind_markdown_table(_kinds()))
  report.plot_kind_comparison(_kinds(), str(tmp_path / "kinds.png"))
  with open(tmp_path / "kinds.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_csv_from_the_leaderboard_json_runs(tmp_path):
  first, last = vtab.TASKS.names()[0], vtab.TASKS.names()[-1]
  tasks = {first: {"test_accuracy": 0.5}, last: {"test_accuracy": 0.25}}
  runs = {"shapes": {"run": "shapes", "expert": "world32/shapes/1", "tasks": tasks,
                     "summary": vtab_runner.summarize(tasks)}}
  rows = list(csv.reader(io.StringIO(report.leaderboard_csv(runs))))
  assert rows[0][:3] == ["run", "expert", first] and rows[0][-2:] == ["mean", "tasks_done"]
  row = dict(zip(rows[0], rows[1]))
  assert (row["run"], row["expert"], row[first], row[last]) == ("shapes", "world32/shapes/1", "50.0", "25.0")
  assert row["mean"] == "37.5" and row["tasks_done"] == f"2/{len(vtab.TASKS.names())}"
  assert row[vtab.TASKS.names()[1]] == ""  # a task not run is an empty cell
  report.plot_vtab_group(runs, vtab.GROUPS[0], str(tmp_path / "group.png"))
  assert os.path.getsize(tmp_path / "group.png") > 1000


def test_leaderboard_lists_tasks_outside_vtab_after_its_own_in_group_other(tmp_path):
  # "tfds:cifar100" is the user's own read of CIFAR-100, not VTAB's task (other splits): it must not count as it.
  tasks = {"cifar100": {"test_accuracy": 0.5}, "world/count": {"test_accuracy": 0.4},
           "tfds:cifar100": {"test_accuracy": 0.7}}
  summary = vtab_runner.summarize(tasks)
  assert summary["natural"] == 0.5 and summary["other"] == 0.55 and summary["mean"] == round(1.6 / 3, 4)
  assert summary["tasks_done"] == f"1/{len(vtab.TASKS.names())} + 2 other"
  runs = {"mine": {"expert": "auto", "tasks": tasks, "summary": summary}}
  assert report.leaderboard_groups(runs) == list(vtab.GROUPS) + ["other"]
  rows = list(csv.reader(io.StringIO(report.leaderboard_csv(runs))))
  assert rows[0] == (["run", "expert"] + vtab.TASKS.names() + ["tfds:cifar100", "world/count"] + list(vtab.GROUPS)
                     + ["other", "mean", "tasks_done"])
  row = dict(zip(rows[0], rows[1]))
  assert (row["cifar100"], row["tfds:cifar100"], row["world/count"], row["other"]) == ("50.0", "70.0", "40.0", "55.0")
  report.plot_vtab_group(runs, "other", str(tmp_path / "other.png"))
  assert os.path.getsize(tmp_path / "other.png") > 1000
