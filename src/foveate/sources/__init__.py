"""Where images come from: every model reads through a `RegionSource` (by region, at the resolution
it needs); files are loaded by `load_image` or opened lazily as sources."""
from .files import open_source
from .image import image_files, load_image, pil_to_tensor
from .region import RegionSource, TensorSource, as_source, build_pyramid, pyramid_sizes

__all__ = ["RegionSource", "TensorSource", "as_source", "build_pyramid", "image_files", "load_image", "open_source",
           "pil_to_tensor", "pyramid_sizes"]
