"""Seeing what the model sees: clouds colored by predicted flow, PNG figures and a web 3D viewer.

- :mod:`pointworld.viz.flow_cloud`: predicted or ground-truth scene flow as colored PLY clouds.
- :mod:`pointworld.viz.viewpoint`: the virtual camera of the figures (look-at viewpoint, projection).
- :mod:`pointworld.viz.figure_canvas`: matplotlib figures without a display (Agg canvas, atomic PNG writes).
- :mod:`pointworld.viz.figure_cloud`: the cloud with flow arrows and goal markers; side-by-side flow panels.
- :mod:`pointworld.viz.figure_curves`: planning cost over iterations; error over the horizon from eval JSON.
- :mod:`pointworld.viz.figure_files`: the figure sets ``pointworld render``, ``demo``, ``plan`` and ``eval`` write.
- :mod:`pointworld.viz.view_data`: what the viewer shows, loaded from a capture, a dataset clip or a plan record.
- :mod:`pointworld.viz.view_frames`: per-step positions and colors of the viewer's nodes (no viser).
- :mod:`pointworld.viz.viewer`: the local web viewer (viser, the ``viz`` extra).
"""
