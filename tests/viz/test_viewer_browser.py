"""The viewer in a real browser: headless Chromium (Playwright, Debian's /usr/bin/chromium, software WebGL)
opens the page, the scene arrives and is drawn (screenshot pixel statistics), and a server-side change
(the color mode) reaches the rendered page.

Set ``POINTWORLD_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pointworld.viz.view_data import ViewData
from pointworld.viz.viewer import Viewer

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--ignore-gpu-blocklist", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.slow


def scene() -> ViewData:
    """A 50 x 50 cm tray of blue and violet points; 300 of them move +x over 4 steps."""
    g = torch.Generator().manual_seed(0)
    n, t = 2000, 4
    points = torch.rand(n, 3, generator=g) * torch.tensor([0.5, 0.5, 0.05]) + torch.tensor([0.4, -0.25, 0.0])
    colors = torch.zeros(n, 3)
    colors[:, 2] = 1.0
    colors[: n // 2, 0] = 0.45
    disp = torch.zeros(t, n, 3)
    disp[:, :300, 0] = torch.linspace(0.01, 0.08, t)[:, None]
    std_m = torch.linspace(0.001, 0.03, n)[torch.randperm(n, generator=g)]  # heat colors: none blue
    log_var = (2 * torch.log(std_m)).expand(t, n).clone()
    return ViewData(points=points, colors=colors, predicted=disp, log_var=log_var, title="browser test")


def blue_pixels(png: bytes) -> tuple[int, float]:
    """(count of the cloud's blue/violet pixels, std of all channels) of a screenshot. The GUI's blue
    widgets (green channel ~140) and the heat color ramp (never blue-dominant) do not count."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)
    blue = (rgb[..., 2] > 180) & (rgb[..., 1] < 70) & (rgb[..., 0] < 150)
    return int(blue.sum()), float(rgb.std())


def wait_for(page, predicate, timeout_s: float = 60.0) -> bytes:
    """Screenshot the page until ``predicate(blue_count)`` holds; returns the last screenshot."""
    deadline = time.monotonic() + timeout_s
    while True:
        png = page.screenshot()
        if predicate(blue_pixels(png)[0]) or time.monotonic() > deadline:
            return png
        time.sleep(0.5)


def test_viewer_renders_in_headless_chromium():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    keep = os.environ.get("POINTWORLD_SCREENSHOT_DIR")
    with Viewer(scene(), port=0) as viewer, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(viewer.url)
            page.wait_for_selector("canvas", state="attached", timeout=60_000)
            png = wait_for(page, lambda blue: blue > 3000)
            count, std = blue_pixels(png)
            assert count > 3000, f"the blue cloud did not appear: {count} blue pixels"
            assert std > 20.0, f"the page looks blank: pixel std {std:.1f}"
            assert len(viewer.server.get_clients()) == 1
            assert viewer.node_names() == ["/flow/predicted", "/scene/cloud"]
            handle = viewer.server.scene.get_handle_by_name("/scene/cloud")
            assert handle is not None and np.asarray(handle.points).shape == (2000, 3)
            # a server-side change reaches the page: the heat colors hold no blue, the blue disappears
            viewer.set_color_mode("uncertainty")
            after = wait_for(page, lambda blue: blue < count // 20)
            assert blue_pixels(after)[0] < count // 20, "the page kept its colors after the color-mode change"
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                (Path(keep) / "viewer_rgb.png").write_bytes(png)
                (Path(keep) / "viewer_uncertainty.png").write_bytes(after)
        finally:
            browser.close()
