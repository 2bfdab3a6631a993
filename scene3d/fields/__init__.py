"""Neural fields as reusable building blocks (``nn.Module``s), with CUDA libraries only where they pay off.

* :mod:`~scene3d.fields.hash_grid`: Instant-NGP multiresolution hash encoding (tiny-cuda-nn | pure torch twin,
  one parameter layout for both);
* :mod:`~scene3d.fields.tensorf`: TensoRF vector-matrix factorised grid (torch ``grid_sample``);
* :mod:`~scene3d.fields.encodings`: spherical harmonics and sinusoidal encodings;
* :mod:`~scene3d.fields.mlp`: MLP heads; :mod:`~scene3d.fields.activations`: ``trunc_exp``;
* :mod:`~scene3d.fields.radiance`: :class:`RadianceField`, an encoding + density head + colour head with optional
  per-sample extra inputs (embeddings);
* :mod:`~scene3d.fields.sdf`: :class:`SDFField`, a signed distance and albedo on an encoding (NeuS geometry, mesh
  texture);
* :mod:`~scene3d.fields.dmtet`: :class:`DMTet`, learnable SDF values and offsets on a tetrahedral grid.

Nothing here imports nerfstudio or a CUDA library at import time.
"""
