"""Where images come from: every model reads through a `RegionSource` (by region, at the resolution
it needs); files are loaded by `load_image` or opened lazily as sources (tiled TIFF, OpenSlide);
`convert` writes the tiled pyramidal TIFFs that are read lazily."""
from .convert import convert
from .files import open_source
from .image import image_files, load_image, pil_to_tensor
from .openslide import OpenSlideSource
from .region import RegionSource, TensorSource, as_source, build_pyramid, pyramid_sizes
from .tiff import TiffSource

__all__ = ["OpenSlideSource", "RegionSource", "TensorSource", "TiffSource", "as_source", "build_pyramid", "convert",
           "image_files", "load_image", "open_source", "pil_to_tensor", "pyramid_sizes"]
