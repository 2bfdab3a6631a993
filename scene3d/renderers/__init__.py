"""Pure rendering functions: Gaussian rasterization, volume sampling and compositing, tri-planes, meshes.

Nothing here imports nerfstudio, and nothing compiles CUDA at import: CUDA libraries (gsplat, nerfacc) load on
first use on a CUDA device, with a pure-torch twin of the same signature everywhere else.
"""
