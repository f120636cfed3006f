"""The ``pointworld`` command: subcommands configured with Hydra (``key=value`` overrides).

``pointworld --help`` lists the subcommands and their config groups; ``pointworld SUB --help`` prints
the subcommand's composed config and the options of each group; ``--cfg`` prints the config a run
would use without running it; ``--debug`` shows the full traceback of an error. This module and
:mod:`pointworld.cli_commands` form the CLI layer, the only code that imports Hydra.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pointworld import __version__
from pointworld.errors import PointworldError
from pointworld.heap import retain_freed_memory

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class Subcommand:
    """A CLI subcommand: the function running it and its primary config (``configs/<config>.yaml``)."""

    summary: str
    run: Callable[[DictConfig], int]
    config: str
    positional: str | None = None  # config key filled by one bare argument (``inspect PATH``)


def _run_capture(cfg: DictConfig) -> int:
    from pointworld.cli_commands import run_capture

    return run_capture(cfg)


def _run_calibrate(cfg: DictConfig) -> int:
    from pointworld.cli_commands import run_calibrate

    return run_calibrate(cfg)


def _run_inspect(cfg: DictConfig) -> int:
    from pointworld.cli_data import run_inspect

    return run_inspect(cfg)


def _run_generate(cfg: DictConfig) -> int:
    from pointworld.cli_generate import run_generate

    return run_generate(cfg)


def _run_train(cfg: DictConfig) -> int:
    from pointworld.cli_train import run_train

    return run_train(cfg)


def _run_eval(cfg: DictConfig) -> int:
    from pointworld.cli_train import run_eval

    return run_eval(cfg)


def _run_demo(cfg: DictConfig) -> int:
    from pointworld.cli_demo import run_demo

    return run_demo(cfg)


def _run_plan(cfg: DictConfig) -> int:
    from pointworld.cli_plan import run_plan

    return run_plan(cfg)


def _run_benchmark_planning(cfg: DictConfig) -> int:
    from pointworld.cli_plan import run_benchmark_planning

    return run_benchmark_planning(cfg)


def _run_render(cfg: DictConfig) -> int:
    from pointworld.cli_render import run_render

    return run_render(cfg)


def _run_view(cfg: DictConfig) -> int:
    from pointworld.cli_view import run_view

    return run_view(cfg)


def _run_robot_info(cfg: DictConfig) -> int:
    from pointworld.cli_robot import run_robot_info

    return run_robot_info(cfg)


SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": Subcommand("plan and execute a simulated push with the bundled world model; write what it saw",
                       _run_demo, "demo"),
    "capture": Subcommand("capture RGB-D views and write the fused, cropped, voxelized cloud (.ply)",
                          _run_capture, "capture"),
    "calibrate": Subcommand("estimate camera extrinsics from a ChArUco board; write a calibration file",
                            _run_calibrate, "calibrate"),
    "robot-info": Subcommand("load a URDF; print its joints, limits, links and sampled surface points",
                             _run_robot_info, "robot_info"),
    "inspect": Subcommand("print the contents and statistics of a dataset directory or episode file",
                          _run_inspect, "inspect", positional="path"),
    "generate": Subcommand("simulate exploration episodes with ground-truth point flows into a dataset",
                           _run_generate, "generate"),
    "plan": Subcommand("plan a joint trajectory toward a goal from one scene capture with a world model",
                       _run_plan, "plan"),
    "benchmark-planning": Subcommand("closed-loop planning benchmark in simulation (learned / oracle / "
                                     "zero-motion models)", _run_benchmark_planning, "benchmark_planning"),
    "train": Subcommand("train a world model on dataset directories (single process or under torchrun)",
                        _run_train, "train"),
    "eval": Subcommand("evaluate a checkpoint and the baselines on a dataset split; table + JSON",
                       _run_eval, "eval"),
    "render": Subcommand("write PNG figures (cloud + flow arrows, predicted vs ground truth, planning cost, "
                         "error over horizon) of an eval JSON, plan record, dataset clip or capture",
                         _run_render, "render", positional="input"),
    "view": Subcommand("open a scene capture, dataset clip (PATH:INDEX) or plan record in the web 3D viewer",
                       _run_view, "view", positional="input"),
}


def config_groups(name: str) -> dict[str, list[str]]:
    """Config groups of subcommand ``name`` and the options each offers, from ``configs/``."""
    primary = OmegaConf.load(CONFIG_DIR / f"{SUBCOMMANDS[name].config}.yaml")
    groups: dict[str, list[str]] = {}
    for entry in primary.get("defaults", []):
        if isinstance(entry, str) or entry is None:
            continue
        for key in entry:
            group = str(key).split("@")[0].lstrip("/")  # "optimizer@planner.optimizer" -> group "optimizer"
            groups[str(key)] = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    return groups


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the Hydra config of subcommand ``name`` with ``key=value`` overrides."""
    from hydra import compose, initialize_config_dir

    config = SUBCOMMANDS[name].config
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=config):
        return compose(config_name=config, overrides=list(overrides))


