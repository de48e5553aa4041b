"""Particle instance segmentation and morphometry."""
