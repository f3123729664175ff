r"""The claims of Saremi et al. (2018), Fig. 1, read from a `deen_2d` record: rules, health gates, verdicts.

Every rule is fixed before looking at the numbers; conditions are per data set (both must hold for
"holds", one for "partly") and must hold in every seed. Before a rule reads a run, the health gates
of `smlib.experiments.verdicts` check it: a DSM run whose final L_DEEN = 2σ⁴J_DSM is within 2 % of
the zero-score level σ²d learnt nothing; a CD run whose θ moved less than 1 % of its norm shows its
initialisation; a rule that the untrained model already passes, or that a planted positive cannot
pass, decides nothing.

**Mode collapse, judged against the initialisation.** A density q_θ *collapsed relative to* its
start q_θ₀ when some part k of the truth (a mixture component, an arc of the spiral) lost more than
half of the mass it had at the start, m_k(θ)/m_k(θ₀) < ½, or when the mass of q_σ lying where
q_θ < q_σ/100 (the "missed" mass) grew by more than 0.05. The untrained model (q_θ = q_θ₀) can never
pass it; a planted collapse — q_σ with one part removed — always does.
"""
from __future__ import annotations

import numpy as np

from smlib.experiments import verdicts as V
from smlib.experiments.deen_gates import zero_score_gate
from smlib.experiments.records import unit_key

__all__ = ["DATASETS", "cd_reading", "claims", "collapsed", "planted_collapse", "mode_weights", "rules_table_rows"]

DATASETS = ("spiral", "mixture")


def _list(values, fmt=".2f"):
    return ", ".join(format(v, fmt) for v in values)


def _at(curve, step):
    """The logged value nearest to ``step`` (and that step)."""
    i = int(np.argmin([abs(s - step) for s in curve["step"]]))
    return curve["kl_q"][i], curve["step"][i]


def collapsed(end: dict, start: dict) -> bool:
    """Mode collapse of ``end`` relative to ``start`` (each ``{"masses", "missed"}``): a part lost more
    than half its starting mass, or the missed mass of q_σ grew by more than 0.05."""
    lost = min(a / b for a, b in zip(end["masses"], start["masses"]))
    return bool(lost < 0.5 or end["missed"] - start["missed"] > 0.05)


def planted_collapse(true_masses) -> dict:
    """q_σ with its heaviest part removed: the other parts' masses renormalised, the removed part's
    mass counted as missed (the parts are well separated at σ)."""
    m = np.asarray(true_masses, dtype=float)
    k = int(np.argmax(m))
    masses = np.where(np.arange(m.size) == k, 0.0, m / (1 - m[k]))
    return {"masses": masses.tolist(), "missed": float(m[k])}


def mode_weights(record, kind: str = "DEEN", ds: str = "mixture") -> list[dict]:
    """The mass q_θ puts on each part of the truth, per seed, beside its initialisation's and the truth's."""
    true = record["summary"]["reference"][ds]["true_masses"]
    return [{"seed": s, "start": u["start_modes"]["masses"], "end": u["masses"], "truth": true,
             "tv_start": u["start_modes"]["tv"], "tv_end": u["tv"]}
            for s in record["config"]["seeds"] for u in [record["units"][unit_key(kind, ds, seed=s)]]]


def _trivial(record, kind, ds):
    """The zero-score gate of one kind of DSM run (its logs are J_DSM; L_DEEN = 2σ⁴ J_DSM) against σ²d, d = 2."""
    sigma = record["config"]["sigma"]
    gates = [zero_score_gate([2 * sigma**4 * v for v in record["units"][unit_key(kind, ds, seed=s)]["loss"]["loss"]], sigma, 2,
                             f"L_DEEN of {kind} on the {ds} (seed {s})") for s in record["config"]["seeds"]]
    bad = [g for g in gates if not g.ok]
    return bad[0] if bad else V.Gate("trivial level", True, f"{kind}: every final L_DEEN below 0.98 σ²d")


def _moved(record, kind):
    """The θ-moved gate over every seed and data set of one CD kind."""
    rel = [record["units"][unit_key(kind, ds, seed=s)].get("theta_rel_change") for ds in DATASETS for s in record["config"]["seeds"]]
    if None in rel:
        return V.missing("θ moved", f"‖θ − θ₀‖/‖θ₀‖ of {kind}")
    g = V.theta_moved(min(rel))
    return V.Gate(g.name, g.ok, f"{kind}, smallest over runs: {g.reason}")




def _alive(rel_by_ds: dict, what: str):
    """Health gate: every run's ∂ψ/∂x is nonzero on q_σ (a relative curl exists); a network that died in
    training (``rel_curl`` None) makes the curl claim "not testable"."""
    dead = [f"{ds} seed {i}" for ds, v in rel_by_ds.items() for i, r in enumerate(v) if r is None]
    return V.Gate("network alive", not dead, f"{what}: " + (f"∂ψ/∂x = 0 on q_σ for {', '.join(dead)}" if dead
                                                            else "∂ψ/∂x ≠ 0 on q_σ in every run"))


