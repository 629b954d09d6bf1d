"""Age and sex effects of the phantom, all driven by the latent bone age b (never by age).

Sources (summarised in the project's age-effects literature note):

- ``global_uptake`` (bone-to-soft-tissue ratio of the whole skeleton): rises with age in both
  sexes (Kigami et al., J Nucl Med 1996;37:815-8, Tc-99m-HMDP). Shape from Brenner et al.,
  Nuklearmedizin 2000;39:127-32: in men it falls slowly up to ~60 then rises; in women it rises
  roughly linearly after ~55.
- ``spine_pelvis_uptake`` (lumbar spine, iliac wings, sacrum): falls with age in women after the
  menopause (r = -0.55 lumbar, -0.45 iliac wing in 84 women, Tc-99m-MDP); in men it falls
  slightly to ~50 and more markedly after (Sundkvist et al., Nuklearmedizin 1997).
- ``shaft_uptake`` (femoral / tibial / humeral diaphyses): rises with age (r = 0.39, same study
  of 84 women; Kigami 1996: legs rise more than the thorax in women).
- ``skull_uptake`` ("hot skull"): the skull-to-femur ratio is higher in women from their 30s and
  rises with age; in men it rises only after 60 (Sadeghi et al., Nucl Med Rev 2008;11:67-9).
- ``n_degenerative_foci`` / ``degenerative_intensity``: osteoarthritic foci at knees, hips,
  shoulders, spine, hands and feet become more frequent with age (literature note).
- ``n_facet_foci`` / ``facet_intensity``: lumbar facet degeneration; deep posterior structures,
  so clearer on the posterior view (literature note).
- ``sternal_variant``: manubriosternal / sternoclavicular uptake variants that change with age
  (Syed et al., Nucl Med Commun 2005; Kakhki & Zakavi, Clin Nucl Med 2006). Anterior.
- ``soft_tissue_retention`` and ``renal_retention``: renal function declines with age, so tracer
  retention in soft tissue and kidneys at 3-4 h rises (literature note).
- ``kyphosis`` (deg) and ``height_loss_mm``: thoracic kyphosis increases and vertebral height is
  lost with age, more in women; they shorten the trunk relative to the legs and foreshorten the
  thoracic spine in a coronal projection (general geriatric anatomy; modest effects).
- Sex (not age): men are taller and broader; breasts attenuate the anterior chest in women.

Every effect = deterministic function of (b, sex) + per-subject biological variability that is
independent of age (standard normals ``z`` / uniforms ``u`` drawn once per subject), scaled by
``variability``. Holding the noise fixed and changing b therefore gives a monotone, coupled
change: used by the tests and by the preview.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_DEGENERATIVE_SITES = 24
N_FACET_SITES = 8
_Z_NAMES = (
    "global", "spine", "skull", "shaft", "deg_rate", "deg_int", "facet", "facet_int",
    "sternal", "kyphosis", "height", "soft", "renal",
)  # fmt: skip


@dataclass(frozen=True)
class EffectNoise:
    """Age-independent per-subject variability behind every effect."""

    z: dict[str, float]
    u_deg: np.ndarray  # uniform per candidate degenerative site (inclusion threshold)
    u_facet: np.ndarray


def sample_noise(rng: np.random.Generator) -> EffectNoise:
    z = dict(zip(_Z_NAMES, rng.standard_normal(len(_Z_NAMES)).tolist(), strict=True))
    return EffectNoise(z, rng.random(N_DEGENERATIVE_SITES), rng.random(N_FACET_SITES))


@dataclass(frozen=True)
class Effects:
    global_uptake: float
    spine_pelvis_uptake: float
    skull_uptake: float
    shaft_uptake: float
    n_degenerative_foci: int
    degenerative_intensity: float
    n_facet_foci: int
    facet_intensity: float
    sternal_variant: float
    kyphosis: float
    height_loss_mm: float
    soft_tissue_retention: float
    renal_retention: float
    deg_sites: tuple[int, ...]  # indices of active candidate sites (not a truth column)
    facet_sites: tuple[int, ...]

    def truth(self) -> dict[str, float]:
        d = asdict(self)
        d.pop("deg_sites")
        d.pop("facet_sites")
        return d


def _hinge(b: float, knot: float) -> float:
    """Decades above a knot (0 below it)."""
    return max(b - knot, 0.0) / 10.0


def realise_effects(b: float, sex: str, noise: EffectNoise, variability: float = 1.0) -> Effects:
    """Map latent bone age b and sex (plus fixed per-subject noise) to effect parameters."""
    z = {k: v * variability for k, v in noise.z.items()}
    t = (b - 60.0) / 10.0
    female = sex == "F"
    if female:
        g = 0.02 * t + 0.10 * _hinge(b, 55)
        sp = -0.13 * _hinge(b, 48)
        sk = 0.10 + 0.13 * (b - 40.0) / 10.0
        kyph = 42.0 + 0.55 * (b - 60.0)
        hl_k = 0.165
    else:
        g = 0.04 * max(60.0 - b, 0.0) / 10.0 + 0.09 * _hinge(b, 60)
        sp = -0.04 * (min(b, 50.0) - 40.0) / 10.0 - 0.12 * _hinge(b, 50)
        sk = 0.14 * _hinge(b, 60)
        kyph = 40.0 + 0.40 * (b - 60.0)
        hl_k = 0.11
    # Degenerative foci: expected count 2.5*exp(0.75 t) (~0.6 at 40, 2.5 at 60, 11 at 80);
    # each candidate site switches on when its uniform falls below p, so more b => superset.
    lam = 2.5 * np.exp(0.75 * t + 0.65 * z["deg_rate"])
    p_deg = min(0.95, lam / N_DEGENERATIVE_SITES)
    deg_sites = tuple(int(i) for i in np.flatnonzero(noise.u_deg < p_deg))
    p_facet = 1.0 / (1.0 + np.exp(-((b - 68.0) / 7.0 + 0.9 * z["facet"])))
    facet_sites = tuple(int(i) for i in np.flatnonzero(noise.u_facet < p_facet))
    return Effects(
        global_uptake=float(np.exp(g + 0.11 * z["global"])),
        spine_pelvis_uptake=float(np.exp(sp + 0.13 * z["spine"])),
        skull_uptake=float(np.exp(sk + 0.19 * z["skull"])),
        shaft_uptake=float(np.exp(0.08 * t + 0.13 * z["shaft"])),
        n_degenerative_foci=len(deg_sites),
        degenerative_intensity=float(np.exp(0.15 * t + 0.28 * z["deg_int"])),
        n_facet_foci=len(facet_sites),
        facet_intensity=float(np.exp(0.10 * t + 0.28 * z["facet_int"])),
        sternal_variant=float(np.exp(0.18 * t + 0.38 * z["sternal"])),
        kyphosis=float(np.clip(kyph + 11.0 * z["kyphosis"], 20.0, 85.0)),
        height_loss_mm=float(hl_k * max(b - 40.0, 0.0) ** 1.6 * np.exp(0.55 * z["height"])),
        soft_tissue_retention=float(np.exp(0.10 * t + 0.28 * z["soft"])),
        renal_retention=float(np.exp(0.25 * t + 0.65 * z["renal"])),
        deg_sites=deg_sites,
        facet_sites=facet_sites,
    )
