"""Where images come from: files on disk, loaded as float tensors."""
from .image import image_files, load_image

__all__ = ["image_files", "load_image"]
