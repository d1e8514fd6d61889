"""Image reading: every format into (C, H, W) float32, and a clear error for every kind of bad file."""

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from data_builders.io import ImageReadError, ReadLimits, read_image


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def fits_bytes(data: np.ndarray, header: dict | None = None) -> bytes:
    hdu = fits.PrimaryHDU(data)
    for key, value in (header or {}).items():
        hdu.header[key] = value
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


def test_png_rgb_and_grey(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(rgb))
    img = read_image(path)
    assert img.data.shape == (3, 20, 30) and img.data.dtype == np.float32
    assert img.bands == ("R", "G", "B") and img.format == "png"
    np.testing.assert_array_equal(img.data[1], rgb[..., 1])
    grey = read_image(png_bytes(rgb[..., 0]))
    assert grey.data.shape == (1, 20, 30) and grey.bands == ("L",)


def test_png_16_bit_keeps_range():
    array = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    img = read_image(png_bytes(array))
    assert img.data.max() == 65535 and img.data[0, 1, 0] == 40000


def test_rgba_drops_alpha_and_jpeg_tiff_read(tmp_path):
    rgba = np.full((8, 8, 4), 100, dtype=np.uint8)
    assert read_image(png_bytes(rgba)).data.shape == (3, 8, 8)
    for fmt in ("JPEG", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(rgba[..., :3]).save(buffer, format=fmt)
        img = read_image(buffer.getvalue(), name=f"x.{fmt}")
        assert img.data.shape == (3, 8, 8) and img.format == fmt.lower()


def test_fits_2d_flipped_to_top_down_with_pixel_scale():
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    header = {
        "CTYPE1": "RA---SIN",
        "CTYPE2": "DEC--SIN",
        "CDELT1": -1.0 / 3600,
        "CDELT2": 1.0 / 3600,
        "CRVAL1": 150.0,
        "CRVAL2": 2.0,
        "CRPIX1": 2,
        "CRPIX2": 2,
    }
    img = read_image(fits_bytes(data, header))
    assert img.data.shape == (1, 3, 4)
    np.testing.assert_array_equal(img.data[0], data[::-1])  # FITS row 0 is the bottom row
    assert img.pixel_scale_arcsec == pytest.approx(1.0)
    assert img.header["CRVAL1"] == 150.0


def test_fits_degenerate_radio_axes_and_cube():
    cube = np.ones((1, 1, 16, 16), dtype=np.float32)
    assert read_image(fits_bytes(cube)).data.shape == (1, 16, 16)
    grz = np.ones((3, 16, 16), dtype=np.float32)
    assert read_image(fits_bytes(grz)).data.shape == (3, 16, 16)


def test_fits_nan_inf_are_masked_and_filled():
    data = np.ones((10, 10), dtype=np.float32)
    data[2, 3], data[5, 5] = np.nan, np.inf
    img = read_image(fits_bytes(data))
    assert np.isfinite(img.data).all()
    assert img.mask is not None and img.mask.sum() == 2
    assert img.data[0][~img.mask[0]].min() == 1.0


def test_npy_and_no_pickle(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 5, 6), dtype=np.float64))
    assert read_image(buffer.getvalue()).data.shape == (2, 5, 6)
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="not numeric"):
        read_image(buffer.getvalue(), name="obj.npy")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty file"),
        (b"hello world, not an image", "unrecognised header"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt or truncated PNG"),
        (gzip.compress(b"abc"), "unrecognised header"),
    ],
)
def test_bad_bytes_name_the_file_and_reason(payload, reason):
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(payload, name="upload.png")
    assert "upload.png" in str(info.value)


def test_truncated_png_and_fits(tmp_path):
    good = png_bytes(np.zeros((64, 64), dtype=np.uint8) + np.arange(64, dtype=np.uint8))
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        read_image(good[: len(good) // 2], name="cut.png")
    good_fits = fits_bytes(np.ones((64, 64), dtype=np.float32))
    with pytest.raises(ImageReadError, match="cut.fits"):
        read_image(good_fits[:4000], name="cut.fits")


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.fits")
    with pytest.raises(TypeError, match="path or bytes"):
        read_image(42)


def test_decompression_bomb_refused_before_decoding():
    # A valid 20000x20000 grey PNG compresses to a few hundred kB; the header alone must stop it.
    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, format="PNG")
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(buffer.getvalue(), name="bomb.png", limits=ReadLimits(max_pixels=2**24))


def test_size_limits_on_fits_and_bytes():
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(fits_bytes(np.zeros((64, 64), dtype=np.float32)), limits=ReadLimits(max_pixels=1000))
    with pytest.raises(ImageReadError, match="bytes, over the limit"):
        read_image(b"\x89PNG" + b"\x00" * 100, limits=ReadLimits(max_bytes=50))
    with pytest.raises(ImageReadError, match="at least"):
        read_image(fits_bytes(np.zeros((1, 64), dtype=np.float32)))


def test_all_nan_4d_and_table_only_fits():
    with pytest.raises(ImageReadError, match="no finite pixel"):
        read_image(fits_bytes(np.full((8, 8), np.nan, dtype=np.float32)))
    with pytest.raises(ImageReadError, match="only 2-D or 3-D"):
        read_image(fits_bytes(np.zeros((2, 3, 8, 8), dtype=np.float32)))
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    with pytest.raises(ImageReadError, match="no HDU with 2-D or 3-D"):
        read_image(buffer.getvalue())


def test_too_many_planes():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((40, 8, 8), dtype=np.float32))
    with pytest.raises(ImageReadError, match="40 image planes"):
        read_image(buffer.getvalue())
