"""Read astronomy images of any common format into one internal form.

    >>> img = read_image("field.fits")        # or .png/.jpg/.tif/.npy, or raw bytes
    >>> img.data.shape, img.bands              # (C, H, W) float32, e.g. (1, 300, 300), ("I",)

The format is told by the file's magic bytes, not its name. Non-finite pixels (NaN, +-inf) are
recorded in `img.mask` and replaced by the channel's median, so they never reach a model. Every failure
raises `ImageReadError` naming the file and the reason; sizes are checked from the header before any
pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MAGIC = {
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"SIMPLE  =": "fits",
    b"\x93NUMPY": "npy",
}


class ImageReadError(ValueError):
    """An image that cannot be read; the message names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


@dataclass(frozen=True)
class ReadLimits:
    max_bytes: int = 512 * 2**20  # a file larger than this is refused unread
    max_pixels: int = 2**26  # per plane: 8192 x 8192
    max_channels: int = 16
    min_side: int = 2

    def __post_init__(self):
        if min(self.max_bytes, self.max_pixels, self.max_channels, self.min_side) < 1:
            raise ValueError(f"limits must be positive: {self}")


@dataclass
class AstroImage:
    """An image in the internal form: float32 (C, H, W) plus what is known about it."""

    data: np.ndarray  # (C, H, W) float32, all finite
    bands: tuple[str, ...]
    mask: np.ndarray | None = None  # (C, H, W) bool, True where the file held NaN/inf
    pixel_scale_arcsec: float | None = None
    header: object | None = None  # astropy.io.fits.Header for FITS (carries the WCS)
    # FITS rows are stored bottom-up; here row 0 is the top, so pixel (x, y) is FITS (x, H - 1 - y), 0-based.
    name: str = "<bytes>"
    format: str = ""


def read_image(
    source: str | Path | bytes, name: str | None = None, limits: ReadLimits = ReadLimits()
) -> AstroImage:
    """Read PNG/JPEG/TIFF/FITS/NPY from a path or from bytes into an `AstroImage`."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise ImageReadError(name, "no such file")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageReadError(name, f"file is {size} bytes, over the limit of {limits.max_bytes}")
        raw = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        raw, name = bytes(source), name or "<bytes>"
        if len(raw) > limits.max_bytes:
            raise ImageReadError(name, f"{len(raw)} bytes, over the limit of {limits.max_bytes}")
    else:
        raise TypeError(f"read_image takes a path or bytes, not {type(source).__name__}")
    if not raw:
        raise ImageReadError(name, "empty file")
    fmt = sniff_format(raw)
    if fmt is None:
        raise ImageReadError(name, "not a PNG, JPEG, TIFF, FITS or NPY file (unrecognised header bytes)")
    reader = {"png": _read_pil, "jpeg": _read_pil, "tiff": _read_pil, "fits": _read_fits, "npy": _read_npy}[
        fmt
    ]
    try:
        image = reader(raw, name, limits)
    except ImageReadError:
        raise
    except Exception as exc:  # a library's own error on a corrupt or truncated file
        raise ImageReadError(
            name, f"corrupt or truncated {fmt.upper()} ({type(exc).__name__}: {exc})"
        ) from exc
    image.name, image.format = name, fmt
    return image


def sniff_format(raw: bytes) -> str | None:
    return next((fmt for magic, fmt in MAGIC.items() if raw.startswith(magic)), None)


def _read_pil(raw: bytes, name: str, limits: ReadLimits) -> AstroImage:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(raw))  # reads the header only
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(name, f"image is over the limit of pixels Pillow accepts ({exc})") from exc
        _check_plane(name, image.height, image.width, limits)
        image.load()
    if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA"):  # alpha is not a band
        image = image.convert(image.mode[:-1])
    bands = tuple(image.getbands())
    if image.mode in ("I;16", "I;16B", "I;16L"):
        image = image.convert("I")
    array = np.asarray(image, dtype=np.float32)
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return _finish(array, bands, name, limits)


def _read_fits(raw: bytes, name: str, limits: ReadLimits) -> AstroImage:
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales

    with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=True) as hdus:
        hdu = next((h for h in hdus if h.header.get("NAXIS", 0) >= 2 and _is_image_hdu(h)), None)
        if hdu is None:
            raise ImageReadError(name, "FITS file has no HDU with 2-D or 3-D image data")
        header = hdu.header.copy()
        shape = tuple(int(header[f"NAXIS{i}"]) for i in range(header["NAXIS"], 0, -1))  # numpy order
        # Radio images often carry degenerate STOKES/FREQ axes: (1, 1, H, W) is a 2-D image.
        while len(shape) > 2 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) > 3:
            raise ImageReadError(
                name, f"FITS data has shape {shape}; only 2-D or 3-D (planes, y, x) images are read"
            )
        _check_plane(name, shape[-2], shape[-1], limits)
        data = np.asarray(hdu.data, dtype=np.float32).reshape(shape)
    data = data[None] if data.ndim == 2 else data
    data = data[:, ::-1, :].copy()  # FITS rows run bottom-up; the internal form is top-down like PNG
    default = (
        (str(header.get("FILTER", "I")),)
        if data.shape[0] == 1
        else tuple(f"b{i}" for i in range(data.shape[0]))
    )
    bands = tuple(str(header.get(f"BAND{i + 1}", band)) for i, band in enumerate(default))
    scale = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
            if wcs.has_celestial:
                scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
        except Exception:  # a header without a usable WCS is still a readable image
            scale = None
    image = _finish(data, bands, name, limits)
    image.header, image.pixel_scale_arcsec = header, scale
    return image


def _is_image_hdu(hdu) -> bool:
    from astropy.io import fits

    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))


def _read_npy(raw: bytes, name: str, limits: ReadLimits) -> AstroImage:
    buffer = io.BytesIO(raw)
    major, _ = np.lib.format.read_magic(buffer)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(buffer)
    if dtype.kind not in "biuf":
        raise ImageReadError(name, f"NPY dtype {dtype} is not numeric")
    if len(shape) not in (2, 3):
        raise ImageReadError(name, f"NPY array has shape {shape}; expected (H, W) or (C, H, W)")
    _check_plane(name, shape[-2], shape[-1], limits)
    array = np.load(io.BytesIO(raw), allow_pickle=False).astype(np.float32)
    array = array[None] if array.ndim == 2 else array
    bands = ("I",) if array.shape[0] == 1 else tuple(f"b{i}" for i in range(array.shape[0]))
    return _finish(array, bands, name, limits)


def _check_plane(name: str, height: int, width: int, limits: ReadLimits) -> None:
    if height < limits.min_side or width < limits.min_side:
        raise ImageReadError(
            name, f"image is {width}x{height} pixels; each side must be at least {limits.min_side}"
        )
    if height * width > limits.max_pixels:
        raise ImageReadError(
            name,
            f"image is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}",
        )


def _finish(data: np.ndarray, bands: tuple[str, ...], name: str, limits: ReadLimits) -> AstroImage:
    if data.shape[0] > limits.max_channels:
        raise ImageReadError(name, f"{data.shape[0]} image planes, over the limit of {limits.max_channels}")
    finite = np.isfinite(data)
    if finite.all():
        return AstroImage(np.ascontiguousarray(data, dtype=np.float32), bands)
    if not finite.any(axis=(1, 2)).all():
        raise ImageReadError(name, "a plane holds no finite pixel (all NaN/inf)")
    data = data.copy()
    for plane, ok in zip(data, finite):
        plane[~ok] = np.median(plane[ok])
    return AstroImage(data.astype(np.float32), bands, mask=~finite)
