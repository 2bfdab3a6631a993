"""One folder per method; each registers ``<name>`` and ``<name>-tiny`` with nerfstudio."""
