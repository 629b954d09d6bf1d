"""Sites of a multi-site phantom cohort (``--sites K``): each its own camera and population.

A site is drawn from the cohort seed and its index only (its own random stream), so site k is the
same whatever K. Subject i belongs to site i mod K. With one site (the default) there is no
``Site`` at all and the cohort is exactly the single-camera cohort of earlier versions.

The camera varies what differs between real gamma cameras and protocols: the collimator's
resolution (a scale on the depth-dependent blur), its sensitivity (a scale on the subject's count
level), the scatter an energy window lets in (a broad, low-amplitude blur of part of the counts)
and the acquisition matrix (1024 x 256 at 2.26 mm or 2048 x 512 at 1.13 mm). The population
varies the age mix (the age prior's peak) and the female:male ratio. The DICOM headers carry
what a real export would (institution, station, manufacturer, model), all fake; the manifest
carries only a pseudonymous site id.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from .render import NCOLS, NROWS, SCATTER_SIGMA_MM

# Fake vendors (nothing real): (Manufacturer, Manufacturer's Model Name).
VENDORS = (
    ("Phantomatic Imaging", "PI Duohead WB"),
    ("Nullpoint Medical", "NP-Gamma 2"),
    ("Fictive Scintigraphics", "FS Twin 700"),
    ("Imaginary Gamma Systems", "IGS Sweep"),
)
MATRICES = ((NROWS, NCOLS), (2 * NROWS, 2 * NCOLS))
_TAG = 0x517E  # keeps the site streams apart from the subjects' [seed, index(, k)] streams
# Camera and population ranges of the sites (uniform unless said otherwise).
FWHM_SCALE = (0.85, 1.4)  # high-resolution .. general-purpose collimator
SENSITIVITY = (0.5, 1.8)  # log-uniform: count level relative to the subject's drawn level
SCATTER = (0.0, 0.2)  # fraction of the counts moved into the broad scatter component
AGE_SHIFT = (-6.0, 6.0)  # years added to the age prior's peak
F_TO_M = (0.7, 2.5)  # log-uniform


@dataclass(frozen=True)
class Site:
    """One site of a multi-site cohort: its names, camera and population."""

    index: int
    site_id: str  # pseudonymous id written into the manifest
    institution: str  # fake names, written only into DICOM headers and phantom_info.json
    station: str
    manufacturer: str
    model: str
    fwhm_scale: float
    sensitivity: float
    scatter: float
    rows: int
    columns: int
    age_shift: float
    female_to_male: float

    @property
    def upsample(self) -> int:
        """How many written pixels per rendered pixel, along each axis."""
        return self.rows // NROWS

    def info(self) -> dict:
        """The site as phantom_info.json records it."""
        d = asdict(self)
        return {
            "index": self.index,
            "site": self.site_id,
            "institution": self.institution,
            "station": self.station,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "camera": {k: d[k] for k in ("fwhm_scale", "sensitivity", "scatter")}
            | {"matrix": f"{self.rows}x{self.columns}", "scatter_sigma_mm": SCATTER_SIGMA_MM},
            "population": {"age_shift": self.age_shift, "female_to_male": self.female_to_male},
        }


def site_id(seed: int, index: int) -> str:
    """The pseudonymous id of a site: a hash of the cohort seed and the site index only."""
    digest = hashlib.sha256(f"bone-age-phantom-site:{seed}:{index}".encode()).hexdigest()
    return "SITE-" + digest[:8]


def make_sites(seed: int, n: int) -> tuple[Site, ...]:
    """The n sites of a cohort; () for a single-site cohort (the default camera and population).

    Args:
        seed: the cohort's seed.
        n: number of sites (>= 1).
    """
    if n <= 1:
        return ()
    cohort = np.random.default_rng(np.random.SeedSequence([seed, _TAG, 0, _TAG]))
    first_matrix = int(cohort.integers(2))  # both matrices occur from 2 sites on
    vendors = cohort.permutation(len(VENDORS))
    sites = []
    for k in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG, k + 1, _TAG]))
        manufacturer, model = VENDORS[int(vendors[k % len(VENDORS)])]
        rows, cols = MATRICES[(k + first_matrix) % 2]
        sites.append(Site(
            index=k, site_id=site_id(seed, k), institution=f"Phantom Hospital {k + 1}",
            station=f"PHNM{k + 1:02d}", manufacturer=manufacturer, model=model,
            fwhm_scale=round(float(rng.uniform(*FWHM_SCALE)), 3),
            sensitivity=round(float(np.exp(rng.uniform(*np.log(SENSITIVITY)))), 3),
            scatter=round(float(rng.uniform(*SCATTER)), 3), rows=rows, columns=cols,
            age_shift=round(float(rng.uniform(*AGE_SHIFT)), 2),
            female_to_male=round(float(np.exp(rng.uniform(*np.log(F_TO_M)))), 3),
        ))  # fmt: skip
    return tuple(sites)


def upsample_counts(frame: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
    """A count frame on a finer matrix: each pixel's counts split at random among its
    factor x factor sub-pixels, as a camera with the finer matrix would have recorded the same
    photons (Poisson counts stay Poisson, the total is kept).

    Args:
        frame: counts, (rows, columns), unsigned integers.
        factor: sub-pixels per pixel along each axis.
        rng: the stream that splits the counts.
    """
    if factor == 1:
        return frame
    rows, cols = frame.shape
    parts = rng.multinomial(frame.astype(np.int64), [1.0 / factor**2] * factor**2)
    parts = parts.reshape(rows, cols, factor, factor).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(parts.reshape(rows * factor, cols * factor), dtype=frame.dtype)
