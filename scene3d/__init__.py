"""scene3d: generate and edit 3D scenes with NeRFs and Gaussian splats, as nerfstudio methods.

Importing ``scene3d`` is light: it imports neither nerfstudio nor any CUDA library. The components live in
subpackages (``scene3d.core``, ``scene3d.renderers``, ``scene3d.fields``, ``scene3d.priors``,
``scene3d.datasets``, ``scene3d.methods``, ``scene3d.viewer``, ``scene3d.export``, ``scene3d.cli``).
"""

__version__ = "0.1.0"
