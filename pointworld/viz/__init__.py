"""Seeing what the model sees: clouds colored by predicted flow, and image/plot outputs.

- :mod:`pointworld.viz.flow_cloud`: predicted or ground-truth scene flow as colored PLY clouds.
"""
