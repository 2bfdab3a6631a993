"""DreamPolish (Cheng et al. 2024, arXiv 2411.01602): text/image → 3D object, progressive geometry, polished, DSD.

``ns-train dreampolish`` / ``ns-train dreampolish-tiny`` (``config.py``); the method's maths as pure functions in
``orbit.py``, ``reference.py``, ``handoff.py``, ``losses.py`` and ``rendering.py``; see this folder's README.
"""