def cd_reading(opt: dict) -> tuple[str, str]:
    """Claim id and label of a CD run from its recorded optimiser settings (not from its unit key, which
    meant plain SGD in the first record and Adam since): Adam is the paper's reading of eq. 27, plain
    SGD of the batch mean or of the batch sum a labelled variant."""
    if opt["optimizer"] == "adam":
        return "cd-mode-collapse", f" — Adam, lr {opt['lr']:g} (the paper's optimiser: our reading)"
    red = opt.get("reduction", "mean")
    return (f"cd-mode-collapse-{opt['optimizer']}" + ("-sum" if red == "sum" else ""),
            f" — labelled variant: plain {opt['optimizer'].upper()}, batch {red}, lr {opt['lr']:g}")


def rules_table_rows(record) -> list[tuple[str, str, str]]:
    """The mode-collapse rule on the untrained model (each run's start) and on a planted collapse, per data set."""
    say = lambda ok: V.HOLDS if ok else V.FAILS  # noqa: E731
    rows = []
    for ds in DATASETS:
        start = record["units"][unit_key("DEEN", ds, seed=record["config"]["seeds"][0])]["start_modes"]
        planted = planted_collapse(record["summary"]["reference"][ds]["true_masses"])
        rows.append((f"mode collapse relative to the start ({ds})", say(collapsed(start, start)) + " (q_θ = q_θ₀)",
                     say(collapsed(planted, start)) + f" (q_σ without its heaviest part, masses {_list(planted['masses'])})"))
    return rows


