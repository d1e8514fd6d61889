"""The chat's example images for classroom demos: simulated and real, shipped in app/examples/.

    python -m app.examples            # (re)writes the files; they are committed, so nobody needs to

Simulated FITS carry a made-up but valid WCS (SIN projection; OBJECT and COMMENT say it is simulated)
so the tools can report sky coordinates; the real images are the Hubble Deep Field of scikit-image's
data and the middle 150 px of a FIRST FR-II radio galaxy of the `firstgalaxydata` test split (8-bit, no WCS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class Example:
    file: str
    question: str
    about: str

    @property
    def path(self) -> Path:
        return EXAMPLES_DIR / self.file


EXAMPLES = (
    Example(
        "radio-field-simulated.fits", "Detect the sources in this image.", "simulated radio field (FITS, WCS)"
    ),
    Example(
        "radio-galaxy-simulated.fits",
        "Which of these morphological classes of radio galaxy do you see in the image? FR-I, FR-II",
        "simulated FR-II radio galaxy (FITS, WCS)",
    ),
    Example("spiral-simulated.fits", "Describe this galaxy.", "simulated g,r,z galaxy stamp (FITS, WCS)"),
    Example("first-galaxy.png", "What are the basic statistics of this image?", "real FIRST radio galaxy"),
    Example(
        "hubble_deep_field.png", "Detect the sources in this image.", "real: Hubble Deep Field (scikit-image)"
    ),
)


def _wcs_header(ra: float, dec: float, shape: tuple[int, int], arcsec_per_pixel: float, bunit: str):
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.cdelt = [-arcsec_per_pixel / 3600, arcsec_per_pixel / 3600]
    header = wcs.to_header()
    header["BUNIT"] = bunit
    header["OBJECT"] = "simulated"
    header["COMMENT"] = "Simulated by astrovlm (data_builders.sim); the pointing is made up."
    return header


def _write_fits(path: Path, data: np.ndarray, header) -> None:
    from astropy.io import fits

    # rows are stored bottom-up in FITS; our arrays have row 0 at the top (data_builders.io)
    fits.PrimaryHDU(np.ascontiguousarray(data[..., ::-1, :]).astype(np.float32), header=header).writeto(
        path, overwrite=True
    )


def _simulated(family_name: str, seed: int, label: str | None = None):
    from data_builders.families import get_family

    family = get_family(family_name)
    for i in range(200):  # the first draw of the wanted class
        record = family.simulate(np.random.default_rng([seed, i]), family.default_size, f"example-{i}")
        if label is None or label in record.labels:
            return record
    raise RuntimeError(f"no {label} in 200 draws of {family_name}")


def write_examples(out: Path = EXAMPLES_DIR) -> list[Path]:
    from PIL import Image
    from skimage.data import hubble_deep_field

    from data_builders.importers import read_first

    out.mkdir(parents=True, exist_ok=True)
    field = _simulated("radio-b3", 11)
    _write_fits(
        out / EXAMPLES[0].file,
        field.image[0],
        _wcs_header(150.12, 2.21, field.image.shape[1:], 1.5, "Jy/beam"),
    )
    galaxy = _simulated("radio-b6", 12, "FR-II")
    _write_fits(
        out / EXAMPLES[1].file,
        galaxy.image[0],
        _wcs_header(187.70, 12.39, galaxy.image.shape[1:], 1.8, "Jy/beam"),
    )
    spiral = _simulated("optical-morphology", 13, "barred_spiral")
    header = _wcs_header(210.80, 54.35, spiral.image.shape[1:], 0.262, "nanomaggy")
    header["BANDS"] = ",".join(spiral.bands)
    _write_fits(out / EXAMPLES[2].file, spiral.image, header)
    # the most extended of the first 50 FR-IIs, cut to its middle 150 px (the cutouts are mostly empty)
    fr2 = [r.image[0] for r in read_first(family="radio-b6", splits=["test"]) if "FR-II" in r.labels][:50]
    first = max(fr2, key=lambda x: int((x > 10).sum()))
    Image.fromarray(np.clip(np.round(first[75:225, 75:225]), 0, 255).astype(np.uint8)).save(
        out / EXAMPLES[3].file
    )
    hdf = hubble_deep_field()  # (872, 1000, 3) uint8
    Image.fromarray(hdf[200:456, 300:556]).save(out / EXAMPLES[4].file)
    return [e.path for e in EXAMPLES]


if __name__ == "__main__":
    for path in write_examples():
        print(path, path.stat().st_size, "bytes")
