"""Ensembles worth shipping: fully trained members, checked on the validation split.

A search's K best trials make a poor ensemble when a scheduler such as ASHA
stopped most of them after a few epochs: averaging half-trained networks into
the best one dilutes it. So ``zray export RUN --top-k K`` builds the members
by one of two rules (``--members``):

- ``seeds`` (the default): a deep ensemble, the best trial's configuration
  trained K times with different seeds (Lakshminarayanan et al. 2017). The
  best trial itself is the first member when it ran all the search's epochs;
  otherwise its configuration is trained again at the search's own seed as
  well. The other members use seeds ``seed + 1``, ``seed + 2``, ... Each is a
  ``zray train`` run under ``RUN/ensemble/TRIAL-seedS``, trained for the
  search's full epochs; a member already trained there is reused, so an
  interrupted export picks up where it stopped.
- ``trials``: the K best trials as the search left them (nothing is
  trained), for a search whose trials all ran to the end.

Then :func:`choose` scores every member and their mean PDF on the training
data's validation split, by the search's metric. When the ensemble does not
beat its best member there, the best member is shipped alone (unless told to
keep the ensemble) and the bundle says why, with the range the ratio
ensemble / best member takes over resamples of the validation galaxies
(:func:`ratio_interval`): whether the verdict is beyond the noise of that
split. How much the members' errors have in common (:func:`shared_errors`)
says what averaging them could gain at all: networks that all err by the
photometric noise of the same galaxies have little left to average out.
Everything measured is recorded in ``bundle.json`` under ``selection``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zray.console import LOG
from zray.errors import ZrayError

__all__ = ["BOOTSTRAP_RESAMPLES", "ENSEMBLE_DIR", "MEMBER_RULES", "best_member", "choose", "decide", "ratio_interval",
           "replace_seed", "seed_members", "shared_errors", "shared_sentence"]

# Where the seed members of a search's ensembles are trained, inside the search's folder.
ENSEMBLE_DIR = "ensemble"
MEMBER_RULES = {
    "seeds": "the best trial's configuration trained with different seeds, every member for the search's "
             "full epochs",
    "trials": "the best trials as the search left them",
}


def seed_members(run_dir, best, k: int) -> list:
    """``k`` fully trained networks of ``best``'s configuration (a :class:`zray.export.Candidate`
    of the search at ``run_dir``), as Candidates: see the module docstring."""
    from zray import search
    from zray.export import Candidate, candidates
    from zray.train import TrainJob, load_checkpoint_model

    run_dir = Path(run_dir)
    _, state = load_checkpoint_model(best.checkpoint)  # the whole checkpoint checked: one sentence if not
    job = TrainJob(**state["job"])
    space = _space_for(run_dir, job, Path(best.checkpoint))
    epochs = int(space.default_hyperparameters()["epochs"])
    row = next((r for r in search.summarize(run_dir)["ranked"] if r["trial"] == best.trial), None)
    finished = row is not None and row["status"] == "complete"
    members = [best] if finished else []
    seeds = [job.seed + i for i in range(len(members), k)]
    for n, seed in enumerate(seeds, start=len(members) + 1):
        name = f"{best.trial}-seed{seed}"
        folder = run_dir / ENSEMBLE_DIR / name
        if _trained(folder, epochs):
            LOG.info(f"ensemble member {n}/{k}: {name} already trained ({folder})")
        else:
            LOG.info(f"ensemble member {n}/{k}: training {best.trial}'s configuration with seed {seed} "
                     f"for {epochs} epochs")
            from zray import train

            done = train.run(replace_seed(space, seed), runs_dir=run_dir / ENSEMBLE_DIR, name=name)
            if done.get("interrupted"):  # Ctrl-C: Tune returned a half-trained member, never to ship
                LOG.info(f"ensemble member {n}/{k}: {name} interrupted after epoch "
                         f"{done['metrics'].get('epoch', 0)} of {epochs}; the same zray export continues it "
                         "from its last checkpoint")
                raise KeyboardInterrupt
        chosen, _ = candidates(folder, 1)
        members.append(Candidate(chosen[0].checkpoint, name, chosen[0].metrics))
    return members


def _space_for(run_dir: Path, job, checkpoint: Path):
    """The search's space with the trial's hyperparameters all fixed, nothing searched and its
    data where the trial read it (an absolute path: the export may run from another folder)."""
    from zray.config.loading import validate
    from zray.data.shards import read_manifest
    from zray.search.results import saved_space
    from zray.train import STATE_FILE

    saved = saved_space(run_dir).model_dump(mode="json")
    saved["fixed"], saved["search"] = dict(job.hyperparameters), {}
    saved["data"] = {**saved["data"], "path": job.data_path, "simulate": None}
    manifest = read_manifest(job.data_path)
    if manifest.hash != job.manifest_hash:
        raise ZrayError(f"{job.data_path}: changed since the search trained on it (manifest hash "
                        f"{manifest.hash[:12]}, the trial's {job.manifest_hash[:12]}); expected the same data "
                        "to train more ensemble members (or export with --members trials)")
    # The trial's hyperparameters checked as a search-space file is (one sentence naming its state file).
    return validate(saved, checkpoint / STATE_FILE)


def replace_seed(space, seed: int):
    """``space`` with ``tune.seed`` set to ``seed`` (the seed of a ``zray train`` run)."""
    return space.model_copy(update={"tune": space.tune.model_copy(update={"seed": seed})})


def _trained(folder: Path, epochs: int) -> bool:
    """Whether ``folder`` holds a run that reached its last epoch (its latest checkpoint's state)."""
    from zray.train import complete_checkpoints, read_state

    if not folder.is_dir():
        return False
    found = complete_checkpoints(folder)
    return bool(found) and max(int(read_state(c).get("epoch", -1)) for c in found) + 1 >= epochs


def best_member(members: list[dict[str, float]], metric: str, mode: str) -> int:
    """Index of the member whose ``metric`` is best (``mode``: ``min`` or ``max``)."""
    sign = 1.0 if mode == "min" else -1.0
    return int(np.argmin([sign * float(m[metric]) for m in members]))


def decide(ensemble: dict[str, float], members: list[dict[str, float]], metric: str, mode: str,
           keep_ensemble: bool = False, interval: tuple[float, float] | None = None,
           n: int | None = None) -> dict[str, Any]:
    """Ship the ensemble only when its ``metric`` beats every member's (or ``keep_ensemble``).

    ``ensemble`` and each of ``members``: validation figures (``val_*``);
    ``interval``: where the ratio ensemble / best member falls in 95% of
    resamples of the ``n`` validation galaxies (:func:`ratio_interval`), said
    in the reason so that a verdict within the noise reads as one. Returns
    ``{"shipped": "ensemble" | "best member", "best_member": index, "ratio": ensemble / best
    member, "ratio_interval": interval, "reason": sentence}``.
    """
    sign = 1.0 if mode == "min" else -1.0
    best = best_member(members, metric, mode)
    ens, top = float(ensemble[metric]), float(members[best][metric])
    ratio = ens / top if top else float("inf")
    beats = sign * ens < sign * top
    verb = "beats" if beats else "does not beat"
    figure = f"{ratio:.3f}x"
    if interval is not None:
        lo, hi = interval
        noise = "within the noise" if lo <= 1.0 <= hi else "beyond the noise"
        galaxies = f"the {n:,} validation galaxies" if n else "the validation galaxies"
        figure += f"; {lo:.3f}x-{hi:.3f}x in 95% of resamples of {galaxies}: {noise}"
    reason = f"the ensemble's {metric} {ens:.5f} {verb} its best member's {top:.5f} ({figure})"
    shipped = "ensemble" if beats or keep_ensemble else "best member"
    if not beats:
        reason += ("; shipping the ensemble as asked (--keep-ensemble)" if keep_ensemble
                   else f"; shipping member m{best} alone (--keep-ensemble ships the ensemble anyway)")
    return {"shipped": shipped, "best_member": best, "ratio": ratio,
            "ratio_interval": list(interval) if interval is not None else None, "reason": reason}


# Resamples of the validation galaxies behind the interval of the ensemble's ratio.
BOOTSTRAP_RESAMPLES = 1000


def ratio_interval(ensemble_rows: dict[str, np.ndarray], member_rows: dict[str, np.ndarray], metric: str,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """The central 95% of ``metric``(ensemble) / ``metric``(member) over paired bootstrap
    resamples of the galaxies (the same galaxies drawn for both), from each one's per-galaxy
    figures (:func:`zray.metrics.row_figures`). None where a resample's member figure is 0
    (a ratio without meaning) or ``metric`` has no per-galaxy form.

    How far a ratio such as 1.007x may move by the luck of which galaxies were held out:
    a few thousand validation galaxies measure sigma_MAD to about 2%, the size of what an
    ensemble of well-trained networks gains.
    """
    from zray.metrics import FROM_ROW_FIGURES

    if metric not in FROM_ROW_FIGURES:
        return None
    key, of = FROM_ROW_FIGURES[metric]
    ens, member = np.asarray(ensemble_rows[key]), np.asarray(member_rows[key])
    rng = np.random.default_rng(seed)
    ratios = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, len(ens), len(ens))
        top = of(member[rows])
        if not top:
            return None
        ratios[i] = of(ens[rows]) / top
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def shared_errors(member_dz: list[np.ndarray], threshold: float = 0.05) -> dict[str, Any] | None:
    """How alike the members' errors are, and what an average of them can gain for it.

    ``member_dz``: each member's dz on the same galaxies. ``correlation``: the mean over pairs
    of members of the Pearson correlation of their dz, on the galaxies that no member puts
    beyond ``threshold`` (a few outliers would dominate a Pearson correlation); ``rows``: how
    many galaxies that is. ``expected_ratio``: ``sqrt(rho + (1 - rho) / K)``, the scatter of
    the mean of K members of equal scatter so correlated, over one member's: about the most
    the ensemble gains over its best member (less when the members differ in skill). None
    with fewer than two members or fewer than three such galaxies, or where a member's
    errors do not vary.
    """
    dz = np.asarray(member_dz, dtype=np.float64)
    if dz.ndim != 2 or len(dz) < 2:
        return None
    inliers = np.all(np.abs(dz) <= threshold, axis=0)
    kept = dz[:, inliers]
    if kept.shape[1] < 3 or np.any(np.std(kept, axis=1) == 0):
        return None
    k = len(dz)
    rho = float(np.mean(np.corrcoef(kept)[np.triu_indices(k, 1)]))
    return {"correlation": rho, "rows": int(kept.shape[1]),
            "expected_ratio": float(np.sqrt(max(rho + (1.0 - rho) / k, 0.0)))}


def shared_sentence(shared: dict[str, Any], k: int, split: str = "validation") -> str:
    """:func:`shared_errors`' figures in words, for ``k`` members scored on the ``split`` galaxies."""
    return (f"the members' errors correlate at {shared['correlation']:.2f} on {shared['rows']:,} {split} galaxies "
            f"(outliers aside): an average of {k} members so alike narrows the scatter to about "
            f"{shared['expected_ratio']:.3f}x a member's at best")


def choose(bundle_dir: Path, info: dict, val: dict | None, source: str, metric: str, mode: str,
           keep_ensemble: bool = False) -> dict[str, Any]:
    """Score the members of the (not yet calibrated) bundle at ``bundle_dir`` and their mean
    PDF on ``val`` (rows of the training data's validation split, from ``source``);
    :func:`decide` which to ship.

    Returns the ``selection`` record of ``bundle.json``: the figures of the ensemble and of
    each member, the decision and its reason. Without validation rows (``val`` None: the data
    moved or changed since training; ``source`` says why) the ensemble is kept, and the
    record says so.
    """
    from zray.bins import RedshiftBins
    from zray.bundle import Bundle
    from zray.metrics import row_figures, validation_metrics

    if val is None:
        return {"shipped": "ensemble", "reason": f"not checked on validation data: {source}"}
    z = val["z_spec"]
    bins = RedshiftBins(**info["bins"])
    pdfs = Bundle(bundle_dir).member_pdfs(val["image"], val["ebv"])
    mean_pdf = np.mean(pdfs, axis=0)
    members = [validation_metrics(p, bins, z) for p in pdfs]
    ensemble = validation_metrics(mean_pdf, bins, z)
    best = best_member(members, metric, mode)
    rows = [row_figures(p, bins, z) for p in pdfs]
    interval = ratio_interval(row_figures(mean_pdf, bins, z), rows[best], metric)
    record = decide(ensemble, members, metric, mode, keep_ensemble, interval=interval, n=len(z))
    return {**record, "metric": metric, "n": int(len(z)), "fitted_on": source,
            "ensemble": ensemble, "members": members, "shared": shared_errors([r["dz"] for r in rows])}
