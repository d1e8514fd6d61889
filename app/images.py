"""The images of a conversation: the data as read, the picture shown, the view the model gets, the sky.

    image = ChatImage.read("field.fits", stretch="asinh")   # PNG/JPEG/TIFF/FITS/NPY, path or bytes
    image.picture()                                         # (H, W, 3) uint8: what the user sees
    image.model_view(64)                                    # the same picture at the model's size
    image.sky(10.5, 20.0)                                   # {"ra_deg", "dec_deg"} from the FITS WCS, or None

The stretch shown is the stretch the model reads: one rendering, resized for the model. `None` is the
rendering the models were trained on (radio: three stretches as R, G, B; optical g,r,z: Lupton asinh);
a named stretch (data_builders.stretch.STRETCHES) replaces it for both.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from data_builders.io import AstroImage, ReadLimits, read_image
from data_builders.stretch import STRETCHES, render_rgb

DEFAULT_STRETCH = "default"  # the models' own rendering; the other names are data_builders' stretches
STRETCH_CHOICES = (DEFAULT_STRETCH, *STRETCHES)
DISPLAY_SIDE = 512  # pictures larger than this are shown (not measured) at this size


@dataclass
class ChatImage:
    image: AstroImage
    stretch: str = DEFAULT_STRETCH
    _pictures: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.stretch not in STRETCH_CHOICES:
            raise ValueError(f"unknown stretch {self.stretch!r}; valid: {list(STRETCH_CHOICES)}")

    @classmethod
    def read(
        cls, source: str | Path | bytes, name: str | None = None, stretch: str = DEFAULT_STRETCH,
        limits: ReadLimits | None = None,
    ) -> ChatImage:  # fmt: skip
        """Raises data_builders.io.ImageReadError (a ValueError) naming the file and the reason."""
        return cls(read_image(source, name=name, limits=limits or ReadLimits()), stretch)

    @property
    def name(self) -> str:
        return Path(self.image.name).name

    @property
    def domain(self) -> str:
        return "radio" if self.image.data.shape[0] == 1 else "optical"

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.data.shape[1], self.image.data.shape[2]

    def with_stretch(self, stretch: str) -> ChatImage:
        return ChatImage(self.image, stretch)

    def picture(self) -> np.ndarray:
        """(H, W, 3) uint8 at full resolution, rendered with this image's stretch."""
        if "full" not in self._pictures:
            stretch = None if self.stretch == DEFAULT_STRETCH else self.stretch
            self._pictures["full"] = render_rgb(self.image.data, self.domain, self.image.bands, stretch)
        return self._pictures["full"]

    def model_view(self, size: int) -> np.ndarray:
        """The picture resized (antialiased) to size x size: the whole field, as the VLM reads it."""
        if size not in self._pictures:
            rgb = self.picture()
            if rgb.shape[:2] != (size, size):
                rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
            self._pictures[size] = rgb
        return self._pictures[size]

    def display(self, side: int = DISPLAY_SIDE) -> Image.Image:
        """The picture for a screen: small images enlarged without smoothing, large ones reduced."""
        picture = Image.fromarray(self.picture())
        scale = side / max(picture.size)
        if scale > 1:
            scale = int(scale)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
        return picture.resize(size, resample)

    # ------------------------------------------------------------------------- the sky

    @cached_property
    def wcs(self):
        """The celestial WCS of a FITS header, or None (no header, no celestial axes, or a broken one)."""
        if self.image.header is None:
            return None
        from astropy.wcs import WCS, FITSFixedWarning

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                celestial = WCS(self.image.header).celestial
        except Exception:  # a header astropy cannot read as a WCS: pixels only, not a failure
            return None
        return celestial if celestial.naxis == 2 and celestial.has_celestial else None

    def sky(self, x: float, y: float) -> dict | None:
        """RA/Dec (degrees, ICRS as the header says) of pixel (x, y), row 0 at the top as shown."""
        if self.wcs is None:
            return None
        height = self.image.data.shape[1]
        # rows are shown top-down; FITS counts them bottom-up (data_builders.io)
        coord = self.wcs.pixel_to_world(x, height - 1 - y)
        try:
            icrs = coord.icrs
        except Exception:  # e.g. a galactic or ecliptic frame astropy cannot convert here
            return None
        return {"ra_deg": round(float(icrs.ra.deg), 6), "dec_deg": round(float(icrs.dec.deg), 6)}

    def pixel_scale_arcsec(self) -> float | None:
        if self.image.pixel_scale_arcsec:
            return float(self.image.pixel_scale_arcsec)
        if self.wcs is None:
            return None
        from astropy.wcs.utils import proj_plane_pixel_scales

        return float(np.mean(proj_plane_pixel_scales(self.wcs)) * 3600.0)