def claims(record) -> list[dict]:
    """The claims of the paper's 2-D experiments, each with its rule, numbers, health gates and verdict.

    ``tol`` is the relative tolerance of the rankings. The zero curl of DEEN is decided by the
    architecture (ψ = −∇E is a gradient by construction) and labelled so.
    """
    cfg, S = record["config"], record["summary"]
    seeds, tol, eps64 = cfg["seeds"], cfg["tol"], float(np.finfo(np.float64).eps)
    u = lambda k, ds, s: record["units"][unit_key(k, ds, seed=s)]  # noqa: E731
    ref = S["reference"]
    deen_ok = [_trivial(record, "DEEN", ds) for ds in DATASETS]
    planted_ok = all(0.0 < 0.25 * ref[ds]["kl_q_gauss"] for ds in DATASETS)  # q_θ = q_σ itself has KL 0
    out = []
    # Fig. 1 a-d: DEEN learns the energy (at the end, and after the paper's 1000 iterations)
    for cid, label, at in (("deen-energy-end", "at the end of training (Fig. 1 a–d)", cfg["n_steps"]),
                           ("deen-energy-paper-iterations", f"after {cfg['paper_iterations']} iterations (Fig. 1 caption)",
                            cfg["paper_iterations"])):
        conds, nums, start_ok = [], [], []
        for ds in DATASETS:
            vals = [_at(u("DEEN", ds, s)["curve"], at) for s in seeds]
            g = ref[ds]["kl_q_gauss"]
            conds.append(all(v < 0.25 * g for v, _ in vals))
            start_ok.append(any(u("DEEN", ds, s)["curve"]["kl_q"][0] < 0.25 * g for s in seeds))
            nums.append(f"{ds}: KL(q_σ‖q_θ) {', '.join(f'{v:.3f}' for v, _ in vals)} at step {vals[0][1]} "
                        f"vs best Gaussian {g:.3f}")
        out.append(V.claim(cid, f"DEEN learns the energy of the spiral and the mixture, {label}",
                           "KL(q_σ‖q_θ) < ¼ of the moment-matched Gaussian's, every seed, per data set",
                           nums, V.verdict(conds), gates=deen_ok + [V.controls(any(start_ok), planted_ok, "KL rule (planted: q_σ, KL 0)")]))
    conds, nums = [], []
    for ds in DATASETS:
        ratio = [u("DEEN", ds, s)["curve"]["kl_q"][-1] / min(u("DEEN", ds, s)["curve"]["kl_q"]) for s in seeds]
        conds.append(all(r <= 1.5 for r in ratio))
        nums.append(f"{ds}: final / minimum KL {', '.join(f'{r:.2f}' for r in ratio)}")
    out.append(V.claim("deen-training-curves", "DEEN has well-behaved training curves (Sec. 4)",
                       "the last logged KL(q_σ‖q_θ) ≤ 1.5 × its minimum along the run, every seed, per data set",
                       nums, V.verdict(conds), gates=deen_ok))
    # Fig. 1 g-h: curl
    rel = {k: {ds: [u(k, ds, s)[key]["rel_curl"] for s in seeds] for ds in DATASETS}
           for k, key in (("DEEN", "curl_float64"), ("scorenet", "curl_float32"))}
    worst = {ds: max((v for v in rel["DEEN"][ds] if v is not None), default=float("nan")) for ds in DATASETS}
    out.append(V.claim("deen-zero-curl", "DEEN's score has zero curl: it is computed from the energy (Sec. 4)",
                       "relative RMS curl in float64 < 1000 ε₆₄, every seed (ψ = −∇E: a gradient by construction)",
                       [f"{ds}: ≤ {worst[ds]:.1e}" for ds in DATASETS], V.verdict(v < 1e3 * eps64 for v in worst.values()),
                       decided_by="architecture", gates=[_alive(rel["DEEN"], "DEEN")]))
    net_ok = [_trivial(record, "scorenet", ds) for ds in DATASETS] + [_alive(rel["scorenet"], "score network")]
    least = {ds: min((v for v in rel["scorenet"][ds] if v is not None), default=float("nan")) for ds in DATASETS}
    out.append(V.claim("scorenet-curl", "A score network trained with the same objective has curl far from zero (Fig. 1 g–h)",
                       "relative RMS curl (RMS curl / RMS ‖∂ψ/∂x‖_F) on points from q_σ > 0.05, every seed, per data set",
                       [f"{ds}: ≥ {least[ds]:.3f}" for ds in DATASETS], V.verdict(v > 0.05 for v in least.values()),
                       gates=net_ok))
    conds, nums = [], []
    for ds in DATASETS:
        f = [(u("scorenet", ds, s)["fisher_q"], u("DEEN", ds, s)["fisher_q"]) for s in seeds]
        conds.append(all(a > (1 + tol) * b for a, b in f))
        nums.append(f"{ds}: " + ", ".join(f"{a:.3f} vs {b:.3f}" for a, b in f))
    out.append(V.claim("scorenet-worse-score", "…and learns a worse score than DEEN (\"DSM's failure\", Fig. 1 g–h)",
                       f"Fisher divergence to q_σ of the score network > (1 + {tol:g}) × DEEN's, every seed, per data set",
                       nums, V.verdict(conds), gates=deen_ok + net_ok))
    # Fig. 1 i-j: CD with one Langevin step, judged against its initialisation (DEEN's)
    for kind in ["CD"] + [f"CD_{o}" for o in cfg["cd_variants"]]:
        conds, nums, untrained, planted = [], [], [], []
        for ds in DATASETS:
            cd, de = [u(kind, ds, s) for s in seeds], [u("DEEN", ds, s) for s in seeds]
            conds.append(all(collapsed(a, a["start_modes"]) and not collapsed(b, b["start_modes"]) for a, b in zip(cd, de)))
            untrained += [collapsed(a["start_modes"], a["start_modes"]) for a in cd]
            planted += [collapsed(planted_collapse(ref[ds]["true_masses"]), a["start_modes"]) for a in cd]
            nums.append(f"{ds}: part masses / start, smallest: {kind} "
                        f"{_list(min(x / y for x, y in zip(a['masses'], a['start_modes']['masses'])) for a in cd)}, "
                        f"DEEN {_list(min(x / y for x, y in zip(b['masses'], b['start_modes']['masses'])) for b in de)}; "
                        f"missed mass {kind} {_list(a['start_modes']['missed'] for a in cd)} (start) → "
                        f"{_list(a['missed'] for a in cd)}; KL(q_σ‖q_θ) {kind} {cd[0]['curve']['kl_q'][0]:.2f} (start) → "
                        f"{_list(a['kl_q'] for a in cd)}")
        opt = u(kind, DATASETS[0], seeds[0])["optimizer"]
        cid, label = cd_reading(opt)
        nums.append("final KL(q_σ‖q_θ), mean of the last 5 logs, mixture: "
                    f"{kind} {_list(np.mean(u(kind, 'mixture', s)['curve']['kl_q'][-5:]) for s in seeds)} vs DEEN "
                    f"{_list(np.mean(u('DEEN', 'mixture', s)['curve']['kl_q'][-5:]) for s in seeds)}")
        out.append(V.claim(cid, f"CD with one Langevin step shows severe mode collapse on both data sets (Fig. 1 i–j){label}",
                           "collapsed relative to the initialisation (DEEN's): a part of the truth lost > ½ of its starting "
                           "mass, or the mass of q_σ where q_θ < q_σ/100 grew by > 0.05. CD collapsed, DEEN did not; every "
                           f"seed, per data set; update: {opt['optimizer']}, lr {opt['lr']:g}, batch "
                           f"{opt.get('reduction', 'mean')}", nums, V.verdict(conds),
                           gates=[_moved(record, kind), V.controls(any(untrained), all(planted), "collapse rule")]))
    return out
