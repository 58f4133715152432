"""PDF calibration: one temperature that makes an ensemble's PDFs as wide as its errors.

A network trained on soft targets, and the mean of an ensemble's members,
both give PDFs wider than the errors they make (over-dispersed: the PIT
histogram has a hump in the middle); a network trained long on one-hot
targets gives narrower ones (under-dispersed: PIT piles up at 0 and 1). A
single temperature T fixes both to first order::

    p_T(z) ∝ p(z) ** (1 / T)

T < 1 sharpens, T > 1 widens. ``zray export`` fits T on the validation split
(the value that minimises the mean negative log-likelihood of the true bin)
and records it in ``bundle.json``; every prediction from the bundle
(``zray.load``, ``zray predict``, ``zray evaluate``) applies it.

    >>> import numpy as np
    >>> from zray.calibration import temper
    >>> temper(np.array([[0.5, 0.25, 0.25]]), 0.5).round(3)
    array([[0.667, 0.167, 0.167]])
"""

from __future__ import annotations

import numpy as np

from zray import metrics as m

__all__ = ["temper", "fit_temperature", "report"]

# A floor under probabilities before the logarithm: bins the model gives ~0.
_FLOOR = 1e-12
T_MIN, T_MAX = 0.1, 10.0


def temper(pdf, temperature: float) -> np.ndarray:
    """``pdf ** (1 / temperature)``, renormalised per row (float64)."""
    pdf = np.asarray(pdf, dtype=np.float64)
    if temperature == 1.0:
        return pdf / pdf.sum(axis=-1, keepdims=True)
    log = np.log(np.maximum(pdf, _FLOOR)) / float(temperature)
    log -= log.max(axis=-1, keepdims=True)
    out = np.exp(log)
    return out / out.sum(axis=-1, keepdims=True)


def _nll(pdf, idx, temperature: float) -> float:
    tempered = temper(pdf, temperature)
    return float(-np.mean(np.log(np.maximum(tempered[np.arange(len(idx)), idx], _FLOOR))))


def fit_temperature(pdf, bins, z_spec) -> float:
    """The temperature in [0.1, 10] minimising the mean negative log-likelihood of z_spec's bin."""
    from scipy.optimize import minimize_scalar

    idx = bins.index(z_spec)
    result = minimize_scalar(lambda log_t: _nll(pdf, idx, float(np.exp(log_t))),
                             bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded",
                             options={"xatol": 1e-3})
    return float(np.exp(result.x))


def report(pdf, bins, z_spec, temperature: float) -> dict[str, float]:
    """PIT KS statistic and mean NLL before and after tempering, for the bundle's record."""
    idx = bins.index(z_spec)
    tempered = temper(pdf, temperature)
    return {
        "temperature": float(temperature),
        "n": int(len(idx)),
        "pit_ks_before": m.pit_ks(m.pit(pdf, bins, z_spec)),
        "pit_ks_after": m.pit_ks(m.pit(tempered, bins, z_spec)),
        "nll_before": _nll(pdf, idx, 1.0),
        "nll_after": _nll(pdf, idx, temperature),
    }
