"""Pure batched tensor geometry: SE(3), rotations, cameras, point-cloud operations."""
