"""Closed-loop planning benchmark in simulation: tasks x robots x dynamics models behind one planner.

For every (task, robot, model) cell, ``episodes`` seeded episodes are run with :func:`run_episode`: reset to
the task of the seed, observe, plan, execute ``execute_steps`` steps, re-observe, until success or
``max_replans``. These dynamics models sit behind the same planner:

- ``learned``: the world model (a checkpoint);
- ``oracle``: the MuJoCo simulator itself (:class:`~pointworld.planning.oracle.SimOracle`), the upper bound;
- ``zero_motion``: predicts that nothing moves (:class:`~pointworld.model.baselines.ZeroMotion`), the lower
  bound;
- ``segment_follow``: the learned model's non-learned prior alone
  (:class:`~pointworld.model.segment_prior.SegmentFollow`, with the checkpoint's settings when a learned model
  is loaded, else the defaults): what the network adds to it.

Held-out objects: by default the push scenes contain only ``cross`` objects, a shape that never appears in
the training split of our datasets (``generate``'s ``held_out_shapes``). Episode seeds start at ``seed``
(1000 by default), away from the seeds that generated training data.

The planner commands the gripper only on tasks in ``gripper_tasks`` (drawer and cloth by default); on a
push the gripper holds its opening (:func:`task_planner`), the same for every model.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from pointworld.geometry.checks import require_int
from pointworld.model.baselines import ZeroMotion
from pointworld.model.segment_prior import SegmentFollow
from pointworld.model.world_model import WorldModel
from pointworld.planning.closed_loop import EpisodeResult, run_episode
from pointworld.planning.observation import ObservationConfig
from pointworld.planning.oracle import SimOracle
from pointworld.planning.planner import MPCPlanner, PlannerConfig
from pointworld.sim.config import SceneConfig
from pointworld.sim.task import TaskConfig, TaskEnv

MODELS: tuple[str, ...] = ("learned", "oracle", "zero_motion", "segment_follow")
#: Scene settings per task kind (held-out cross objects for push; drawer / cloth scenes for the others).
TASK_SCENES: dict[str, dict[str, Any]] = {
    "push": {"shapes": ("cross",), "n_objects": (1, 3), "object_size_m": (0.06, 0.12), "include_drawer": False},
    "drawer": {"n_objects": (0, 2), "include_drawer": True},
    "cloth": {"n_objects": (0, 1), "include_drawer": False, "include_cloth": True},
}


@dataclass
class BenchmarkConfig:
    """What to run.

    Attributes:
        tasks: task kinds (push, drawer, cloth).
        robots: shipped robot names (include one the model never saw, e.g. ur5e_gripper).
        models: dynamics models from :data:`MODELS`.
        episodes: seeded episodes per cell (seeds ``seed`` .. ``seed + episodes - 1``).
        seed: first episode seed.
        max_replans: plans per episode before giving up.
        max_lookbacks: times in a row the robot may back off along its executed path to find a goal
            object it hid from the cameras (:func:`run_episode`; 0: a lost goal ends the episode).
        horizon: T of every plan when no learned model sets it (the learned model's own T otherwise).
        planner: the planner (optimizer, costs, action space, execute_steps).
        observation: fusion of the simulated camera views into the planner's scene; None = default
            settings with the crop box over each scene's table (:func:`table_observation`).
        task: task settings (tolerances, goal ranges, cameras); ``kind`` is set per cell.
        gripper_tasks: tasks on which the planner also commands the gripper (when
            ``planner.action.gripper``); on the others the gripper holds its opening
            (:func:`task_planner`).
    """

    tasks: tuple[str, ...] = ("push",)
    robots: tuple[str, ...] = ("franka_panda", "flying_gripper", "ur5e_gripper")
    models: tuple[str, ...] = ("learned", "oracle", "zero_motion")
    episodes: int = 20
    seed: int = 1000
    max_replans: int = 20
    max_lookbacks: int = 2
    horizon: int = 10
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    observation: ObservationConfig | None = None
    task: TaskConfig = field(default_factory=TaskConfig)
    gripper_tasks: tuple[str, ...] = ("drawer", "cloth")

    def __post_init__(self) -> None:
        self.gripper_tasks = check_gripper_tasks(self.gripper_tasks)
        for name, allowed in (("tasks", tuple(TASK_SCENES)), ("models", MODELS)):
            values = tuple(getattr(self, name))
            bad = [v for v in values if v not in allowed]
            if not values or bad:
                raise ValueError(f"{name}: expected a non-empty list from {allowed}, got {list(values)}")
            setattr(self, name, values)
        self.robots = tuple(self.robots)
        if not self.robots:
            raise ValueError("robots: expected at least one robot name, got none")
        require_int("episodes", self.episodes, 1)
        require_int("seed", self.seed, 0)
        require_int("max_replans", self.max_replans, 1)
        require_int("max_lookbacks", self.max_lookbacks, 0)
        require_int("horizon", self.horizon, 1)


def check_gripper_tasks(gripper_tasks: Any) -> tuple[str, ...]:
    """``gripper_tasks`` as a tuple of task kinds from :data:`TASK_SCENES` (may be empty)."""
    values = tuple(gripper_tasks)
    bad = [v for v in values if v not in TASK_SCENES]
    if bad:
        raise ValueError(f"gripper_tasks: expected task kinds from {tuple(TASK_SCENES)}, got {list(values)}")
    return values


def task_planner(planner: PlannerConfig, task: str, gripper_tasks: tuple[str, ...]) -> PlannerConfig:
    """The planner settings for one task: ``planner`` unchanged for a task in ``gripper_tasks``, else with
    ``action.gripper`` off (the gripper holds its opening). A push needs no grasp, and a free gripper
    lets the planner exploit a model's grasp rule (a part-closed gripper "carrying" the object) that the
    simulator does not reproduce."""
    if task in gripper_tasks or not planner.action.gripper:
        return planner
    return dataclasses.replace(planner, action=dataclasses.replace(planner.action, gripper=False))


def benchmark_predictor(model_name: str, env: TaskEnv, world_model: WorldModel | None) -> Any:
    """The dynamics model named ``model_name`` in the benchmark: ``oracle`` (a :class:`SimOracle` of ``env``),
    ``zero_motion``, ``segment_follow`` (the world model's prior settings, or the defaults without one) or
    ``learned`` (``world_model`` itself; ValueError when it is None)."""
    if model_name == "oracle":
        return SimOracle(env)
    if model_name == "zero_motion":
        return ZeroMotion()
    if model_name == "segment_follow":
        return SegmentFollow(None if world_model is None else world_model.config.segment_prior)
    if world_model is None:
        raise ValueError("world_model: the 'learned' model needs a checkpoint, got None")
    return world_model


def episode_record(seed: int, result: EpisodeResult) -> dict[str, Any]:
    """The JSON-able summary of one episode (its per-step outcomes left out): seed, success, final position
    error (m) and yaw error (rad, or None), plans made, look-backs made, wall time of each plan (s) and the
    end message."""
    return {"seed": seed, "success": bool(result.success), "final_error_m": float(result.final_error_m),
            "yaw_error_rad": result.yaw_error_rad, "replans": int(result.replans),
            "lookbacks": int(result.lookbacks),
            "plan_times_s": [float(t) for t in result.plan_times_s], "message": result.message}


def _kept_episodes(row: dict[str, Any] | None, config: BenchmarkConfig) -> list[dict[str, Any]]:
    """The episode records of an interrupted cell's ``row`` that can be kept: those of seeds ``config.seed``,
    ``config.seed + 1``, ... in order (none when the row has no per-episode records)."""
    kept = []
    for i, record in enumerate((row or {}).get("episode_results", [])[:config.episodes]):
        if not isinstance(record, dict) or record.get("seed") != config.seed + i:
            break
        kept.append(record)
    return kept


def run_cell(config: BenchmarkConfig, task: str, robot: str, model_name: str, world_model: WorldModel | None,
             on_episode: Callable[[list[dict[str, Any]]], None] | None = None,
             done: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Run the episodes of one (task, robot, model) cell; returns its summary row.

    Args:
        on_episode: called after every episode with the :func:`episode_record` of all episodes so far.
        done: records of the cell's first episodes (seeds ``config.seed`` on) from an interrupted run: kept,
            and the cell goes on from the next seed.
    """
    scene = SceneConfig(robot=robot, **TASK_SCENES[task])
    env = TaskEnv(scene, dataclasses.replace(config.task, kind=task))
    horizon = world_model.config.horizon if world_model is not None else config.horizon
    planner = MPCPlanner(env.robot, benchmark_predictor(model_name, env, world_model),
                         task_planner(config.planner, task, config.gripper_tasks), horizon=horizon)
    records = list(done)
    for seed in range(config.seed + len(records), config.seed + config.episodes):
        records.append(episode_record(seed, run_episode(env, planner, seed, config.max_replans, config.observation,
                                                         max_lookbacks=config.max_lookbacks)))
        if on_episode is not None:
            on_episode(list(records))
    return summarize(task, robot, model_name, records)


def summarize(task: str, robot: str, model_name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from the :func:`episode_record` of its episodes (at least one): success rate, final
    errors, planning time per replanning step, and the records themselves (``episode_results``)."""
    times = [t for r in records for t in r["plan_times_s"]]
    errors = [r["final_error_m"] for r in records]
    return {"task": task, "robot": robot, "model": model_name, "episodes": len(records),
            "success_rate": sum(r["success"] for r in records) / len(records),
            "final_error_m_mean": statistics.fmean(errors), "final_error_m_median": statistics.median(errors),
            "plan_time_s_mean": statistics.fmean(times) if times else float("nan"),
            "replans_mean": statistics.fmean(r["replans"] for r in records),
            "messages": sorted({r["message"] for r in records}),
            "episode_success": [r["success"] for r in records],
            "episode_final_error_m": errors,
            "episode_results": records}


def _episode_progress(bar: tqdm, rows: list[dict[str, Any]], cell: tuple[str, str, str],
                      on_row: Callable[[list[dict[str, Any]]], None] | None
                      ) -> Callable[[list[dict[str, Any]]], None]:
    """The ``on_episode`` of a cell's :func:`run_cell`: advances ``bar`` and hands ``on_row`` the finished
    ``rows`` plus the cell's partial row."""

    def finished(records: list[dict[str, Any]]) -> None:
        bar.update(1)
        if on_row is not None:
            on_row([*rows, summarize(*cell, records)])

    return finished


def run_benchmark(config: BenchmarkConfig, world_model: WorldModel | None, progress: bool = True,
                  done: Sequence[dict[str, Any]] = (),
                  on_row: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Every (task, robot, model) cell of ``config``; returns the rows of :func:`summarize`.

    Args:
        done: rows of an earlier, interrupted run of the same config: finished cells are kept, not re-run,
            and a cell interrupted part-way goes on after its recorded episodes.
        on_row: called with all rows so far (the cell in progress as a partial row, with the episodes it has
            finished) after every episode, e.g. to save them, so an interruption loses at most the episode in
            progress.
    """
    cells = [(t, r, m) for t in config.tasks for r in config.robots for m in config.models]
    previous = {(row["task"], row["robot"], row["model"]): row for row in done}
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(cells) * config.episodes, desc="episodes", disable=not progress) as bar:
        for task, robot, model_name in cells:
            row = previous.get((task, robot, model_name))
            if row is not None and row.get("episodes") == config.episodes:
                bar.update(config.episodes)
            else:
                kept = _kept_episodes(row, config)
                bar.update(len(kept))
                bar.set_postfix_str(f"{task}/{robot}/{model_name}")
                on_episode = _episode_progress(bar, rows, (task, robot, model_name), on_row)
                row = run_cell(config, task, robot, model_name, world_model, on_episode, kept)
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Aligned text table of benchmark rows (success %, final error cm, plan time s)."""
    head = f"{'task':7s} {'robot':15s} {'model':12s} {'eps':>4s} {'success':>8s} {'err_cm':>7s} " \
           f"{'med_cm':>7s} {'plan_s':>7s} {'replans':>7s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['task']:7s} {r['robot']:15s} {r['model']:12s} {r['episodes']:4d} "
                     f"{100 * r['success_rate']:7.0f}% {100 * r['final_error_m_mean']:7.2f} "
                     f"{100 * r['final_error_m_median']:7.2f} {r['plan_time_s_mean']:7.2f} {r['replans_mean']:7.1f}")
    return "\n".join(lines)
