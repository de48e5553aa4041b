"""Physically motivated synthetic data that writes the real formats, with ground truth."""
