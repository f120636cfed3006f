"""``pointworld demo``, ``plan`` and ``benchmark-planning`` end to end in smoke configurations."""

from __future__ import annotations

import json

import pytest
import torch

from pointworld.cli import main
from tests.micro import micro_checkpoint

FAST = ["planner.optimizer.num_samples=4", "planner.optimizer.iterations=1", "device=cpu"]
GOAL = "pointworld/assets/goals/push_red_box.json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A micro world model (T = 10) with fitted normalization, saved as a checkpoint."""
    return micro_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro.pt", horizon=10)


@pytest.mark.parametrize("robot", ["flying_gripper", "ur5e_gripper"])  # the UR5e's table lies at -x
def test_demo_runs_end_to_end_and_writes_its_outputs(checkpoint, tmp_path, capsys, robot):
    out = tmp_path / "demo"
    rc = main(["demo", f"robot={robot}", f"checkpoint={checkpoint}", "max_replans=1", "cameras.width=160",
               "cameras.height=120", f"output_dir={out}", *FAST])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"push with {robot}" in printed and "per plan" in printed
    for name in ("start.png", "end.png", "observed_start.ply", "predicted_flow.ply", "observed_end.ply",
                 "plan.npz", "plan_flow.png", "plan_cost.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replans"] == 1 and summary["final_error_m"] > 0 and len(summary["plan_times_s"]) == 1


def test_plan_from_the_demo_capture_writes_a_trajectory_within_limits(checkpoint, tmp_path, capsys):
    out = tmp_path / "plan"
    rc = main(["plan", f"goal={GOAL}", f"checkpoint={checkpoint}", "robot=franka_panda", f"output_dir={out}",
               *FAST])
    assert rc == 0, capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text())
    q = torch.tensor(plan["q"])
    assert q.shape == (11, 8) and plan["goal_points"] > 0
    from pointworld.robot.urdf import load_robot

    robot = load_robot("franka_panda")
    assert bool(((q >= robot.lower - 1e-6) & (q <= robot.upper + 1e-6)).all())
    assert (out / "plan.npz").is_file() and (out / "predicted_flow.ply").is_file()


def test_plan_errors_name_the_problem(checkpoint, tmp_path, capsys):
    empty = tmp_path / "nothing.json"
    empty.write_text(json.dumps({"select": {"box": [[5, 5, 5], [6, 6, 6]]}, "translation": [0.1, 0, 0]}))
    assert main(["plan", f"goal={empty}", f"checkpoint={checkpoint}", f"output_dir={tmp_path}", *FAST]) == 1
    assert "selects no points" in capsys.readouterr().err
    assert main(["plan", f"goal={GOAL}", f"checkpoint={checkpoint}", "q0=[0.0,0.1,0.2]",
                 f"output_dir={tmp_path}", *FAST]) == 1
    assert "q0" in capsys.readouterr().err


def test_benchmark_planning_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["benchmark-planning", "models=[oracle,zero_motion,segment_follow]", "robots=[flying_gripper]",
               "episodes=1", "max_replans=1", "max_lookbacks=0", "cameras.width=160", "cameras.height=120",
               f"out={out}", *FAST])
    assert rc == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert data["config"]["max_lookbacks"] == 0
    assert all(r["episode_results"][0]["lookbacks"] == 0 for r in rows)
    assert [(r["model"], r["episodes"]) for r in rows] == [("oracle", 1), ("zero_motion", 1), ("segment_follow", 1)]
    for r in rows:  # per-episode results, so cells of different lengths compare on common seeds
        assert len(r["episode_success"]) == len(r["episode_final_error_m"]) == 1
        assert r["success_rate"] == sum(r["episode_success"])
        assert r["final_error_m_mean"] == r["episode_final_error_m"][0]
    assert "success" in capsys.readouterr().out


