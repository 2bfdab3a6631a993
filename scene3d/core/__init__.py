"""Cameras, rays, pose conventions, metrics, checkpoint I/O and errors. Needs only torch (never nerfstudio)."""
