"""nerfstudio glue shared by every scene3d method: the trainer, viewer defaults, config helpers."""
