"""Interactive web viewer of a :class:`~pointworld.viz.view_data.ViewData` (viser, the ``viz`` extra).

:class:`Viewer` starts a viser server on ``host:port`` (port 0 = a free port) in viser's own threads and
returns at once; :attr:`Viewer.url` is the page to open and :meth:`Viewer.close` stops the server.
Scene nodes (only those with data): ``/scene/cloud`` (the cloud, moved along the chosen flow at the
current step), ``/robot/points``, ``/flow/predicted`` and ``/flow/ground_truth`` (segments t = 0 -> step),
``/goal/points``, ``/goal/targets``, ``/goal/links``, ``/candidates/<i>`` (moving points of the planner's
top candidates at the current step, faint). GUI: a step slider 0..T with a play toggle, the flow that
moves the cloud, the color mode (``rgb``, ``uncertainty`` = predicted std, ``motion`` = displacement norm)
and visibility toggles. :meth:`set_step`, :meth:`set_flow` and :meth:`set_color_mode` do the same from code.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from pointworld.geometry.checks import require_int, require_positive
from pointworld.viz.flow_cloud import heat_colors
from pointworld.viz.view_data import ViewData
from pointworld.viz.view_frames import (
    displacement_at,
    flow_segments,
    std_scale_m,
    to_rgb8,
    uncertainty_colors,
)

_FLOW_COLORS = {"predicted": (255, 140, 0), "ground truth": (0, 190, 255)}
_CANDIDATE_COLOR = np.array([170, 140, 255], dtype=np.float32)
_MIN_MOTION_M = 0.002


def _import_viser() -> Any:
    try:
        import viser
    except ImportError as exc:
        raise ImportError("the interactive viewer needs viser: pip install pointworld[viz]") from exc
    return viser


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())


class Viewer:
    """A running viewer of ``data`` (see the module docstring).

    Args:
        data: what to show. host: interface to listen on (default local only). port: TCP port, 0 = any free one.
        point_size_m: rendered size of scene points, m. max_flow_lines: cap on drawn flow segments per flow.
        play_period_s: time between steps while the play toggle is on, s.
    """

    def __init__(self, data: ViewData, host: str = "127.0.0.1", port: int = 0, point_size_m: float = 0.008,
                 max_flow_lines: int = 1500, play_period_s: float = 0.4) -> None:
        if not isinstance(data, ViewData):
            raise TypeError(f"data: expected a ViewData, got {type(data).__name__}")
        require_int("port", port, 0)
        self.point_size_m = require_positive("point_size_m", point_size_m)
        self.max_flow_lines = require_int("max_flow_lines", max_flow_lines, 1)
        self.play_period_s = require_positive("play_period_s", play_period_s)
        viser = _import_viser()
        self.data = data
        self.step, self.color_mode = data.horizon, "rgb"
        self.flows = {k: v for k, v in (("predicted", (data.predicted, None)),
                                         ("ground truth", (data.ground_truth, data.valid))) if v[0] is not None}
        self.flow = next(iter(self.flows), "none")
        self.std_max_m = None if data.log_var is None else std_scale_m(data.log_var)
        self._lock, self._stop = threading.RLock(), threading.Event()
        self._nodes: dict[str, Any] = {}
        self._hidden: set[str] = set()
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        try:
            self.server.scene.set_up_direction("+z")
            self._set_camera()
            self._add_nodes()
            self._gui = self._add_gui()
            self.refresh()
        except BaseException:
            self.server.stop()
            raise
        self._player = threading.Thread(target=self._play_loop, name="pointworld-viewer-play", daemon=True)
        self._player.start()

    # ------------------------------------------------------------------ public
    @property
    def url(self) -> str:
        """The viewer's address, ``http://HOST:PORT``."""
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def node_names(self) -> list[str]:
        """Sorted names of the pointworld scene nodes that exist on the server."""
        return sorted(n for n in self._nodes if self.server.scene.get_handle_by_name(n) is not None)

    def set_step(self, step: int) -> None:
        """Show timeline step 0..T (0 = the observed scene)."""
        step = require_int("step", step, 0)
        if step > self.data.horizon:
            raise ValueError(f"step: expected a step in 0..{self.data.horizon}, got {step}")
        self._apply("step", step, "step")

    def set_flow(self, flow: str) -> None:
        """Move the cloud along ``"predicted"``, ``"ground truth"`` (those present) or ``"none"``."""
        if flow not in (*self.flows, "none"):
            raise ValueError(f"flow: expected one of {[*self.flows, 'none']}, got {flow!r}")
        self._apply("flow", flow, "flow")

    def set_color_mode(self, mode: str) -> None:
        """Color the cloud by ``"rgb"``, ``"uncertainty"`` (when log_var is known) or ``"motion"``."""
        if mode not in self.color_modes:
            raise ValueError(f"mode: expected one of {self.color_modes}, got {mode!r}")
        self._apply("color", mode, "color_mode")

    def _apply(self, control: str, value: object, attribute: str) -> None:
        """Set ``attribute`` and redraw; through the GUI control when there is one, so the page shows it
        (assigning a control's value runs its callback, which comes back here with the same value)."""
        handle = getattr(self, "_gui", {}).get(control)
        if handle is not None and handle.value != value:
            handle.value = value
            return
        setattr(self, attribute, value)
        self.refresh()

    @property
    def color_modes(self) -> list[str]:
        """The color modes this data offers."""
        return ["rgb", *(["uncertainty"] if self.data.log_var is not None else []), "motion"]

    def close(self) -> None:
        """Stop the play thread and the server (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._player.join(timeout=2.0)
        self.server.stop()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ scene
    def _set_camera(self) -> None:
        pts = self.data.points
        center = (pts.amin(0) + pts.amax(0)) / 2
        extent = max(float((pts.amax(0) - pts.amin(0)).max()), 0.1)
        cam = self.server.initial_camera
        cam.look_at = tuple(float(v) for v in center)
        cam.position = tuple(float(v) for v in center + torch.tensor([-0.8, -0.65, 0.7]) * extent)
        cam.up = (0.0, 0.0, 1.0)

    def _add(self, name: str, kind: str, *args: Any, **kwargs: Any) -> None:
        add = getattr(self.server.scene, f"add_{kind}")
        self._nodes[name] = add(name, *args, **kwargs)

    def _add_nodes(self) -> None:
        d, zero = self.data, np.zeros((1, 3), np.float32)
        self._add("/scene/cloud", "point_cloud", _np(d.points), _np(to_rgb8(d.colors)),
                  point_size=self.point_size_m, point_shape="circle", precision="float32")
        if d.robot_points is not None:
            self._add("/robot/points", "point_cloud", _np(d.robot_points[0]), (90, 90, 230),
                      point_size=0.7 * self.point_size_m, point_shape="circle", precision="float32")
        for flow in self.flows:
            self._add(f"/flow/{flow.replace(' ', '_')}", "line_segments", np.zeros((1, 2, 3), np.float32),
                      _FLOW_COLORS[flow], thickness=2.0, thickness_units="screen")
        if d.goal_indices is not None:
            self._add("/goal/points", "point_cloud", zero, (40, 220, 60), point_size=1.6 * self.point_size_m,
                      precision="float32")
            self._add("/goal/targets", "point_cloud", _np(d.goal_targets), (230, 30, 30),
                      point_size=1.6 * self.point_size_m, precision="float32")
            self._add("/goal/links", "line_segments", np.zeros((1, 2, 3), np.float32), (230, 30, 30),
                      thickness=1.0, thickness_units="screen")
        c = 0 if d.candidates is None else d.candidates.shape[0]
        for i in range(c):  # best first, brightest first
            color = tuple(int(v) for v in _CANDIDATE_COLOR * (1.0 - 0.5 * i / max(c - 1, 1)))
            self._add(f"/candidates/{i}", "point_cloud", zero, color, point_size=0.6 * self.point_size_m,
                      precision="float32")

    def refresh(self) -> None:
        """Redraw every node for the current step, flow and color mode."""
        with self._lock:
            d, nodes = self.data, self._nodes
            flow = self.flows.get(self.flow)
            moved = d.points if flow is None else d.points + displacement_at(flow[0], self.step, flow[1])
            nodes["/scene/cloud"].points = _np(moved)
            nodes["/scene/cloud"].colors = _np(to_rgb8(self._cloud_colors()))
            if "/robot/points" in nodes:
                nodes["/robot/points"].points = _np(d.robot_points[self.step])
            for name, (disp, valid) in self.flows.items():
                seg, _ = flow_segments(d.points, displacement_at(disp, self.step, valid), _MIN_MOTION_M,
                                       self.max_flow_lines)
                self._set_segments(f"/flow/{name.replace(' ', '_')}", seg)
            if d.goal_indices is not None:
                nodes["/goal/points"].points = _np(moved[d.goal_indices])
                self._set_segments("/goal/links", torch.stack([moved[d.goal_indices], d.goal_targets], 1))
            self._refresh_candidates()

    def _cloud_colors(self) -> torch.Tensor:
        d = self.data
        if self.color_mode == "uncertainty":
            return uncertainty_colors(d.log_var[max(self.step, 1) - 1], self.std_max_m)
        if self.color_mode == "motion":
            flow = self.flows.get(self.flow)
            if flow is None:
                return heat_colors(torch.zeros(d.points.shape[0]), 1.0)
            peak = max(float(flow[0].norm(dim=-1).max()), 1e-3)
            return heat_colors(displacement_at(flow[0], self.step, flow[1]).norm(dim=-1), peak)
        return d.colors

    def _shown(self, name: str, has_content: bool) -> bool:
        """Set node ``name`` visible when it has content and its group is not hidden; return that."""
        visible = has_content and name.split("/")[1] not in self._hidden
        self._nodes[name].visible = visible
        return visible

    def _set_segments(self, name: str, segments: torch.Tensor) -> None:
        node = self._nodes[name]
        if self._shown(name, segments.shape[0] > 0):
            node.points = _np(segments.float())

    def _refresh_candidates(self) -> None:
        d = self.data
        if d.candidates is None:
            return
        moving = d.candidates.norm(dim=-1).amax(dim=(0, 1)) >= _MIN_MOTION_M  # (N,) moves in any candidate
        for i in range(d.candidates.shape[0]):
            node = self._nodes[f"/candidates/{i}"]
            if self._shown(f"/candidates/{i}", bool(moving.any()) and self.step > 0):
                node.points = _np((d.points + displacement_at(d.candidates[i], self.step))[moving])

    # ------------------------------------------------------------------ GUI
    def _add_gui(self) -> dict[str, Any]:
        gui, d = self.server.gui, self.data
        if d.title:
            gui.add_markdown(f"**pointworld** · {d.title}")
        handles: dict[str, Any] = {}
        if d.horizon > 0:
            handles["step"] = gui.add_slider("step", 0, d.horizon, 1, self.step)
            handles["step"].on_update(lambda _: self.set_step(int(handles["step"].value)))
            handles["play"] = gui.add_checkbox("play", False)
        if self.flows:
            handles["flow"] = gui.add_dropdown("cloud moves along", [*self.flows, "none"], initial_value=self.flow)
            handles["flow"].on_update(lambda _: self.set_flow(str(handles["flow"].value)))
        handles["color"] = gui.add_dropdown("color", self.color_modes, initial_value=self.color_mode)
        handles["color"].on_update(lambda _: self.set_color_mode(str(handles["color"].value)))
        for group in sorted({n.split("/")[1] for n in self._nodes} - {"scene"}):
            box = gui.add_checkbox(f"show {group}", True)
            box.on_update(lambda _, g=group, b=box: self._show_group(g, bool(b.value)))
        return handles

    def _show_group(self, group: str, visible: bool) -> None:
        with self._lock:
            (self._hidden.discard if visible else self._hidden.add)(group)
            for name, node in self._nodes.items():
                if name.startswith(f"/{group}/"):
                    node.visible = visible
        self.refresh()

    def _play_loop(self) -> None:
        while not self._stop.wait(self.play_period_s):
            play, slider = self._gui.get("play"), self._gui.get("step")
            if play is not None and bool(play.value):
                slider.value = (int(slider.value) + 1) % (self.data.horizon + 1)  # its callback redraws
