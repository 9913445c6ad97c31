"""The main job on a tiny budget: both runs, the table and the curves."""

from lerl_recsim.experiments import quickstart


def test_main_job_trains_both_agents_and_prints_table_and_curves(tmp_path):
  outcome = quickstart.compare_lerl_and_dqn(
      str(tmp_path), planner="heuristic", num_iterations=4, num_users=4,
      num_eval_sessions=8, seed=3)
  summaries, table = outcome["summaries"], outcome["table"]
  assert list(summaries) == ["lerl", "dqn"]
  for agent, summary in summaries.items():
    assert summary["config"]["run"]["stop_when_levelled"]
    # One evaluation at the end of a 4-iteration budget: too few to judge.
    assert summary["learning_curve"]["iterations"] == [4]
    assert f"{agent}: " in table
  assert table.count("too few evaluations to judge") == 2
  assert summaries["lerl"]["config"]["run"]["planner"] == "heuristic"
  assert summaries["dqn"]["config"]["run"]["planner"] is None
  rows = [line for line in table.splitlines() if line.startswith("| ")]
  assert [row.split(" | ")[0] for row in rows[1:]] == ["| lerl", "| dqn"]
  assert (tmp_path / "table.md").read_text() == table
