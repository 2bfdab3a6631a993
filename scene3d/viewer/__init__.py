"""viser panels for each method's controls, and a browser viewer for exported assets (``s3d view``)."""
