"""HEALPix geometry in numpy: topology, windows and shifted windows (index tables built once)."""
