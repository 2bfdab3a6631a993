"""s3d-nerf: scene3d's base NeRF (hash grid + occupancy grid), registered as ``s3d-nerf`` and ``s3d-nerf-tiny``."""
