"""One phantom subject: demographics, latent bone age, body, effects, nuisance; rendering.

Each subject's randomness comes from ``np.random.SeedSequence([seed, index])`` only, so a
subject is identical whatever the cohort size or number of worker processes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import numpy as np

from .body_plan import (
    Body,
    Geometry,
    cloudy_gain,
    degenerative_sites,
    draw_organs,
    draw_soft_tissue,
    facet_sites,
    sample_body,
)
from .effects import EffectNoise, Effects, realise_effects, sample_noise
from .nuisance import Nuisance, draw_nuisance, sample_nuisance
from .render import NCOLS, NROWS, Canvas, camera
from .sites import Site, upsample_counts
from .skeleton import draw_skeleton

AGE_MIN, AGE_MAX = 40, 80
FEMALE_TO_MALE = 1.69
FOV_COLS = (13, NCOLS - 13)  # columns the detector covers (as on the GE scan in ../shared)
AGE_PEAK, AGE_SPREAD = 63.0, 10.0  # oncology population peaking in the 60s


def age_prior(shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Discrete cohort age prior (sex-pooled; age is drawn independently of sex).

    Args:
        shift: years added to the prior's peak (a site's population).
    """
    ages = np.arange(AGE_MIN, AGE_MAX + 1)
    w = np.exp(-0.5 * ((ages - (AGE_PEAK + shift)) / AGE_SPREAD) ** 2)
    return ages, w / w.sum()


def sample_demographics(rng: np.random.Generator, site: Site | None = None) -> tuple[int, str]:
    """Age and sex from the cohort's population, or a site's (same draws, so a subject's
    other draws do not depend on its site)."""
    ages, p = age_prior(site.age_shift if site else 0.0)
    age = int(rng.choice(ages, p=p))
    ratio = site.female_to_male if site else FEMALE_TO_MALE
    sex = "F" if rng.random() < ratio / (1.0 + ratio) else "M"
    return age, sex


@dataclass(frozen=True)
class Subject:
    seed: int
    index: int
    age: int
    sex: str
    b: float  # latent biological bone age
    study_date: dt.date
    birth_date: dt.date
    body: Body
    noise: EffectNoise
    effects: Effects
    nuisance: Nuisance
    site: Site | None = None  # None: the single-site cohort (reference camera and population)

    @property
    def subject_id(self) -> str:
        return f"PH{self.index:06d}"

    def with_bone_age(self, b: float, variability: float = 1.0) -> Subject:
        """Same person and nuisance, effects realised at another latent bone age."""
        fx = realise_effects(b, self.sex, self.noise, variability)
        return dataclasses.replace(self, b=float(b), effects=fx)


def _years_before(d: dt.date, years: int) -> dt.date:
    try:
        return d.replace(year=d.year - years)
    except ValueError:  # 29 February
        return d.replace(year=d.year - years, day=28)


def completed_years(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _dates(rng: np.random.Generator, age: int) -> tuple[dt.date, dt.date]:
    study = dt.date(2012, 1, 1) + dt.timedelta(days=int(rng.integers(0, 12 * 365)))
    latest = _years_before(study, age)  # birthday today: exactly `age`
    earliest = _years_before(study, age + 1) + dt.timedelta(days=1)
    birth = earliest + dt.timedelta(days=int(rng.integers(0, (latest - earliest).days + 1)))
    if completed_years(birth, study) != age:  # defensive: leap-day corner cases
        birth = latest
    return study, birth


def sample_subject(seed: int, index: int, sigma: float = 3.0, variability: float = 1.0,
                   site: Site | None = None) -> Subject:  # fmt: skip
    """Draw everything about one subject (no rendering); ``site``: the subject's site, if the
    cohort has several."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    age, sex = sample_demographics(rng, site)
    b = float(age + rng.normal(0.0, sigma))
    study, birth = _dates(rng, age)
    # v3's individual differences come from their own stream (see sample_body).
    person = np.random.default_rng(np.random.SeedSequence([seed, index, 4]))
    body = sample_body(rng, sex, person)
    noise = sample_noise(rng)
    nuisance = sample_nuisance(rng)
    fx = realise_effects(b, sex, noise, variability)
    return Subject(seed, index, age, sex, b, study, birth, body, noise, fx, nuisance, site)


def render_subject(subj: Subject) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Anterior and posterior uint16 count frames (as acquired, on the site's matrix) and their
    total counts."""
    body, fx, nz = subj.body, subj.effects, subj.nuisance
    g = Geometry(body, fx)
    cv = Canvas()
    draw_soft_tissue(cv, body, g)
    # Own stream, so the tissue texture leaves the subject's other draws and noise unchanged.
    cloudy_gain(cv, np.random.default_rng(np.random.SeedSequence([subj.seed, subj.index, 2])))
    draw_skeleton(cv, body, g, fx)
    draw_organs(cv, g, fx, nz.bladder)
    draw_nuisance(cv, body, g, nz)
    sites = degenerative_sites(body)
    for k in fx.deg_sites:
        z, x, f, s = sites[k]
        cv.gauss(g.row(z), g.col(x), g.px(s), 0.9 * fx.degenerative_intensity, f)
    facets = facet_sites()
    for k in fx.facet_sites:
        z, x = facets[k]
        cv.gauss(g.row(z), g.col(x), g.px(0.0045), 0.8 * fx.facet_intensity, 0.88)
    soft_conc = 0.0028 * fx.soft_tissue_retention
    # The detector's field is fixed (the patient is placed in it); the scan runs from above
    # the vertex to below the toes.
    fov = (max(int(g.top) - 14, 0), min(int(g.row(1.0 + body.foot_len)) + 14, NROWS),
           FOV_COLS[0], FOV_COLS[1])  # fmt: skip
    rng = np.random.default_rng(np.random.SeedSequence([subj.seed, subj.index, 1]))
    site = subj.site
    if site is None:
        return camera(cv, soft_conc, nz.counts_ant, nz.background, fov, rng)
    ant, post, c_ant, c_post = camera(cv, soft_conc, nz.counts_ant * site.sensitivity,
                                      nz.background, fov, rng, site.fwhm_scale, site.scatter)
    # A finer matrix records the same photons on smaller pixels (own stream, see above).
    split = np.random.default_rng(np.random.SeedSequence([subj.seed, subj.index, 3]))
    ant, post = (upsample_counts(f, site.upsample, split) for f in (ant, post))
    return ant, post, c_ant, c_post
