"""The claims of `smlib.experiments.swersky2011` (Fig. 1 and Fig. 2 of Swersky et al. 2011): each rule as a
function of its numbers, the rules table (each rule on the untrained model and a planted positive), and
:func:`claims`, which reads a record (live or recorded, first protocol or current) and gives every claim
with its rule, numbers, health gates and verdict."""
from __future__ import annotations

import numpy as np

from smlib.experiments import swersky2011_gates as G
from smlib.experiments import verdicts as V
from smlib.experiments.records import unit_key
from smlib.experiments.swersky2011_plots import ESTIMATORS, curves_of

__all__ = ["claims", "rules_table_rows", "rule_curvature", "rule_overfits", "rule_gabor", "rule_mean_structure"]


# ---------------------------------------------------------------------- the rules, as functions of their numbers
def rule_curvature(d: dict) -> bool:
    """Fig. 1a: Δcurvature < 0 and more than half of Σ|Δterm| (d: the three terms' changes)."""
    total = sum(abs(v) for v in d.values())
    return bool(total > 0 and d["curvature"] < 0 and abs(d["curvature"]) / total > 0.5)


def rule_overfits(curve, tol: float) -> bool:
    """SM overfits: the last error exceeds the minimum over epochs ≥ 1 by more than ``tol``."""
    c = np.asarray(curve, dtype=float)
    return bool(c[-1] / np.nanmin(c[1:]) - 1 > tol)


def rule_gabor(frac: float) -> bool:
    """Fig. 2b: at least half of the sampled covariance filters Gabor-like."""
    return frac >= 0.5


def rule_mean_structure(median_r2: float) -> bool:
    """Fig. 2a: the sampled mean filters' median Gabor R² ≥ 0.7."""
    return median_r2 >= 0.7


def rules_table_rows(record) -> list[tuple[str, str, str]]:
    """Each rule of :func:`claims` on the untrained model and on a planted positive (the chapter's rules table)."""
    say = lambda ok: V.HOLDS if ok else V.FAILS  # noqa: E731
    ref, tol = record["summary"]["reference"], record["config"]["tol"]
    flat, planted = [1.0, 1.0, 1.0], [1.0, 0.5, 0.8]
    rows = [("SM: Δcurvature < 0, > ½ of Σ|Δterm| (Fig. 1a)",
             say(rule_curvature({"reconstruction": 0.0, "variance": 0.0, "curvature": 0.0})) + " (no change)",
             say(rule_curvature({"reconstruction": 1.0, "variance": 1.0, "curvature": -10.0})) + " (Δ +1, +1, −10)"),
            (f"overfits: last error > (1 + {tol:g}) × minimum over epochs ≥ 1", say(rule_overfits(flat, tol)) + " (flat curve)",
             say(rule_overfits(planted, tol)) + " (U-shaped curve)"),
            ("ranking: SM within tol of the lowest minimum (Fig. 1e–f)",
             say(V.lowest_with_tolerance({"SM": [1.0, 1.0], "CD": [1.0, 1.0]}, "SM", tol)["holds"]) + " (all equal: a tie passes)",
             say(V.lowest_with_tolerance({"SM": [0.5, 0.5], "CD": [1.0, 1.0]}, "SM", tol)["holds"]) + " (SM lower)")]
    for key, rule, label in (("C_gabor", rule_gabor, "≥ ½ of C filters Gabor-like (Fig. 2b)"),
                             ("W_gabor", rule_mean_structure, "median R² of W filters ≥ 0.7 (Fig. 2a)")):
        u, p = ref.get("untrained", {}).get(key), ref.get("planted")
        field = "frac_gabor" if key == "C_gabor" else "median_r2"
        rows.append((label, f"{say(rule(u[field]))} ({u[field]:.2f})" if u else "not recorded",
                     f"{say(rule(p[field]))} ({p[field]:.2f}, planted Gabors + 5 % noise)" if p else "not recorded"))
    return rows