def _usage() -> str:
    lines = [f"pointworld {__version__}: 3D point-cloud world models for robotic manipulation", "",
             "usage: pointworld SUBCOMMAND [key=value ...] [--cfg] [--debug] [--help]", "", "subcommands:"]
    for name, sub in SUBCOMMANDS.items():
        lines.append(f"  {name:<12}{sub.summary}")
        for group, options in config_groups(name).items():
            lines.append(f"  {'':<12}  {group}: {' | '.join(options)}")
    lines += ["", "examples:", "  pointworld capture output_dir=out fusion.voxel_size_m=0.01",
              "  pointworld capture source=realsense source.serials=[123456789]",
              "  pointworld calibrate source=realsense board_pose.position_m=[0.4,0,0]",
              "  pointworld robot-info urdf=path/to/robot.urdf links='*finger*'",
              "  pointworld inspect datasets/franka",
              "  pointworld capture --help     (the config, its groups and their options)"]
    return "\n".join(lines)


def _subcommand_help(name: str) -> str:
    lines = [f"usage: pointworld {name} [key=value ...] [--cfg] [--debug]", "", SUBCOMMANDS[name].summary, "",
             "config groups (choose with GROUP=OPTION):"]
    for group, options in config_groups(name).items():
        lines.append(f"  {group}: {' | '.join(options)}")
    lines += ["", "config (override any key with key=value):", "",
              OmegaConf.to_yaml(compose_config(name))]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pointworld`` console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"pointworld: unknown subcommand {name!r}; expected one of {sorted(SUBCOMMANDS)}\n",
              file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(_subcommand_help(name))
        return 0
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in rest if a not in ("--cfg", "--debug")]
    positional = SUBCOMMANDS[name].positional
    if positional is not None:  # `pointworld inspect PATH` == `pointworld inspect path=PATH`
        overrides = [a if "=" in a else f"{positional}={a}" for a in overrides]
    try:
        cfg = compose_config(name, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"pointworld {name}: bad configuration: {exc}", file=sys.stderr)
        return 2
    if "--cfg" in rest:
        print(OmegaConf.to_yaml(cfg))
        return 0
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        print(f"pointworld {name}: missing required setting(s) {missing}; give them as key=value",
              file=sys.stderr)
        return 2
    retain_freed_memory()  # large CPU tensors reuse freed heap memory (pointworld.heap)
    try:
        return SUBCOMMANDS[name].run(cfg)
    except Exception as exc:  # report user-facing errors in one line; re-raise programming errors
        cause = _user_error(exc)
        if cause is None or "--debug" in rest:
            raise
        print(f"pointworld {name}: error: {cause}", file=sys.stderr)
        return 1


#: Errors a user can fix (bad input, missing hardware or files), reported in one line (``--debug``
#: shows their traceback); anything else is a bug and keeps its traceback.
USER_ERRORS = (PointworldError, ValueError, TypeError, KeyError, OSError, ImportError, EOFError)


def _user_error(exc: BaseException) -> BaseException | None:
    """The user-facing error behind ``exc``, looking through Hydra's instantiation wrappers."""
    from hydra.errors import HydraException

    while isinstance(exc, HydraException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc if isinstance(exc, USER_ERRORS) else None


if __name__ == "__main__":
    sys.exit(main())
