"""HEAL-SWIN in JAX/Flax: a Swin transformer on the HEALPix sphere (Carlsson, Gerken et al., CVPR 2024)."""