def claims(record) -> list[dict]:
    """The paper's claims, each with its rule, the numbers behind it, its health gates and a verdict.

    Rules by `smlib.experiments.verdicts`; gates by `smlib.experiments.swersky2011_gates`: the Theorem-1
    terms (on training patches) need live filters; the gap and the denoisers read the test photographs
    and need them from the training distribution; the MAP denoiser needs its λ inside its grid; a
    denoising minimum must come after epoch 0 (minima are taken over epochs ≥ 1); the filter measures
    need live filters and a distance from their threshold above the replicates' noise.
    """
    cfg, tol = record["config"], record["config"]["tol"]
    seeds = cfg["seeds"]
    unit = lambda e, s: record["units"][unit_key(e, seed=s)]  # noqa: E731
    ref = record["summary"]["reference"]
    out = []

    def delta(e, s, term):
        c = unit(e, s)["curves"][term]
        return c[-1] - c[0]

    # Fig. 1a: most of SM's training goes into the curvature term
    conds, nums = [], []
    for s in seeds:
        d = {t: delta("SM", s, t) for t in ("reconstruction", "variance", "curvature")}
        share = abs(d["curvature"]) / sum(abs(v) for v in d.values())
        conds.append(rule_curvature(d))
        nums.append(f"seed {s}: Δrec {d['reconstruction']:+.1f}, Δvar {d['variance']:+.1f}, "
                    f"Δcurv {d['curvature']:+.1f} (share {share:.2f})")
    zero = {"reconstruction": 0.0, "variance": 0.0, "curvature": 0.0}
    out.append(V.claim("sm-curvature", "SM training goes mostly into maximising the curvature (Fig. 1a)",
                       "Δcurvature < 0 and > ½ of Σ|Δterm|, every seed", nums, V.verdict(conds),
                       gates=[G.controls(rule_curvature, zero, {**zero, "curvature": -1.0})]))
    # Fig. 1b: SMD changes the curvature less than SM
    conds = [abs(delta("SMD", s, "curvature")) < abs(delta("SM", s, "curvature")) for s in seeds]
    out.append(V.claim("smd-less-curvature", "SMD puts less emphasis on changing the curvature than SM (Fig. 1b)",
                       "|Δcurvature| of SMD < that of SM, every seed",
                       [f"seed {s}: SMD {delta('SMD', s, 'curvature'):+.1f}, SM {delta('SM', s, 'curvature'):+.1f}"
                       for s in seeds], V.verdict(conds), gates=[G.dead(record, ["SMD"])]))
    # Fig. 1c: AE leaves the curvature almost invariant (an invariance claim: judged only on live filters)
    conds, nums = [], []
    for s in seeds:
        c = unit("AE", s)["curves"]["curvature"]
        rel = abs(c[-1] - c[0]) / abs(c[0])
        conds.append(rel < 0.10)
        nums.append(f"seed {s}: {c[0]:.1f} → {c[-1]:.1f} ({100 * rel:.0f}%)")
    out.append(V.claim("ae-curvature-invariant", "AE leaves the curvature almost invariant (Fig. 1c)",
                       "|Δcurvature| < 10% of its start, every seed", nums, V.verdict(conds), gates=[G.dead(record, ["AE"])]))
    # Fig. 1d: the gap grows for most estimators; SM raises it, SMD lowers it (on the test photographs)
    dg = {e: [c[-1] - c[0] for c in curves_of(record, e, key="gap")] for e in ESTIMATORS}
    up = [e for e in ESTIMATORS if all(v > 0 for v in dg[e])]
    out.append(V.claim("gap-grows", "For most estimators the free-energy gap grows during training (Fig. 1d)",
                       "Δgap > 0 in every replicate for at least 4 of the 6",
                       [", ".join(f"{e} {np.mean(dg[e]):+.1f}" for e in ESTIMATORS)], V.verdict([len(up) >= 4]),
                       gates=[G.shift(record)]))
    out.append(V.claim("sm-raises-smd-lowers-gap", "SM raises the gap, SMD lowers it (Fig. 1d)",
                       f"Δgap > 0 for SM and < 0 for SMD (σ = {cfg['smd_sigma']:g}), every replicate",
                       [f"SM {min(dg['SM']):+.1f}…{max(dg['SM']):+.1f}, SMD {min(dg['SMD']):+.1f}…{max(dg['SMD']):+.1f}"],
                       V.verdict([all(v > 0 for v in dg["SM"]), all(v < 0 for v in dg["SMD"])]),
                       gates=[G.shift(record), G.dead(record, ["SMD"])]))
    # Fig. 1e-f: denoising; minima over epochs ≥ 1 (epoch 0 is the untrained model)
    mins, lasts = {}, {}
    keys = ["mf_mse", "map_mse"]
    if "step_mse_0" in record["units"][unit_key("SM", seed=seeds[0])]["curves"]:  # eq. 17, beside the paper's MF
        keys.insert(1, "step_mse")
    for key in keys:
        reps = {e: curves_of(record, e, key=key) for e in ESTIMATORS}
        mins[key] = {e: [float(np.nanmin(c[1:])) for c in reps[e]] for e in ESTIMATORS}
        lasts[key] = {e: [c[-1] for c in reps[e]] for e in ESTIMATORS}
    step = mins.pop("step_mse", None)  # beside the paper's claims, not part of "both denoisers"
    lasts.pop("step_mse", None)
    over = {k: {e: [la / mi - 1 for la, mi in zip(lasts[k][e], mins[k][e])] for e in ESTIMATORS} for k in mins}
    label = {"mf_mse": "MF", "step_mse": "one-step (eq. 17)", "map_mse": "MAP"}

    def den_gates(estimators, ranking=False):
        g = [G.shift(record, "denoise"), G.map_lambda(record, estimators), G.improved(record, estimators),
             G.lr_edge(record, estimators)]
        g.append(G.baselines(record, {label[k]: {e: mins[k][e] for e in estimators} for k in mins}))
        if ranking:  # a tolerance ranking passes a tie: run it on the untrained model (every estimator's epoch 0)
            epoch0 = {e: [c[0] for c in curves_of(record, e, key="mf_mse")] for e in ESTIMATORS}
            planted = {e: [v * (0.5 if e == "SM" else 1.0) for v in c] for e, c in epoch0.items()}  # SM's halved
            g.append(V.controls(V.lowest_with_tolerance(epoch0, "SM", tol)["holds"],
                                V.lowest_with_tolerance(planted, "SM", tol)["holds"], "ranking rule"))
        return g

    lead = {k: V.lowest_with_tolerance(mins[k], "SM", tol) for k in mins}
    out.append(V.claim("sm-lowest-denoising", "SM reaches the lowest denoising error, with both denoisers (Fig. 1e–f)",
                       f"SM's minimum over epochs ≥ 1 is within {100 * tol:g}% of the lowest, every replicate",
                       [f"{label[k]}: SM {np.mean(mins[k]['SM']):.4f}; best other "
                       f"{min((np.mean(v), e) for e, v in mins[k].items() if e != 'SM')[1]} "
                       f"{min(np.mean(v) for e, v in mins[k].items() if e != 'SM'):.4f}; worst lead {lead[k]['worst_margin']:+.3f}"
                       for k in mins], V.verdict([lead[k]["holds"] for k in mins]), gates=den_gates(ESTIMATORS, True)))
    if step is not None:  # ours: eq. 17's one-step reconstruction (Tweedie's denoiser for SMD at σ = 1)
        lead_s = V.lowest_with_tolerance(step, "SM", tol)
        out.append(V.claim("sm-lowest-one-step", "(ours, beside Fig. 1e) SM is lowest also with the eq.-17 one-step reconstruction",
                           f"SM's minimum over epochs ≥ 1 within {100 * tol:g}% of the lowest, every replicate",
                           [", ".join(f"{e} {np.mean(v):.4f}" for e, v in step.items())], V.verdict([lead_s["holds"]]),
                           gates=[G.shift(record, "denoise"), G.improved(record, ESTIMATORS, ("step_mse",)),
                                  G.baselines(record, {label["step_mse"]: step})]))
    out.append(V.claim("sm-overfits", "…but SM quickly overfits (Fig. 1e–f)",
                       f"SM's last error > its minimum over epochs ≥ 1 by > {100 * tol:g}%, every replicate",
                       [f"{label[k]}: +{100 * min(over[k]['SM']):.1f}% … +{100 * max(over[k]['SM']):.1f}%" for k in mins],
                       V.verdict([min(over[k]["SM"]) > tol for k in mins]), gates=den_gates(["SM"])))
    conds = []
    for k in mins:
        for e in ("PCD", "FPCD"):
            conds += [all(a > b for a, b in zip(mins[k][e], mins[k]["SM"])),
                      all(tol < o < osm for o, osm in zip(over[k][e], over[k]["SM"]))]
    out.append(V.claim("pcd-fpcd-lesser-overfit", "PCD and FPCD do not match SM's minimum and overfit, to a lesser extent (Fig. 1e–f)",
                       f"minimum above SM's and {100 * tol:g}% < overfit < SM's, every replicate, both denoisers",
                       [f"{label[k]}: overfit PCD {100 * np.mean(over[k]['PCD']):.1f}%, FPCD "
                       f"{100 * np.mean(over[k]['FPCD']):.1f}%, SM {100 * np.mean(over[k]['SM']):.1f}%" for k in mins],
                       V.verdict(conds), gates=den_gates(["PCD", "FPCD", "SM"])))
    conds = [max(over[k][e]) <= tol for k in mins for e in ("CD", "SMD")]
    out.append(V.claim("cd-smd-no-overfit", "CD and SMD do not appear to overfit (Fig. 1e–f)",
                       f"last error within {100 * tol:g}% of the minimum over epochs ≥ 1, every replicate; an invariance "
                       "claim, judged only where the error improved",
                       [f"{label[k]}: CD ≤ {100 * max(over[k]['CD']):.1f}%, SMD ≤ {100 * max(over[k]['SMD']):.1f}%" for k in mins],
                       V.verdict(conds), gates=den_gates(["CD", "SMD"])))
    conds = [all(a > (1 + tol) * b for a, b in zip(mins[k]["SMD"], mins[k]["SM"])) for k in mins]
    out.append(V.claim("smd-higher-than-sm", "SMD's minimum error is significantly higher than SM's (Fig. 1e–f)",
                       f"SMD's minimum over epochs ≥ 1 > SM's by more than {100 * tol:g}%, every replicate, both denoisers",
                       [f"{label[k]}: SMD/SM − 1 = {100 * (np.mean(mins[k]['SMD']) / np.mean(mins[k]['SM']) - 1):+.1f}%"
                       for k in mins], V.verdict(conds), gates=den_gates(["SMD", "SM"])))
    # Fig. 2
    frac = {e: [unit(e, s)["filters"]["C_gabor"]["frac_gabor"] for s in seeds] for e in ESTIMATORS}
    n_g = unit("SM", seeds[0])["filters"]["C_gabor"]["n"]
    good = [min(frac[e]) >= 0.5 for e in ESTIMATORS if e != "AE"]
    untrained, planted = ref.get("untrained"), ref.get("planted")
    out.append(V.claim("gabor-covariance", "All methods except AE learn localised Gabor-like covariance filters (Fig. 2b)",
                       "≥ ½ of the sampled C filters Gabor-like (R² ≥ 0.7, width ≤ side/4) for each non-AE estimator, < ½ for AE",
                       [", ".join(f"{e} {np.mean(frac[e]):.2f}" for e in ESTIMATORS)],
                       V.verdict(good + [max(frac["AE"]) < 0.5]),
                       gates=[G.dead(record, ESTIMATORS), G.noise(frac, 0.5, V.binomial_se(0.5, n_g), "Gabor fraction"),
                              G.controls(rule_gabor, untrained and untrained["C_gabor"]["frac_gabor"],
                                         planted and planted["frac_gabor"], "Gabor rule")]))
    r2 = {e: [unit(e, s)["filters"]["W_gabor"]["median_r2"] for s in seeds] for e in ESTIMATORS}
    conds = [min(r2[e]) >= 0.7 for e in ("PCD", "FPCD")] + [max(r2[e]) < 0.7 for e in ("SM", "SMD", "CD", "AE")]
    out.append(V.claim("mean-filter-structure", "Only PCD and FPCD show structure in the mean filters (Fig. 2a)",
                       "median Gabor R² of the sampled W filters ≥ 0.7 for PCD and FPCD, < 0.7 for the other four",
                       [", ".join(f"{e} {np.mean(r2[e]):.2f}" for e in ESTIMATORS)], V.verdict(conds),
                       gates=[G.dead(record, ESTIMATORS, "W"), G.noise(r2, 0.7, G.median_se(record) or G.replicate_se(r2), "median R²"),
                              G.controls(rule_mean_structure, untrained and untrained["W_gabor"]["median_r2"],
                                         planted and planted["median_r2"], "mean-filter rule")]))
    done = G.finished(record, ESTIMATORS)  # a diverged run's final values are not the protocol's: every claim
    for c in out:
        c["gates"].append(done.asdict())
        c["verdict"] = V.gated(c["ungated"], [V.Gate(**g) for g in c["gates"]])
    return out
