"""smlib.book.helpers: the helpers the chapters share (random parameters, hidden states, the
free-energy-only wrapper, disproof at random rational points)."""
import sympy as sp
import torch

from smlib import objectives
from smlib.book.helpers import FreeEnergyOnly, all_states, at_random_rationals, covariance_test_models, randomise
from smlib.models import GRBM, MCRBM, MPoT


def test_randomise_matches_the_global_and_generator_streams():
    m = torch.nn.Linear(3, 2).double()
    torch.manual_seed(5)
    randomise(m, 0.7)
    torch.manual_seed(5)
    ref = [0.7 * torch.randn_like(p) for p in m.parameters()]
    assert all(torch.equal(p, r) for p, r in zip(m.parameters(), ref))
    g = torch.Generator().manual_seed(2)
    before = [p.detach().clone() for p in m.parameters()]
    randomise(m, 0.1, generator=g, add=True)
    g = torch.Generator().manual_seed(2)
    assert all(torch.equal(p, b + 0.1 * torch.randn(b.shape, generator=g, dtype=b.dtype))
               for p, b in zip(m.parameters(), before))


def test_all_states_enumerates_each_binary_vector_once():
    s = all_states(4)
    assert s.shape == (16, 4) and s.dtype == torch.get_default_dtype()
    assert len({tuple(r.tolist()) for r in s}) == 16 and set(s.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(s[5], torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_free_energy_only_uses_autograd_not_the_closed_form_score():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    for model in (GRBM(4, 3, sigma=0.8), MCRBM(4, 3, 2, 2), MPoT(4, 2, 2, gamma=1.7)):
        model = randomise(model.double(), 0.6, generator=g)
        wrapped = FreeEnergyOnly(model)
        assert (wrapped.score(x) - model.score(x)).abs().max() < 1e-12
        j_closed = objectives.sm(model, x)
        j_auto = objectives.sm_generic(wrapped, x)
        assert abs(j_auto - j_closed) < 1e-10 * max(1.0, abs(j_closed.item()))
        # a wrong closed-form score moves sm_generic(model) but not the wrapper
        model.score = lambda v, s=model.score: 2 * s(v)
        assert abs(objectives.sm_generic(model, x) - j_closed) > 1e-3
        assert abs(objectives.sm_generic(wrapped, x) - j_auto) < 1e-12


def test_at_random_rationals_disproves_false_identities_only():
    x, y = sp.symbols("x y", real=True)
    s = sp.Symbol("s", positive=True)
    f = sp.Function("f")
    assert any(v != 0 for v in at_random_rationals(sp.diff(f(x) * f(y), x) - f(x) * sp.diff(f(y), y)))
    assert all(v == 0 for v in at_random_rationals(sp.diff(f(x) ** 2, x) - 2 * f(x) * sp.diff(f(x), x)))
    assert all(v == 0 for v in at_random_rationals(sp.sqrt(s**2) - s))        # s > 0 is respected
    assert all(isinstance(v, sp.Rational) for v in at_random_rationals(x / (1 + y**2)))


def test_sympy_logistic_functions_differentiate_as_their_formulas():
    from smlib.book.helpers import sigm, softplus

    x = sp.Symbol("x", real=True)
    for f in (sigm(x), softplus(x), sigm(2 * x + 1) * softplus(x**2)):
        rule = sp.diff(f, x).rewrite(sp.exp)            # the declared derivative rules
        formula = sp.diff(f.rewrite(sp.exp), x)         # differentiate the explicit formulas
        assert sp.simplify(rule - formula) == 0
    assert sp.diff(softplus(x), x) == sigm(x)
    assert abs(float(sigm(x).rewrite(sp.exp).subs(x, 0.3)) - 1 / (1 + 2.718281828459045**-0.3)) < 1e-12
    import smlib.book.helpers as helpers
    assert helpers.sigm is sigm                           # built once, the same class everywhere


def test_covariance_test_models_are_reproducible_random_and_leave_the_global_rng_alone():
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    a = covariance_test_models(5, 4, 3, 2, 2, 1.7, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = covariance_test_models(5, 4, 3, 2, 2, 1.7, seed=0)
    c = covariance_test_models(5, 4, 3, 2, 2, 1.7, seed=1)
    for m_a, m_b, m_c in zip(a, b, c):
        pa, pb, pc = (torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in (m_a, m_b, m_c))
        assert torch.equal(pa, pb) and not torch.equal(pa, pc) and pa.std() > 0.3    # every parameter drawn
    assert (a[0].P <= 0).all() and a[1].gamma == 1.7 and a[0].n_visible == a[1].n_visible == 5


def test_record_json_keeps_lists_on_one_line_and_parses_back_exactly():
    import json
    import math

    from smlib.book.results import dumps

    doc = {"b": {"curve": [0.1 * i for i in range(200)], "nan": [math.nan, 1.0], 2: "int key", True: None},
           "a": [[1, 2], [3, 4.5]], "empty": {}, "rows": [{"x": 1}, {"y": [1e-300, -0.0]}], "s": "q\"uote"}
    text = dumps(doc)
    canonical = lambda t: json.dumps(json.loads(t), sort_keys=True)  # noqa: E731  (NaN compares as text)
    assert canonical(text) == canonical(json.dumps(doc))
    assert len(text.splitlines()) < 30                      # json.dumps(indent=1) gives > 200 lines here
    assert dumps(doc, sort_keys=False).index('"b"') < dumps(doc, sort_keys=False).index('"a"')
