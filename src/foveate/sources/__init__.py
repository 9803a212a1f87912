"""Where images come from: files on disk, loaded as float tensors."""
from .image import image_files, load_image, pil_to_tensor

__all__ = ["image_files", "load_image", "pil_to_tensor"]
