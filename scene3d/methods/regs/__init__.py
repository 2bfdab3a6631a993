"""ReGS (Mei, Xu, Patel; NeurIPS 2024): restyle a trained ``s3d-splat`` scene from one stylized reference view.

``ns-train regs`` / ``ns-train regs-tiny`` (``config.py``); the method's maths as pure functions in ``warp.py``,
``matching.py``, ``control.py`` and ``losses.py``; see this folder's README.
"""
