"""Reading and writing files: images, datasets, annotations."""

from micrometry.io.atomic import atomic_dir, atomic_path, write_json, write_text
from micrometry.io.image import read_gray_u8, read_image, write_image

__all__ = [
    "atomic_dir",
    "atomic_path",
    "read_image",
    "read_gray_u8",
    "write_image",
    "write_json",
    "write_text",
]
