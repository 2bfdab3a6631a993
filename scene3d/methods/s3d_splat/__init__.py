"""s3d-splat: 3D Gaussian splatting through scene3d.renderers.gaussians.rasterize (gsplat on CUDA, torch on CPU)."""
