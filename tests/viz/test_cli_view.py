"""`pointworld view` (run_view): prints its URL, serves, stops on duration_s and on SIGTERM with exit 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pointworld.cli import CONFIG_DIR
from pointworld.cli_view import run_view
from pointworld.planning.plan_record import save_plan_record
from tests.planning.test_plan_record import random_record

pytest.importorskip("viser")
URL = re.compile(r"viewer running at (http://127\.0\.0\.1:\d+)")


def view_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="view"):
        return compose(config_name="view", overrides=list(overrides))


def test_run_view_serves_for_duration_and_exits_zero(tmp_path, capsys):
    plan = save_plan_record(tmp_path / "plan.npz", random_record())
    cfg = view_config(f"input={plan}", "port=0", "duration_s=0.3")
    assert cfg.fusion.voxel_size_m > 0  # the fusion group is composed for captures
    assert run_view(cfg) == 0
    out = capsys.readouterr().out
    assert URL.search(out) and "20 points, 3 steps" in out and out.rstrip().endswith("viewer stopped")
    with pytest.raises(ValueError, match="duration_s"):
        run_view(view_config(f"input={plan}", "port=0", "duration_s=-1"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_view(view_config(f"input={tmp_path / 'none.npz'}", "port=0", "duration_s=0"))


def test_sigterm_stops_the_server_cleanly(tmp_path):
    plan = save_plan_record(tmp_path / "plan.npz", random_record())
    code = ("import sys; from tests.viz.test_cli_view import view_config; from pointworld.cli_view import run_view; "
            f"sys.exit(run_view(view_config('input={plan}', 'port=0')))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        lines, match, deadline = [], None, time.monotonic() + 60
        while match is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = URL.search(line)
        assert match, "".join(lines)
        with urllib.request.urlopen(match[1], timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "viewer stopped" in rest
    with pytest.raises(OSError):
        urllib.request.urlopen(match[1], timeout=5)
