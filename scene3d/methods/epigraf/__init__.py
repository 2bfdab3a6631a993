"""EpiGRAF (Skorokhodov et al., NeurIPS 2022): a 3D-aware GAN trained patch-wise; see README.md in this folder."""
