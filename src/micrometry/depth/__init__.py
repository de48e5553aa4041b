"""Depth from top-down SEM images of etched contact holes (3D metrology)."""
