import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app.examples import EXAMPLES
from app.images import ChatImage
from data_builders.io import ImageReadError


def write_field(path, data, crval=(150.1, 2.2), cdelt_arcsec=1.5):
    """A FITS image with a SIN WCS; `data` has row 0 at the top, as the app shows it."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [10.0, 20.0]
    wcs.wcs.cdelt = [-cdelt_arcsec / 3600, cdelt_arcsec / 3600]
    fits.PrimaryHDU(data[::-1].astype(np.float32), header=wcs.to_header()).writeto(path)
    return wcs


def test_sky_coordinates_follow_the_header_with_rows_shown_top_down(tmp_path):
    data = np.random.default_rng(0).normal(size=(64, 48))
    wcs = write_field(tmp_path / "f.fits", data)
    image = ChatImage.read(tmp_path / "f.fits")
    x, y = 30.0, 5.0  # as shown: row 5 from the top is FITS row 64 - 1 - 5 from the bottom
    expected = wcs.pixel_to_world(x, 64 - 1 - y)
    sky = image.sky(x, y)
    assert sky["ra_deg"] == pytest.approx(expected.ra.deg, abs=1e-6)
    assert sky["dec_deg"] == pytest.approx(expected.dec.deg, abs=1e-6)
    assert image.pixel_scale_arcsec() == pytest.approx(1.5)
    # the reference pixel (FITS 1-based crpix) lands on the reference sky position
    at_crpix = image.sky(10.0 - 1, 64 - 1 - (20.0 - 1))
    assert (at_crpix["ra_deg"], at_crpix["dec_deg"]) == pytest.approx((150.1, 2.2), abs=1e-9)


def test_images_without_a_usable_wcs_have_no_sky(tmp_path):
    fits.PrimaryHDU(np.ones((16, 16), np.float32)).writeto(tmp_path / "plain.fits")
    header = fits.Header({"CTYPE1": "RA---XXX", "CTYPE2": "DEC--XXX", "CRVAL1": 1.0})
    fits.PrimaryHDU(np.ones((16, 16), np.float32), header=header).writeto(tmp_path / "broken.fits")
    for name in ("plain.fits", "broken.fits"):
        assert ChatImage.read(tmp_path / name).sky(3, 3) is None
    assert ChatImage.read(EXAMPLES[4].path).sky(0, 0) is None  # a PNG


def test_the_model_reads_the_stretch_the_user_sees():
    default = ChatImage.read(EXAMPLES[0].path)
    asinh = default.with_stretch("asinh")
    assert not np.array_equal(default.picture(), asinh.picture())
    for image in (default, asinh):
        view = image.model_view(64)
        assert view.shape == (64, 64, 3) and view.dtype == np.uint8
        # the model's view is the shown picture resized: their mean brightness agrees
        assert abs(float(view.mean()) - float(image.picture().mean())) < 2.0
    with pytest.raises(ValueError, match="unknown stretch"):
        ChatImage(default.image, stretch="rainbow")


def test_nan_and_inf_in_a_fits_file_are_masked_not_shown(tmp_path):
    data = np.random.default_rng(1).normal(size=(32, 32))
    data[3:6, 3:6] = np.nan
    data[10, 10] = np.inf
    write_field(tmp_path / "holes.fits", data)
    image = ChatImage.read(tmp_path / "holes.fits")
    assert np.isfinite(image.picture()).all() and image.image.mask.sum() == 10


@pytest.mark.parametrize("raw", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_unreadable_bytes_raise_a_clear_error(raw):
    with pytest.raises(ImageReadError, match="upload.png"):
        ChatImage.read(raw, name="upload.png")


def test_display_enlarges_small_images_without_smoothing_and_reduces_large_ones():
    small = ChatImage.read(EXAMPLES[0].path)  # 128 px
    shown = small.display(512)
    assert shown.size == (512, 512)
    assert len(np.unique(np.asarray(shown)[:4, :4].reshape(-1, 3), axis=0)) == 1  # a 4x4 block per pixel
    large = ChatImage(small.image.__class__(np.zeros((1, 2000, 1000), np.float32), ("I",)))
    assert large.display(512).size == (256, 512)
