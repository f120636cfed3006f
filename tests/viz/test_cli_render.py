"""``pointworld render`` (run_render) on tiny inputs of every kind, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from pointworld.cli_render import detect_kind, run_render
from pointworld.planning.plan_record import PlanRecord, save_plan_record
from tests.micro import micro_checkpoint as micro_checkpoint_at
from tests.micro import tiny_dataset as tiny_dataset_in

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CAPTURE = Path(__file__).resolve().parents[2] / "pointworld" / "assets" / "demo_capture"
SMALL = ["view.width_px=160", "view.height_px=120", "curves.width_px=240", "curves.height_px=160"]


def render_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name="render"):
        return compose(config_name="render", overrides=list(overrides))


def check_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.size == size, (path, im.size)
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 5 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, f"{path} looks blank"
    return pixels


def printed_paths(text: str) -> list[Path]:
    return [Path(line) for line in text.splitlines() if line.endswith(".png")]


def test_eval_json_gives_the_error_over_horizon_plot(tmp_path, capsys):
    source = Path(__file__).resolve().parents[2] / "pointworld" / "checkpoints" / "tiny_eval.json"
    assert run_render(render_config(f"input={source}", f"out={tmp_path}", *SMALL)) == 0
    paths = printed_paths(capsys.readouterr().out)
    assert paths == [tmp_path / "tiny_eval_error_over_horizon.png"]
    check_png(paths[0], (240, 160))


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    g = torch.Generator().manual_seed(0)
    n, t = 300, 4
    points = torch.rand(n, 3, generator=g) * 0.3 + torch.tensor([0.5, 0.0, 0.0])
    disp = torch.zeros(t, n, 3)
    disp[:, :40, 0] = torch.linspace(0.01, 0.05, t)[:, None]
    record = PlanRecord(points=points, colors=torch.rand(n, 3, generator=g), displacement=disp,
                        log_var=torch.randn(t, n, generator=g) - 8, robot_points=torch.rand(t + 1, 16, 3),
                        goal_indices=torch.tensor([0, 1]), goal_targets=points[:2] + 0.05,
                        candidates=torch.stack([disp, 0.5 * disp]), candidate_costs=torch.tensor([1.0, 2.0]),
                        cost_history=torch.tensor([3.0, 2.0, 1.0]), q=torch.zeros(t + 1, 2),
                        gripper_open=torch.ones(t + 1), joint_names=("a", "b"), robot_name="bot", dt_s=0.1)
    return save_plan_record(tmp_path_factory.mktemp("plan") / "plan_record.npz", record)


def test_plan_record_gives_flow_uncertainty_cost_and_candidates(plan_file, tmp_path, capsys):
    assert run_render(render_config(f"input={plan_file}", f"out={tmp_path}", "step=1", *SMALL)) == 0
    names = [p.name for p in printed_paths(capsys.readouterr().out)]
    assert names == ["plan_flow.png", "plan_uncertainty.png", "plan_cost.png", "plan_candidates.png"]
    check_png(tmp_path / "plan_flow.png", (160, 120))
    check_png(tmp_path / "plan_uncertainty.png", (160, 120))
    check_png(tmp_path / "plan_cost.png", (240, 160))
    check_png(tmp_path / "plan_candidates.png", (2 * 80, 60))


def test_capture_directory_gives_the_fused_cloud(tmp_path, capsys):
    assert run_render(render_config(f"input={CAPTURE}", f"out={tmp_path}", *SMALL)) == 0
    assert printed_paths(capsys.readouterr().out) == [tmp_path / "capture_cloud.png"]
    pixels = check_png(tmp_path / "capture_cloud.png", (160, 120))
    assert (pixels.astype(int).sum(-1) < 600).mean() > 0.05  # a good part of the image is cloud, not white


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return tiny_dataset_in(tmp_path_factory.mktemp("data") / "tiny", episodes=1, horizon=4)


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory) -> Path:
    return micro_checkpoint_at(tmp_path_factory.mktemp("ckpt") / "micro.pt", horizon=4)


def test_dataset_clip_gives_predicted_vs_ground_truth(tiny_dataset, micro_checkpoint, tmp_path, capsys):
    assert detect_kind(f"{tiny_dataset}:1") == "clip"
    cfg = render_config(f"input={tiny_dataset}:1", f"checkpoint={micro_checkpoint}", f"out={tmp_path}", *SMALL)
    assert run_render(cfg) == 0
    assert printed_paths(capsys.readouterr().out) == [tmp_path / "clip_flow.png"]
    check_png(tmp_path / "clip_flow.png", (320, 120))
    episode = next(tiny_dataset.glob("*.h5"))
    gt_only = tmp_path / "gt"
    assert run_render(render_config(f"input={episode}:0", "checkpoint=null", f"out={gt_only}", *SMALL)) == 0
    check_png(gt_only / "clip_flow.png", (160, 120))


def test_kind_detection_and_bad_inputs(tmp_path, plan_file, tiny_dataset):
    assert detect_kind(str(plan_file)) == "plan" and detect_kind(str(CAPTURE)) == "capture"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_kind(str(tmp_path / "nothing.npz"))
    with pytest.raises(FileNotFoundError, match="no dataset directory"):
        detect_kind(str(tmp_path / "nothing") + ":3")
    with pytest.raises(ValueError, match="add ':INDEX'"):
        detect_kind(str(tiny_dataset))
    with pytest.raises(ValueError, match="kind: expected 'auto' or one of"):
        run_render(render_config(f"input={plan_file}", "kind=movie", f"out={tmp_path}"))
    with pytest.raises(ValueError, match="step: expected an int in"):
        run_render(render_config(f"input={plan_file}", "step=4", f"out={tmp_path}", *SMALL))
    no_curves = tmp_path / "old_eval.json"
    no_curves.write_text(json.dumps({"predictors": {"model": {"overall": {"l2_moved": 0.1}}}}))
    with pytest.raises(ValueError, match="old_eval.json.*epe_moved_per_step"):
        run_render(render_config(f"input={no_curves}", f"out={tmp_path}"))
    with pytest.raises(ValueError, match="width_px"):
        run_render(render_config(f"input={plan_file}", "view.width_px=4", f"out={tmp_path}"))
    not_a_record = tmp_path / "other.npz"
    np.savez(not_a_record, x=np.zeros(3))
    with pytest.raises(ValueError, match="format"):
        run_render(render_config(f"input={not_a_record}", f"out={tmp_path}"))
    assert not list(tmp_path.glob("*.png"))


def compose_named(config: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name=config):
        return compose(config_name=config, overrides=list(overrides))


def test_eval_writes_the_error_over_horizon_plot_next_to_its_json(tiny_dataset, micro_checkpoint, tmp_path):
    from pointworld.cli_train import run_eval

    out = tmp_path / "micro_eval.json"
    cfg = compose_named("eval", f"checkpoint={micro_checkpoint}", f"data.sources=[{tiny_dataset}]", "data.split=all",
                        "data.max_points=256", "data.robot_points=32", "batch_size=2", "max_batches=1",
                        "baselines=false", "device=cpu", f"out={out}")
    assert run_eval(cfg) == 0
    check_png(tmp_path / "micro_eval_error_over_horizon.png", (800, 500))


def test_plan_writes_its_record_and_figures(micro_checkpoint, tmp_path):
    from pointworld.cli_plan import run_plan
    from pointworld.planning.plan_record import load_plan_record

    out = tmp_path / "plan"
    cfg = compose_named("plan", "goal=pointworld/assets/goals/push_red_box.json", f"checkpoint={micro_checkpoint}",
                        "planner.optimizer.num_samples=4", "planner.optimizer.iterations=2", "device=cpu",
                        "max_points=1024", f"output_dir={out}")
    assert run_plan(cfg) == 0
    record = load_plan_record(out / "plan_record.npz")
    assert record.horizon == 4 and record.robot_name == "franka_panda" and record.cost_history.numel() == 2
    for name in ("plan_flow.png", "plan_uncertainty.png"):
        check_png(out / name, (800, 600))
    check_png(out / "plan_cost.png", (800, 500))
