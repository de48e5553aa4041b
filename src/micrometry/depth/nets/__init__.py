"""Networks of the depth methods that are more than a few lines (GAN generators and critics)."""
