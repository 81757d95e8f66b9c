"""Infrastructure shared by the HEAL-SWIN stack (``healswin_jax``) and the ensemble stack (``ntk``)."""
