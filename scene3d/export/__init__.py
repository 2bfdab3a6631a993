"""Writers and readers of the files scene3d exports: meshes (PLY, OBJ, GLB), Gaussian splats (3DGS PLY, .splat),
turntable videos, and the ``s3d export`` kinds that produce them from a trained run.

Nothing here imports a method folder: an exporter takes a loaded pipeline through the attributes it needs, so methods
(and the viewer) can use these writers in turn.
"""
