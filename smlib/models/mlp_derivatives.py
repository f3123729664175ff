r"""Exact second derivatives of the DEEN energy in its first layer's pre-activation space.

The energy of `smlib.models.MLPEnergy`, with elementwise φ and L hidden layers of widths n_l
(k = n₁ the first):

    z₁ = W₁x + b₁,   a_l = φ(z_l),   z_{l+1} = W_{l+1} a_l + b_{l+1},   E = w·a_L + b.

It is E = f(z₁) with a linear first layer, so (`smlib.models.first_layer`)

    ΔE = tr(H G),   ∂²E/∂xᵢ² = wᵢᵀHwᵢ,   H = ∇²_{z₁} f  (k × k),   G = W₁W₁ᵀ,   wᵢ = W₁[:, i].

:func:`forward_laplacian` evaluates tr(HG) = Σₘ vₘᵀHvₘ for the r = min(d, k) rows of a factor V of
G (VᵀV = G) by forward second-order propagation of all r directions at once. With Ż_l the
(n_l × r) directional derivatives of z_l (Ż₁ = Vᵀ), s_l = Σₘ (Ż_l)²_{·m} and Δz_l = Σₘ vₘᵀ∇²z_l vₘ
(Δz₁ = 0, the first layer is linear):

    Δa_l = φ''(z_l) ⊙ s_l + φ'(z_l) ⊙ Δz_l,    Ż_{l+1} = W_{l+1} diag(φ'(z_l)) Ż_l,
    Δz_{l+1} = W_{l+1} Δa_l,                   ΔE = w · Δa_L.                          (F)

Cost per sample: r·Σ_{l≥2} n_l n_{l−1} multiply–adds for the Ż products (the rest is O(Σ n_l n_{l−1})),
plus the QR of W₁ᵀ once per batch. When d > k the factor V = R is triangular, and the first product
skips the zero rows of Ż₁ = Rᵀ block by block (:func:`_direction_blocks`: 5/8 of k²·n₂ with four
blocks, also in its two reverse products). Each step Ż_l → (Ż_{l+1}, s_{l+1}) is one
:class:`DirectionProduct` whose backward touches the (n_l, B, r) directions as few times as it can
(∂s/∂Ż = 2Ż in one pass), except the last when there are r ≥ 16 directions: s_L only enters ΔE as w · (φ''(z_L) ⊙ s_L), whose
weights are known in the forward, so :class:`WeightedSquares` returns that sum and keeps
diag(w ⊙ φ''(z_L)) Ż_L instead of Ż_L (its backward makes no pass over the largest tensor). The
recursion's θ-gradient is then its matrix products plus a handful of passes over the directions
(`chapters/10_cost_scaling.md` measures it); on a CPU the large products go through
`smlib.models._gemm.mm` (oneDNN where available). Earlier versions of `MLPEnergy` ran the same recursion,
derived from the Gram matrix of ∂z₁/∂x (Ż₁ = Rᵀ with W₁ᵀ = QR); the pre-activation identity is
why its cost stopped growing with d once d exceeds k.

:func:`hessian_diagonal` returns ∂²E/∂xᵢ² by one of two exact routes, chosen by the multiply–add
counts of :func:`hessian_diagonal_macs`:

* ``"input"``: propagate ∂z_l/∂xᵢ and ∂²z_l/∂xᵢ² for all d axes, 2d·Σ_{l≥2} n_l n_{l−1} per sample;
* ``"preactivation"``: form H by the reverse (adjoint) recursion

      P_L = diag(φ''(z_L) ⊙ g_L),   P_l = diag(φ''(z_l) ⊙ g_l) + D_l W_{l+1}ᵀ P_{l+1} W_{l+1} D_l,
      H = P₁,  with g_L = w, g_{l−1} = W_lᵀ (φ'(z_l) ⊙ g_l) = ∂E/∂a_{l−1}, D_l = diag(φ'(z_l)),  (R)

  then wᵢᵀHwᵢ for all i (`first_layer.sandwich_diagonal`, d·k(k+1)/2 per sample).

Every function is differentiable in the parameters and works under ``torch.func`` transforms
(used by :func:`functional_score_divergence` for vmapped ensembles).
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from smlib._checks import check_choice
from smlib.models._gemm import mm
from smlib.models.activations import ACTIVATIONS
from smlib.models.first_layer import first_layer_factor, sandwich_diagonal

__all__ = [
    "DIAGONAL_ROUTES",
    "DirectionProduct",
    "WeightedSquares",
    "forward_laplacian",
    "gradient_and_laplacian",
    "functional_score_divergence",
    "hessian_diagonal",
    "hessian_diagonal_macs",
    "laplacian_macs",
    "mlp_parameters",
]

#: routes of :func:`hessian_diagonal`
DIAGONAL_ROUTES = ("auto", "input", "preactivation")


class DirectionProduct(torch.autograd.Function):
    r"""One step of recursion (F): Ż_{l+1} = W diag(φ'(z_l)) Ż_l and s_{l+1} = Σₘ (Ż_{l+1})²_{·m}, fused.

    ``apply(d1, Zdot, W)`` with d1 = φ'(z_l) (B, n_l), Ż_l (n_l, B, r) — or (n_l, r) when shared by
    the batch (Ż₁ = Vᵀ) — and W = W_{l+1} (n_{l+1}, n_l) returns Ż_{l+1} (n_{l+1}, B, r),
    s_{l+1} (B, n_{l+1}) and the scaled directions X = diag(φ') Ż_l (n_l, B, r; kept for the
    backward, not differentiable; a differentiable backward recomputes it). The directions are the largest tensors of the route, so the
    backward touches each of them as few times as it can: ∂s/∂Ż = 2Ż joins the incoming gradient in
    one ``addcmul`` (autograd's route through ``vecdot`` makes two products and a sum), and the
    forward sums the squares by ``vector_norm`` (one pass). The backward is made of differentiable
    operations, so higher derivatives and ``torch.func`` transforms (``generate_vmap_rule``) work.
    """

    generate_vmap_rule = True

    @staticmethod
    def _scaled(d1, Zdot):
        # φ' transposed to (n_l, B, 1) *contiguous*: a strided operand would give X its strides, and
        # the reshape for the matrix product would copy the largest tensor
        return d1.T.contiguous().unsqueeze(-1) * (Zdot.unsqueeze(1) if Zdot.ndim == 2 else Zdot)

    @staticmethod
    def forward(d1, Zdot, W):
        X = DirectionProduct._scaled(d1, Zdot)  # (n_l, B, r)
        n0, B, r = X.shape
        Z = mm(W, X.reshape(n0, B * r)).reshape(-1, B, r)  # one matrix product for the whole batch
        s = torch.linalg.vector_norm(Z, dim=-1).square().T
        return Z, s, X

    @staticmethod
    def setup_context(ctx, inputs, output):
        d1, Zdot, W = inputs
        Z, _, X = output
        ctx.mark_non_differentiable(X)
        ctx.set_materialize_grads(False)  # no zero tensor for the Ż of the last layer, which nothing uses
        ctx.save_for_backward(d1, Zdot, W, Z, X)

    @staticmethod
    def backward(ctx, gZ, gs, _gX):
        d1, Zdot, W, Z, X = ctx.saved_tensors
        n1, B, r = Z.shape
        n0 = W.shape[1]
        if gs is not None:  # ∂s/∂Ż = 2Ż, joined to the incoming gradient in one pass
            g2 = (2 * gs).T.contiguous().unsqueeze(-1)  # contiguous, as in _scaled: 10x faster product
            gZ = g2 * Z if gZ is None else torch.addcmul(gZ, g2, Z)
        if gZ is None:
            return None, None, None
        gZ = gZ.reshape(n1, B * r)
        if torch.is_grad_enabled():  # a differentiable backward (create_graph): X as a function of φ', Ż
            X = DirectionProduct._scaled(d1, Zdot)
        gW = mm(gZ, X.reshape(n0, B * r).T) if ctx.needs_input_grad[2] else None
        gd1, gZdot = _direction_input_grads(mm(W.T, gZ).reshape(n0, B, r), d1, Zdot)
        return gd1, gZdot, gW


def _direction_input_grads(gX, d1, Zdot):
    """(∂/∂φ', ∂/∂Ż_l) of X = diag(φ') Ż_l given ∂/∂X (n_l, B, r): one pass each over the directions."""
    d1t = d1.T.contiguous()  # contiguous (n_l, B): a strided operand sends bmm to a loop of copies
    if Zdot.ndim == 2:  # shared Ż₁: ∂/∂Ż₁ sums over the batch, one batched product
        return (gX * Zdot.unsqueeze(1)).sum(-1).T, torch.bmm(d1t.unsqueeze(1), gX).squeeze(1)
    return (gX * Zdot).sum(-1).T, gX * d1t.unsqueeze(-1)


class WeightedSquares(torch.autograd.Function):
    r"""The last step of recursion (F), contracted: t = Σᵢ cᵢ s_{L,i} with s_L = Σₘ (W diag(φ') Ż)²_{·m}.

    ``apply(d1, Zdot, W, c)`` with d1, Ż, W as in :class:`DirectionProduct` and c = w ⊙ φ''(z_L)
    (B, n_L) returns t (B,), the part w · (φ''(z_L) ⊙ s_L) of ΔE, plus two tensors kept for the
    backward (not differentiable): Y = diag(c) Ż_L (n_L, B, r) and s_L (B, n_L). Since c is known
    in the forward, ∂t/∂Ż_L = 2 g_t diag(c) Ż_L = 2 g_t Y needs no pass over Ż_L in the backward:
    Y is formed in place while Ż_L is still in cache, and the per-sample g_t goes on the smaller
    diag(φ') Ż_{L−1} (recomputed from Ż_{L−1}, which is kept anyway), so the backward is
    ∂W = 2 Y (diag(g_t φ') Ż_{L−1})ᵀ and ∂X = 2 Wᵀ Y scaled by g_t in the passes that follow.
    Differentiable backward (higher derivatives, ``generate_vmap_rule``) as in :class:`DirectionProduct`.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(d1, Zdot, W, c):
        X = DirectionProduct._scaled(d1, Zdot)
        n0, B, r = X.shape
        Y = mm(W, X.reshape(n0, B * r)).reshape(-1, B, r)
        s = torch.linalg.vector_norm(Y, dim=-1).square().T
        Y.mul_(c.T.contiguous().unsqueeze(-1))  # Ż_L is no longer needed: diag(c) Ż_L in its place
        return (c * s).sum(-1), Y, s

    @staticmethod
    def setup_context(ctx, inputs, output):
        d1, Zdot, W, c = inputs
        _, Y, s = output
        ctx.mark_non_differentiable(Y, s)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(d1, Zdot, W, c, Y, s)

    @staticmethod
    def backward(ctx, gt, _gY, _gs):
        d1, Zdot, W, c, Y, s = ctx.saved_tensors
        if gt is None:
            return None, None, None, None
        if torch.is_grad_enabled():  # a differentiable backward (create_graph): Y, s as functions of the inputs
            Z = DirectionProduct.apply(d1, Zdot, W)[0]
            s = torch.linalg.vecdot(Z, Z).T
            Y = c.T.unsqueeze(-1) * Z
        n1, B, r = Y.shape
        n0 = W.shape[1]
        g = (2 * gt).unsqueeze(-1)  # (B, 1): ∂t/∂Ż_L = g ⊙ Y
        gc = gt.unsqueeze(-1) * s if ctx.needs_input_grad[3] else None
        Yf = Y.reshape(n1, B * r)
        gW = None
        if ctx.needs_input_grad[2]:
            Xg = DirectionProduct._scaled(d1 * g, Zdot)  # diag(g φ') Ż_{L−1}
            gW = mm(Yf, Xg.reshape(n0, B * r).T)
        gd1, gZdot = _direction_input_grads(mm(W.T, Yf).reshape(n0, B, r), d1 * g, Zdot)
        return gd1 * g, gZdot, gW, gc  # g_t moved off the directions: onto the (B, n_{L−1}) results


#: fewest directions r = min(d, k) for which the last step is contracted (:class:`WeightedSquares`); measured on
#: a vmapped ensemble of 2-32-32-32-1 members (r = 2), the plain last step was ≈ 15 % faster
_CONTRACT_MIN_DIRECTIONS = 16

#: blocks of directions for the triangular first factor (d > k), see :func:`_direction_blocks`
_TRIANGULAR_BLOCKS = 4


def forward_laplacian(x, weights: Sequence, biases: Sequence, w_out, activation: str) -> torch.Tensor:
    r"""ΔE(x) = tr(H W₁W₁ᵀ) by the forward recursion (F) over r = min(d, k) directions, shape (B,).

    Parameters
    ----------
    x : torch.Tensor, shape (B, d)
    weights, biases : sequences of the hidden layers' W_l (n_l × n_{l−1}) and b_l
    w_out : torch.Tensor, shape (n_L,)
        Output weights w (the output bias does not enter ΔE).
    activation : str
        A key of `smlib.models.activations.ACTIVATIONS`.
    """
    return _forward_laplacian(x, weights, biases, w_out, activation, _TRIANGULAR_BLOCKS)


def _direction_blocks(W1, n_blocks: int):
    """Ż₁ = Vᵀ as (first row, block of columns) pairs: the rows above a block of a triangular Vᵀ are zero.

    d > k: V = R from the QR of W₁ᵀ is upper triangular, so column m of Vᵀ vanishes above row m and
    the directions m ∈ [m₀, m₁) need only the rows i ≥ m₀ of the first product W₂ diag(φ') Ż₁:
    n_blocks blocks do k²(n_blocks + 1)/(2 n_blocks) of its k² multiply–adds per sample (and of its
    two reverse products). d ≤ k: V = W₁ᵀ is dense, one block.
    """
    V = first_layer_factor(W1)
    r = V.shape[0]
    if W1.shape[-1] <= W1.shape[-2] or n_blocks <= 1:
        return [(0, V.T)]
    edges = [round(j * r / n_blocks) for j in range(n_blocks + 1)]
    return [(m0, V.T[m0:, m0:m1]) for m0, m1 in itertools.pairwise(edges) if m1 > m0]


def _forward_laplacian(x, weights, biases, w_out, activation, n_blocks, with_score=False, contract_last=None):
    act = ACTIVATIONS[activation]
    W1 = weights[0]
    blocks = _direction_blocks(W1, n_blocks)  # Ż₁ = Vᵀ (k, r), VᵀV = W₁W₁ᵀ, shared by the batch
    if contract_last is None:  # the contraction saves passes over large direction tensors and costs a few small
        contract_last = min(W1.shape) >= _CONTRACT_MIN_DIRECTIONS  # operations: for r = 2 (2-D data) it is slower
    s = (W1 * W1).sum(-1)  # s₁ = diag(G) = Σₘ V²_{m·}, (k,)
    z = F.linear(x, W1, biases[0])
    lap_z, d1s = None, []
    for l in range(len(weights)):
        a, d1, d2 = act(z)
        d1s.append(d1)
        lap_a = d2 * s if lap_z is None else d2 * s + d1 * lap_z
        if l == len(weights) - 1:
            lap = lap_a @ w_out
            break
        W = weights[l + 1]
        z = F.linear(a, W, biases[l + 1])
        lap_z = lap_a @ W.T
        if contract_last and l == len(weights) - 2:  # the last product only enters ΔE through w · (φ''(z_L) ⊙ s_L)
            a, d1_L, d2_L = act(z)
            d1s.append(d1_L)
            c = w_out * d2_L
            t = [WeightedSquares.apply(d1[:, i0:], Zdot, W[:, i0:], c)[0] for i0, Zdot in blocks]
            lap = (d1_L * lap_z) @ w_out + (t[0] if len(t) == 1 else torch.stack(t).sum(0))
            break
        # each block of directions is its own chain: Ż_{l+1} (n_{l+1}, B, r_j), s_{l+1} = Σ_j s_{l+1}^(j)
        parts = [DirectionProduct.apply(d1[:, i0:], Zdot, W[:, i0:]) for i0, Zdot in blocks]
        blocks = [(0, p[0]) for p in parts]
        s = parts[0][1] if len(parts) == 1 else torch.stack([p[1] for p in parts]).sum(0)
    if not with_score:
        return lap
    g = w_out * d1s[-1]  # ∂E/∂z_L, then ∂E/∂z_l = φ'(z_l) ⊙ W_{l+1}ᵀ ∂E/∂z_{l+1}: the forward's φ' reused
    for l in range(len(weights) - 1, 0, -1):
        g = (g @ weights[l]) * d1s[l - 1]
    return g @ W1, lap


def gradient_and_laplacian(x, weights: Sequence, biases: Sequence, w_out, activation: str):
    r"""(∇ₓE, ΔE) in one forward pass: ΔE as :func:`forward_laplacian`, ∇ₓE = W₁ᵀ ∂E/∂z₁ by the reverse
    recursion ∂E/∂z_l = φ'(z_l) ⊙ W_{l+1}ᵀ ∂E/∂z_{l+1} (∂E/∂z_L = φ'(z_L) ⊙ w) written out, sharing the
    forward's z_l and φ'(z_l). Both are plain differentiable tensors: the SM loss ½‖∇E‖² − ΔE then takes one
    backward, where autograd's ``score`` would build a second (create_graph) pass over the network.
    Shapes (B, d) and (B,)."""
    return _forward_laplacian(x, weights, biases, w_out, activation, _TRIANGULAR_BLOCKS, with_score=True)


def _diagonal_input(x, weights, biases, w_out, act):
    """∂²E/∂xᵢ² by forward propagation of ∂z_l/∂xᵢ and ∂²z_l/∂xᵢ², both kept as (n_l, B, d)."""
    B, d = x.shape
    J = weights[0].unsqueeze(1)  # (n₁, 1, d), shared by the batch
    Hz = None
    z = F.linear(x, weights[0], biases[0])
    for l in range(len(weights)):
        a, d1, d2 = act(z)
        d1t, d2t = d1.T.contiguous().unsqueeze(-1), d2.T.contiguous().unsqueeze(-1)  # (n_l, B, 1)
        Ha = d2t * J * J if Hz is None else d2t * J * J + d1t * Hz  # ∂²a_l/∂xᵢ²
        if l == len(weights) - 1:
            break
        W = weights[l + 1]
        z = F.linear(a, W, biases[l + 1])
        Hz = (W @ Ha.reshape(Ha.shape[0], B * d)).reshape(-1, B, d)
        J = (W @ (d1t * J).reshape(Ha.shape[0], B * d)).reshape(-1, B, d)
    return (w_out @ Ha.reshape(Ha.shape[0], B * d)).reshape(B, d)


def _diagonal_preactivation(x, weights, biases, w_out, act):
    """∂²E/∂xᵢ² = wᵢᵀ H wᵢ with H = P₁ from the reverse recursion (R)."""
    z = F.linear(x, weights[0], biases[0])
    d1s, d2s = [], []
    for l in range(len(weights)):
        a, d1, d2 = act(z)
        d1s.append(d1)
        d2s.append(d2)
        if l < len(weights) - 1:
            z = F.linear(a, weights[l + 1], biases[l + 1])
    g = w_out.expand_as(d1s[-1])  # g_L = ∂E/∂a_L = w
    P = d2s[-1] * g  # P_L = diag(φ''_L ⊙ g_L), kept as its diagonal while it is diagonal
    for l in range(len(weights) - 2, -1, -1):
        W = weights[l + 1]  # (n_{l+1}, n_l) in 0-based layer indices
        g = (d1s[l + 1] * g) @ W  # g_l = W_{l+1}ᵀ(φ'_{l+1} ⊙ g_{l+1})
        if P.ndim == 2:  # Wᵀ diag(P) W as one product over the batch
            M = (W.T * P.unsqueeze(1)) @ W
        else:
            M = torch.matmul(W.T, P @ W)
        P = d1s[l].unsqueeze(-1) * M * d1s[l].unsqueeze(-2) + torch.diag_embed(d2s[l] * g)
    if P.ndim == 2:  # one hidden layer: H is diagonal
        return P @ (weights[0] * weights[0])
    return sandwich_diagonal(P, weights[0])


def hessian_diagonal_macs(dim: int, hidden: Sequence[int]) -> dict:
    """Dominant multiply–adds per sample of the two routes of :func:`hessian_diagonal`.

    ``input``: 2d·Σ_{l≥2} n_l n_{l−1}. ``preactivation``: the recursion (R) —
    n_L n_{L−1}² for the diagonal P_L, n_{l+1}n_l(n_{l+1} + n_l) per full P_{l+1} — plus
    d·k(k+1)/2 for the sandwich (k·d when H is diagonal, L = 1).
    """
    n = [int(h) for h in hidden]
    pairs = sum(a * b for a, b in itertools.pairwise(n))
    pre = n[0] * dim if len(n) == 1 else dim * n[0] * (n[0] + 1) // 2 + n[-1] * n[-2] ** 2
    pre += sum(n[l + 1] * n[l] * (n[l + 1] + n[l]) for l in range(len(n) - 2))
    return {"input": 2 * dim * pairs, "preactivation": pre}


def laplacian_macs(dim: int, hidden: Sequence[int], n_blocks: int | None = None) -> dict:
    """Dominant multiply–adds per sample of ΔE: recursion (F) with r = min(d, k), and d products of E.

    ``preactivation``: r·Σ_{l≥2} n_l n_{l−1} (+ k·d for the first layer); ``preactivation_triangular``:
    the same with the first product over the triangular blocks of :func:`_direction_blocks`
    (``n_blocks``, default the route's own; equal to ``preactivation`` when d ≤ k);
    ``input_directions``: the recursion pushed along the d input axes, d·Σ_{l≥2} n_l n_{l−1} + k·d,
    which is what d Hessian–vector products (the loop, ``vjp``, ``jvp``) cost at the least.
    """
    n = [int(h) for h in hidden]
    k, r = n[0], min(dim, n[0])
    pairs = sum(a * b for a, b in itertools.pairwise(n))
    tri = r * pairs
    nb = _TRIANGULAR_BLOCKS if n_blocks is None else int(n_blocks)
    if dim > k and len(n) > 1 and nb > 1:
        edges = [round(j * r / nb) for j in range(nb + 1)]
        tri += (sum((k - a) * (b - a) for a, b in itertools.pairwise(edges)) - k * r) * n[1]
    return {"preactivation": r * pairs + k * dim, "preactivation_triangular": tri + k * dim,
            "input_directions": dim * pairs + k * dim}


def hessian_diagonal(x, weights, biases, w_out, activation: str, route: str = "auto") -> torch.Tensor:
    r"""∂²E/∂xᵢ² for every i, shape (B, d), by the ``"input"`` or ``"preactivation"`` route.

    ``route="auto"`` takes the route with fewer multiply–adds (:func:`hessian_diagonal_macs`):
    the pre-activation route when k(k+1)/2 plus the back-propagated Hessians cost less than
    pushing d axes through the network, e.g. d = 784, widths (128, 128, 256): 15·10⁶ vs 77·10⁶.
    """
    check_choice("route", route, DIAGONAL_ROUTES)
    if route == "auto":
        costs = hessian_diagonal_macs(x.shape[-1], [W.shape[0] for W in weights])
        route = "preactivation" if costs["preactivation"] < costs["input"] else "input"
    fn = _diagonal_preactivation if route == "preactivation" else _diagonal_input
    return fn(x, weights, biases, w_out, ACTIVATIONS[activation])


def mlp_parameters(params: Mapping[str, torch.Tensor], prefix: str = ""):
    """(weights, biases, w_out) of an `MLPEnergy` from a name → tensor mapping (its state_dict names)."""
    weights, biases, l = [], [], 0
    while f"{prefix}layers.{l}.weight" in params:
        weights.append(params[f"{prefix}layers.{l}.weight"])
        biases.append(params[f"{prefix}layers.{l}.bias"])
        l += 1
    return weights, biases, params[f"{prefix}out.weight"][0]


def functional_score_divergence(params: Mapping[str, torch.Tensor], x, activation: str) -> torch.Tensor:
    r"""∇·ψ = −ΔE of an `MLPEnergy` given as a parameter mapping, shape (B,): for ``torch.func``.

    ``params`` uses `MLPEnergy`'s parameter names (``layers.0.weight``, …, ``out.weight``), e.g.
    one member of ``torch.func.stack_module_state``; inside ``vmap`` each member sees its own
    slice. Same recursion (F) as ``MLPEnergy.score_divergence``.
    """
    weights, biases, w_out = mlp_parameters(params)
    return -forward_laplacian(x, weights, biases, w_out, activation)