def test_benchmark_planning_keeps_finished_cells_and_resumes(tmp_path, monkeypatch):
    """Rows are saved after every cell; resume=true re-runs only the missing cells; other settings refuse."""
    import pointworld.planning.benchmark as benchmark

    out = tmp_path / "bench.json"
    args = ["benchmark-planning", "models=[oracle,zero_motion]", "robots=[ur5e_gripper]", "episodes=1",
            "max_replans=1", "cameras.width=160", "cameras.height=120", f"out={out}", *FAST]
    real_run_cell, calls = benchmark.run_cell, []

    def interrupted(config, task, robot, model_name, *rest):
        calls.append(model_name)
        if model_name == "zero_motion":
            raise KeyboardInterrupt
        return real_run_cell(config, task, robot, model_name, *rest)

    monkeypatch.setattr(benchmark, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert [r["model"] for r in json.loads(out.read_text())["rows"]] == ["oracle"]  # the finished cell survived
    monkeypatch.setattr(benchmark, "run_cell", lambda *a: (calls.append(a[3]), real_run_cell(*a))[1])
    assert main([*args, "resume=true"]) == 0
    assert calls == ["oracle", "zero_motion", "zero_motion"]  # oracle was not run again
    assert [r["model"] for r in json.loads(out.read_text())["rows"]] == ["oracle", "zero_motion"]
    assert main([*args[:4], "episodes=2", *args[5:], "resume=true"]) != 0  # other settings: refused


def test_benchmark_planning_resumes_a_cell_after_its_saved_episodes(tmp_path, monkeypatch):
    """An interruption inside a cell keeps its finished episodes on disk; resume=true runs only the rest, and
    the row equals the one of an uninterrupted run."""
    import pointworld.planning.benchmark as benchmark

    args = ["benchmark-planning", "models=[zero_motion]", "robots=[flying_gripper]", "episodes=3",
            "max_replans=1", "cameras.width=160", "cameras.height=120", *FAST]
    real_run_episode, seeds = benchmark.run_episode, []

    def run_episode(env, planner, seed, *rest, **options):
        seeds.append(seed)
        if seed == 1002 and len(seeds) == 3:
            raise KeyboardInterrupt
        return real_run_episode(env, planner, seed, *rest, **options)

    monkeypatch.setattr(benchmark, "run_episode", run_episode)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        main([*args, f"out={out}"])
    (partial,) = json.loads(out.read_text())["rows"]
    assert partial["episodes"] == 2 and [r["seed"] for r in partial["episode_results"]] == [1000, 1001]
    assert main([*args, f"out={out}", "resume=true"]) == 0
    assert seeds == [1000, 1001, 1002, 1002]  # the saved episodes were not run again
    (resumed,) = json.loads(out.read_text())["rows"]
    assert main([*args, f"out={tmp_path / 'whole.json'}"]) == 0
    (whole,) = json.loads((tmp_path / "whole.json").read_text())["rows"]
    assert resumed["episodes"] == 3 and [r["seed"] for r in resumed["episode_results"]] == [1000, 1001, 1002]
    for key in ("success_rate", "episode_success", "episode_final_error_m", "replans_mean", "messages"):
        assert resumed[key] == whole[key], key


def test_kept_episodes_stop_at_the_first_out_of_sequence_seed():
    from pointworld.planning.benchmark import BenchmarkConfig, _kept_episodes

    config = BenchmarkConfig(episodes=3, seed=10)
    row = {"episode_results": [{"seed": 10}, {"seed": 11}, {"seed": 13}]}
    assert [r["seed"] for r in _kept_episodes(row, config)] == [10, 11]
    assert _kept_episodes({"episodes": 2}, config) == []  # a row without per-episode records: run it all
    assert _kept_episodes(None, config) == []


def test_segment_follow_model_takes_the_checkpoints_prior_settings():
    from pointworld.model.segment_prior import SegmentFollow, SegmentFollowConfig
    from pointworld.planning.benchmark import benchmark_predictor
    from tests.micro import micro_world_model

    model = micro_world_model(horizon=2)
    model.config.segment_prior = SegmentFollowConfig(link_radius_m=0.05)
    got = benchmark_predictor("segment_follow", None, model)
    assert isinstance(got, SegmentFollow) and got.config.link_radius_m == 0.05
    assert benchmark_predictor("segment_follow", None, None).config == SegmentFollowConfig()  # no checkpoint: defaults


def test_push_plans_hold_the_gripper_and_grasp_tasks_command_it(monkeypatch):
    """task_planner: a task outside gripper_tasks plans without gripper commands; the others keep them."""
    from pointworld.planning.benchmark import BenchmarkConfig, task_planner
    from pointworld.planning.planner import PlannerConfig

    planner = PlannerConfig()
    assert planner.action.gripper
    push = task_planner(planner, "push", ("drawer", "cloth"))
    assert not push.action.gripper and push.optimizer == planner.optimizer and push.costs == planner.costs
    assert task_planner(planner, "drawer", ("drawer", "cloth")) is planner
    assert task_planner(planner, "push", ("push",)) is planner
    assert BenchmarkConfig(gripper_tasks=["drawer"]).gripper_tasks == ("drawer",)
    with pytest.raises(ValueError, match="gripper_tasks"):
        BenchmarkConfig(gripper_tasks=("stack",))
    with pytest.raises(ValueError, match="max_lookbacks"):
        BenchmarkConfig(max_lookbacks=-1)

    import pointworld.planning.benchmark as benchmark
    seen = []

    class Recorder(benchmark.MPCPlanner):
        def __init__(self, robot, predictor, config, horizon):
            seen.append(config.action.gripper)
            super().__init__(robot, predictor, config, horizon)

    monkeypatch.setattr(benchmark, "MPCPlanner", Recorder)
    config = BenchmarkConfig(models=("zero_motion",), robots=("flying_gripper",), episodes=1, max_replans=1)
    benchmark.run_cell(config, "push", "flying_gripper", "zero_motion", None)
    assert seen == [False]
