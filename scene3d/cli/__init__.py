"""The ``s3d`` command."""
