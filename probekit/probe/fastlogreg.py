"""Batched L2 logistic regression: many folds, C values and labels solved as one matrix problem.

The plain loop fits one scikit-learn ``LogisticRegression`` per (layer, fold, C, label): each fit
streams the whole float64 matrix through a matrix-vector product at every L-BFGS iteration.
Here one layer's matrix ``X`` ``(n, d)`` is held once in float32 and every problem of that layer
(training fold x C x label) is a column of a ``(d, P)`` weight matrix, so each iteration is two
matrix-matrix products shared by all problems.

Folds are row masks over the same ``X``, each standardised with its own training mean and standard
deviation through a change of variables (``w / sd`` and an intercept shift), so no standardised copy
per fold is made. Same objective as scikit-learn: ``C * sum_i logloss_i + ||w||^2 / 2`` on standardised
features, no penalty on the intercept, divided internally by ``C * n_train`` (so tolerances match
scikit-learn's ``lbfgs``). docs/sweep.md describes the solver's choices and their measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit, softmax  # expit: no overflow warning for large negative scores
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from probekit.probe.tasks import class_columns

HISTORY = 10  # L-BFGS curvature pairs kept per problem

__all__ = ["PathFit", "MultinomialFit", "fit_batched", "fit_multinomial", "decision_batched", "preconditioner", "to_float32", "FastLogReg"]


@dataclass(frozen=True)
class PathFit:
    """Solutions of ``G`` problem groups x ``k`` labels, in the raw (unstandardised) feature space.

    ``coef``: ``(G, k, d)`` float32; ``intercept``: ``(G, k)``; scores are ``X @ coef[g].T + intercept[g]``.
    ``n_iter``: ``(G, k)`` L-BFGS iterations used; ``converged``: ``(G, k)`` bool.
    """

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


def to_float32(X) -> torch.Tensor:
    """One float32 copy of a float16/float32 array (never a float64 one)."""
    if isinstance(X, torch.Tensor):
        return X.to(torch.float32)
    # Tensor.to returns the tensor itself when it is float32 already: no copy then.
    return torch.from_numpy(np.ascontiguousarray(X)).to(torch.float32)


def _fold_stats(X: torch.Tensor, M: torch.Tensor, block: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-fold training mean and population std ``(F, d)``, like ``StandardScaler``; zero std -> 1.

    X: ``(n, d)`` float32; M: ``(n, F)`` 0/1 float32 training masks. Both sums are matrix products
    over row blocks (no full-size temporary), taken around ``c``, the mean of the rows some fold
    trains on: ``E[(x-c)^2] - (mu-c)^2`` keeps float32 precision because every fold's mean is close
    to ``c``, whereas ``E[x^2] - mu^2`` cancels badly on dimensions whose mean is large next to
    their spread. Rows no fold trains on never enter ``c``.
    """
    cnt = M.sum(0).clamp_min(1.0)[:, None]
    used = (M.amax(1) > 0).to(X.dtype)  # (n,): rows some fold trains on
    c = (used @ X) / used.sum().clamp_min(1.0)
    s1 = torch.zeros(M.shape[1], X.shape[1])
    s2 = torch.zeros_like(s1)
    for lo in range(0, X.shape[0], block):
        xb, mb = X[lo : lo + block] - c, M[lo : lo + block]
        s1 += mb.T @ xb
        s2 += mb.T @ xb.square_()
    m1 = s1 / cnt
    var = (s2 / cnt - m1.square()).clamp_min(0.0)
    mu = m1 + c
    sd = var.sqrt()
    sd = torch.where(sd < 1e-6 * (1.0 + mu.abs()), torch.ones_like(sd), sd)
    return mu, sd


def _x_v(X: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``X @ V`` ``(n, P)`` for ``X`` ``(n, d)`` and ``V`` ``(d, P)``, both float32, through numpy's BLAS
    (sharing memory with the tensors): faster than torch's kernel for this tall-times-narrow shape."""
    return torch.from_numpy(X.numpy() @ V.contiguous().numpy())


def _xt_r(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``X.T @ R`` ``(d, P)`` for ``X`` ``(n, d)`` row-major and ``R`` ``(n, P)``.

    Computed as ``(R.T @ X).T``: with few columns (a binary task, or the last unconverged problems)
    MKL's kernel for a transposed row-major left operand ran about 10x slower than this layout.
    """
    return (R.T @ X).T


def preconditioner(X: torch.Tensor, used: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors ``(d, d)`` and eigenvalues ``(d,)`` of the correlation matrix of ``X``'s rows.

    used: ``(n,)`` bool, the rows to estimate it from: in a single fit the training rows (rows no
    problem trains on should not shape it); a sweep passes every row some fold trains on and
    shares the result across outer folds, so an outer fold's test rows (features only, never
    labels) can shape the path of its problems, never their solution. It changes the speed, never the
    solution, so one matrix per layer serves every fold, estimated on an evenly spaced subsample of at
    most ``8 * d`` of those rows. Fewer rows underestimate the small eigenvalues and the iterations
    grow fast (at d = 1024: 10 iterations with 8192 rows, 13 with 4096, none converged with 1024).
    """
    pick = used.nonzero().squeeze(1)
    max_rows = 8 * X.shape[1]
    if pick.numel() > max_rows:
        pick = pick[torch.linspace(0, pick.numel() - 1, max_rows).long()]
    rows = X[pick]
    xc = (rows - rows.mean(0)).numpy()
    cov = torch.from_numpy(xc.T @ xc) / max(1, len(rows))  # numpy's BLAS: 0.14 s vs torch's 0.25 s here
    sd = cov.diagonal().sqrt().clamp_min(1e-6)
    corr = cov / sd[:, None] / sd[None, :]
    evals, Q = torch.linalg.eigh(corr)
    return Q.contiguous(), evals.clamp_min(0.0)


@dataclass
class _Columns:
    """The fixed data of the problems still running, one column per problem.

    ``Yp`` ``(n, P)`` 0/1 labels; ``Wt`` ``(n, P)`` row weights of the averaged loss (0 outside the
    problem's training rows); ``mup``, ``isd`` ``(d, P)``: its fold's training mean and ``1 / sd``;
    ``lam`` ``(P,)``: penalty weight of the objective divided by ``C * n_train``; ``curv`` ``(P,)``
    and ``h0`` ``(d, P)``: the intercept's and the weights' initial inverse Hessian (preconditioner).
    """

    Yp: torch.Tensor
    Wt: torch.Tensor
    mup: torch.Tensor
    isd: torch.Tensor
    lam: torch.Tensor
    curv: torch.Tensor
    h0: torch.Tensor

    @classmethod
    def build(cls, Y, M, fold, label, Cs, mu, sd, evals, balanced: bool) -> tuple[_Columns, torch.Tensor, torch.Tensor]:
        """The columns of problems ``(fold, label, Cs)`` (see :func:`_solve_chunk`), with ``single`` ``(P,)``
        (the label is constant in the training rows) and ``rate`` ``(P,)`` (its clipped weighted positive share)."""
        Yp = Y[:, label]
        Wt = M[:, fold]
        ntr = Wt.sum(0).clamp_min(1.0)
        npos = (Yp * Wt).sum(0)  # counted before normalising: a float32 sum of 1/ntr can miss 1
        single = (npos <= 0) | (npos >= ntr)
        if balanced:
            Wt *= torch.where(Yp > 0, ntr / (2 * npos.clamp_min(1.0)), ntr / (2 * (ntr - npos).clamp_min(1.0)))
            npos = torch.where(single, npos, ntr / 2)  # the weighted positive share is one half
        Wt /= ntr
        lam = 1.0 / (Cs * ntr)
        rate = (npos / ntr).clamp(1e-4, 1 - 1e-4)
        # Initial inverse Hessian of L-BFGS: the Hessian at w = 0 is about p(1-p) * Cov + lam * I,
        # diagonal in the eigenbasis Q of the (globally standardised) covariance. Correlated embedding
        # dimensions make plain L-BFGS crawl; this preconditioner cuts the iterations several-fold.
        curv = (rate * (1 - rate)).clamp_min(0.01)
        h0 = 1.0 / (curv[None, :] * evals[:, None] + lam[None, :])
        cols = cls(Yp, Wt, mu[fold].T.contiguous(), (1.0 / sd[fold]).T.contiguous(), lam, curv, h0)
        return cols, single, rate

    def select(self, keep: torch.Tensor) -> _Columns:
        """The columns ``keep`` (``(P',)`` positions) of every field."""
        return _Columns(*(torch.index_select(T, 1, keep) if T.dim() == 2 else T[keep]
                          for T in (self.Yp, self.Wt, self.mup, self.isd, self.lam, self.curv, self.h0)))

    def scores(self, X, W, b) -> torch.Tensor:
        """``Z`` ``(n, P)``: every row's score under standardised-space weights ``W`` ``(d, P)``, ``b`` ``(P,)``."""
        V = W * self.isd
        return _x_v(X, V) + (b - (self.mup * V).sum(0))

    def gradient(self, X, Z, W) -> torch.Tensor:
        """``(d + 1, P)``: the scaled objective's gradient in ``W`` (rows ``:d``) and ``b`` (row ``d``) at scores ``Z``."""
        R = (torch.sigmoid(Z) - self.Yp).mul_(self.Wt)
        sR = R.sum(0)
        gW = (_xt_r(X, R) - self.mup * sR) * self.isd + self.lam * W
        return torch.cat([gW, sR[None]], 0)


def _direction(G, hist, Q, cols: _Columns, done) -> torch.Tensor:
    """``D`` ``(d + 1, P)``: the preconditioned L-BFGS descent direction at gradient ``G`` (two-loop
    recursion, column-wise: each problem has its own curvature pairs ``hist``); zero on ``done`` columns."""
    d = G.shape[0] - 1
    q = G.clone()
    alphas = []
    for s, y, rho in reversed(hist):
        a = rho * (s * q).sum(0)
        q -= a * y
        alphas.append(a)
    q = torch.cat([Q @ ((Q.T @ q[:d]) * cols.h0), (q[d] / cols.curv)[None]], 0)
    if hist:
        # Scale the preconditioner to the curvature last seen along the path, gamma =
        # s'y / y'Py, as plain L-BFGS scales its identity. The w = 0 curvature overstates
        # the curvature near a weakly regularised optimum, where most rows are fitted
        # confidently; unscaled, large-C problems needed twice the iterations.
        # A pair rejected for too little curvature (rho = 0) scales nothing.
        s_, y_, rho_ = hist[-1]
        yPy = ((Q.T @ y_[:d]).square() * cols.h0).sum(0) + y_[d].square() / cols.curv
        gam = (s_ * y_).sum(0) / yPy.clamp_min(1e-30)
        q *= torch.where(torch.isfinite(gam) & (gam > 0) & (rho_ > 0), gam, torch.ones_like(gam))
    for (s, y, rho), a in zip(hist, reversed(alphas)):
        q += (a - rho * (y * q).sum(0)) * s
    D = q.neg_()
    D[:, done] = 0.0  # finished columns waiting for the next compaction stay where they are
    bad = ~((D * G).sum(0) < 0) & ~done
    if bad.any():
        D[:, bad] = -G[:, bad]
    return D


def _step_length(X, cols: _Columns, Z, W, D) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t (P,), dZ (n, P))``: the step length along ``D`` and the change of the scores per unit step.

    One safeguarded Newton step on phi(t) = f(theta + t D) from t = 1 (phi is convex in t and
    phi'(0) < 0). With the scaled preconditioner t = 1 is nearly right: a second Newton step
    changed no iteration count in our measurements and cost an eighth of the time.
    """
    d = W.shape[0]
    Dw, Db = D[:d], D[d]
    dV = Dw * cols.isd
    dZ = _x_v(X, dV)
    dZ += Db - (cols.mup * dV).sum(0)
    wd, dd = (W * Dw).sum(0), (Dw * Dw).sum(0)
    WdZ = cols.Wt * dZ
    sig = torch.sigmoid(Z + dZ)
    p1 = ((sig - cols.Yp) * WdZ).sum(0) + cols.lam * (wd + dd)
    p2 = (sig.mul_(1 - sig) * WdZ.mul_(dZ)).sum(0) + cols.lam * dd
    tn = 1.0 - p1 / p2.clamp_min(1e-30)
    # phi'(1) >= 0: the minimum is in (0, 1]; a Newton step leaving it is replaced by 0.5.
    # phi'(1) < 0: the minimum is beyond 1; the step is capped at 4, so one step cannot fly
    # far past it where the curvature at t = 1 understates how fast phi' grows.
    inside = torch.where(tn > 0, tn, torch.full_like(tn, 0.5))
    beyond = tn.clamp(1.0, 4.0)
    return torch.where(p1 >= 0, inside, beyond), dZ


def _solve_chunk(X, Y, M, fold, label, Cs, mu, sd, tol, max_iter, Q, evals, balanced=False):
    """L-BFGS over ``P`` independent problems (columns).

    X ``(n, d)`` float32; Y ``(n, k)`` and M ``(n, F)`` 0/1 float32; fold, label ``(P,)`` indices into
    M's and Y's columns; Cs ``(P,)``; mu, sd ``(F, d)``; Q ``(d, d)``, evals ``(d,)`` (preconditioner).
    Returns ``V (d, P)``, ``c (P,)`` (raw-space coefficients and intercepts), ``n_iter (P,)``,
    ``converged (P,)``.
    ``balanced``: weight each problem's rows as scikit-learn's ``class_weight="balanced"`` does
    (``n_train / (2 * n_class)``), from that problem's own training rows.

    Unconverged problems are kept side by side in narrow arrays: when a tenth of them have
    converged the arrays are compacted, so late iterations cost in proportion to the problems
    still running and no iteration gathers columns out of full-width arrays.
    """
    n, d = X.shape
    P = fold.numel()
    cols, single, rate = _Columns.build(Y, M, fold, label, Cs, mu, sd, evals, balanced)
    W = torch.zeros(d, P)
    b = torch.log(rate / (1 - rate))
    Z = b.expand(n, P).clone()
    W_out, b_out = W.clone(), b.clone()
    n_iter = torch.zeros(P, dtype=torch.int64)
    conv = torch.zeros(P, dtype=torch.bool)
    G = cols.gradient(X, Z, W)
    done = single | (G.abs().amax(0) <= tol)
    conv |= done
    idx = torch.arange(P)  # the problem of each running column
    hist: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, rho) per iteration
    for it in range(max_iter):
        n_done = int(done.sum())
        if n_done == idx.numel():
            break
        if n_done and n_done >= max(1, idx.numel() // 10):
            # Compact: write the finished columns out, keep only the running ones.
            W_out[:, idx[done]], b_out[idx[done]] = W[:, done], b[done]
            keep = (~done).nonzero().squeeze(1)
            idx, cols, done = idx[keep], cols.select(keep), done[keep]
            W, Z, G = (torch.index_select(T, 1, keep) for T in (W, Z, G))
            b = b[keep]
            hist = [(torch.index_select(s, 1, keep), torch.index_select(y, 1, keep), r[keep]) for s, y, r in hist]
        D = _direction(G, hist, Q, cols, done)
        t, dZ = _step_length(X, cols, Z, W, D)
        step = D * t
        W += step[:d]
        b += step[d]
        Z.addcmul_(dZ, t)
        del dZ
        if it % 50 == 49:  # refresh against float32 drift of the incremental update
            Z = cols.scores(X, W, b)
        g_new = cols.gradient(X, Z, W)
        yv = g_new - G
        sy = (step * yv).sum(0)
        rho = torch.where(sy > 1e-20, 1.0 / sy.clamp_min(1e-20), torch.zeros_like(sy))
        hist.append((step, yv, rho))
        if len(hist) > HISTORY:
            hist.pop(0)
        n_iter[idx[~done]] += 1
        finished = (g_new.abs().amax(0) <= tol) & ~done
        conv[idx[finished]] = True
        done = done | finished | (t * D.abs().amax(0) <= 1e-10)
        G = g_new
    W_out[:, idx], b_out[idx] = W, b
    V = W_out * (1.0 / sd[fold]).T
    c = b_out - (mu[fold].T * V).sum(0)
    return V, c, n_iter, conv


def fit_batched(
    X,
    Y,
    train_masks,
    group_fold,
    group_C,
    *,
    tol: float = 1e-5,
    max_iter: int = 1000,
    precond: tuple[torch.Tensor, torch.Tensor] | None = None,
    balanced: bool = False,
) -> PathFit:
    """Fit every (group, label) L2 logistic regression at once.

    X: ``(n, d)`` float16 or float32 features of one layer (converted once to float32).
    Y: ``(n, k)`` 0/1 labels (``k=1`` for binary; one column per label for one-vs-rest).
    train_masks: ``(n, F)`` bool, column f = training rows of fold f (standardised with their own stats).
    group_fold: ``(G,)`` fold index per group; group_C: ``(G,)`` inverse regularisation strength.
    tol: stop a problem when its largest gradient entry (of the objective divided by ``C * n_train``)
    is below ``tol`` (why 1e-5 and not scikit-learn's 1e-4: docs/sweep.md).
    precond: ``(Q (d, d), evals (d,))`` from :func:`preconditioner` on the whole layer, shared by
    several calls on row subsets of it (it shapes only the path, not the solution); computed
    here from the training rows when None.
    balanced: ``class_weight="balanced"`` per problem (see :func:`_solve_chunk`).
    """
    Xt = to_float32(X)
    n, d = Xt.shape
    Yt = torch.as_tensor(np.asarray(Y, dtype=np.float32).reshape(n, -1))
    k = Yt.shape[1]
    M = torch.as_tensor(np.asarray(train_masks, dtype=np.float32).reshape(n, -1))
    group_fold = np.asarray(group_fold, dtype=np.int64)
    group_C = np.asarray(group_C, dtype=np.float64)
    G = len(group_fold)
    mu, sd = _fold_stats(Xt, M)
    Q, evals = precond if precond is not None else preconditioner(Xt, M.amax(1) > 0)
    # Columns solved together: about 10 * 4 * n bytes each, kept under about 600 MB.
    per = max(1, max(k, int(600e6 // (40 * n))) // k)
    coef = np.zeros((G, k, d), dtype=np.float32)
    icpt = np.zeros((G, k), dtype=np.float32)
    iters = np.zeros((G, k), dtype=np.int64)
    conv = np.zeros((G, k), dtype=bool)
    # One batch of all C values (sorted, so a chunk holds neighbouring C values). Solving them one after
    # another, each warm-started from the previous C's solution, saved no iterations with the preconditioner
    # and a grid spaced by 10x in our measurements, and one wide batch uses the BLAS better.
    stage = np.argsort(group_C, kind="stable")
    # Equal chunks: a 727 + 153 split would run the short chunk at a poor matrix width.
    width = -(-G // -(-G // per))
    with torch.no_grad():
        for lo in range(0, G, width):
            gi = stage[lo : lo + width]
            fold = torch.as_tensor(np.repeat(group_fold[gi], k))
            label = torch.as_tensor(np.tile(np.arange(k), len(gi)))
            Cs = torch.as_tensor(np.repeat(group_C[gi], k), dtype=torch.float32)
            V, c, it, cv = _solve_chunk(Xt, Yt, M, fold, label, Cs, mu, sd, tol, max_iter, Q, evals, balanced=balanced)
            coef[gi] = V.T.reshape(len(gi), k, d).numpy()
            icpt[gi] = c.reshape(len(gi), k).numpy()
            iters[gi] = it.reshape(len(gi), k).numpy()
            conv[gi] = cv.reshape(len(gi), k).numpy()
    return PathFit(coef=coef, intercept=icpt, n_iter=iters, converged=conv)


def decision_batched(X, fit: PathFit, groups=None) -> np.ndarray:
    """Scores ``(n, G', k)`` of rows ``X`` ``(n, d)`` for the given groups (all by default)."""
    Xt = to_float32(X)
    gi = np.arange(fit.coef.shape[0]) if groups is None else np.asarray(groups)
    G, k, d = fit.coef[gi].shape
    Wm = torch.from_numpy(fit.coef[gi].reshape(G * k, d))
    with torch.no_grad():
        out = Xt @ Wm.T + torch.from_numpy(fit.intercept[gi].reshape(-1))
    return out.numpy().reshape(-1, G, k)


@dataclass(frozen=True)
class MultinomialFit:
    """Multinomial solutions of ``F`` folds over ``c`` classes, raw feature space.

    ``coef``: ``(F, c, d)`` float32; ``intercept``: ``(F, c)``; a class absent from fold f's training rows
    has ``-inf`` intercept (probability 0). ``n_iter``: L-BFGS iterations of the joint solve.
    """

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    converged: bool


def fit_multinomial(X, y, train_masks, C: float, *, tol: float = 1e-5, max_iter: int = 1000, balanced: bool = False) -> MultinomialFit:
    """L2 multinomial logistic regression for every fold at once (scikit-learn's multi-class objective).

    X: ``(n, d)`` float16/float32; y: ``(n,)`` class index ``0..c-1``; train_masks: ``(n, F)`` bool.
    Fold f minimises ``C * sum_i w_i * CE_i + ||W_f||^2 / 2`` over its training rows, standardised with
    their own mean and std, intercept unpenalised; divided by ``C * n_f`` like :func:`fit_batched`.
    The folds' objectives are independent, so one L-BFGS on their sum (one ``X @ V`` product per
    evaluation for all folds) stops where every fold's gradient is below ``tol``.
    """
    Xt = to_float32(X)
    n, d = Xt.shape
    y = np.asarray(y, dtype=np.int64)
    c = int(y.max()) + 1
    M = torch.as_tensor(np.asarray(train_masks, dtype=np.float32).reshape(n, -1))
    F = M.shape[1]
    mu, sd = _fold_stats(Xt, M)
    counts = M.T @ torch.nn.functional.one_hot(torch.from_numpy(y), c).to(torch.float32)  # (F, c) training rows per class
    present = counts > 0
    ntr = M.sum(0).clamp_min(1.0)
    Wrow = M.clone()  # (n, F)
    if balanced:
        per_class = ntr[:, None] / (present.sum(1, keepdim=True) * counts.clamp_min(1.0))  # (F, c)
        Wrow *= per_class[:, torch.from_numpy(y)].T
    Wrow /= ntr
    lam = 1.0 / (float(C) * ntr)  # (F,)
    # A finite offset keeps 0 * log(p) = 0 on rows outside the fold; the result gets -inf below.
    absent = torch.where(present, 0.0, -1e4)  # (F, c)
    target = torch.from_numpy(y)[:, None, None].expand(n, F, 1)
    W = torch.zeros(F, d, c, requires_grad=True)
    b = torch.zeros(F, c, requires_grad=True)
    isd = 1.0 / sd  # (F, d)

    def objective():
        opt.zero_grad()
        V = W * isd[:, :, None]  # raw-space coefficients (F, d, c)
        icpt = b - torch.einsum("fd,fdc->fc", mu, V) + absent
        Z = (Xt @ V.permute(1, 0, 2).reshape(d, F * c)).reshape(n, F, c) + icpt
        ce = -torch.log_softmax(Z, dim=2).gather(2, target).squeeze(2)  # (n, F)
        # Summed in float64: near the optimum the float32 sum of n * F terms stops resolving the
        # decrease the line search looks for, and it would spend its evaluation budget there.
        loss = (ce.double() * Wrow).sum() + 0.5 * (lam.double() * W.double().square().sum((1, 2))).sum()
        loss.backward()
        return loss

    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=10, line_search_fn="strong_wolfe")
    opt.step(objective)
    state = opt.state[W]
    with torch.no_grad():
        grad = torch.cat([W.grad.reshape(-1), b.grad.reshape(-1)]).abs().max()
        V = W * isd[:, :, None]
        icpt = torch.where(present, b - torch.einsum("fd,fdc->fc", mu, V), -torch.inf)
    return MultinomialFit(V.permute(0, 2, 1).contiguous().numpy(), icpt.numpy(), int(state.get("n_iter", 0)), bool(grad <= tol))


def _proba(mode: str, s: np.ndarray) -> np.ndarray:
    """Probabilities from decision values ``s``: binary ``(n,)`` -> ``(n, 2)``; multi-class ``(n, c)`` softmax;
    multi-label ``(n, k)`` one sigmoid per label."""
    if mode == "binary":
        p = expit(s)
        return np.stack([1 - p, p], axis=1)
    return softmax(s, axis=1) if mode == "multiclass" else expit(s)


class FastLogReg(ClassifierMixin, BaseEstimator):
    """The fast ``logreg`` probe (also ``logreg-fast``): scikit-learn's L2 logistic regression, batched.

    Same objective as :class:`probekit.probe.probes.LogRegProbe`, solved in float32 straight from a
    float16 cache: binary and multi-label (one-vs-rest per column) by :func:`fit_batched`, multi-class by
    the multinomial :func:`fit_multinomial`, as scikit-learn does. ``tol``: as in :func:`fit_batched`.

    ``fit(X (n, d), y (n,) or (n, k), groups=None)`` (``groups`` unused: no inner split is needed);
    ``predict_proba`` gives ``(n, n_classes)`` or ``(n, k)``. ``fold_proba(X, y, folds)`` solves every
    fold (and label) of a layer as one problem.
    """

    def __init__(self, C: float = 1.0, class_weight: str | None = None, max_iter: int = 1000, tol: float = 1e-5, seed: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    def _balanced(self) -> bool:
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', not {self.class_weight!r}")
        return self.class_weight == "balanced"

    def _solve(self, X, y: np.ndarray, masks: np.ndarray) -> tuple[str, object]:
        """Solve the folds given as training masks ``(n, F)``: ``(mode, PathFit | MultinomialFit)``."""
        if y.ndim == 2:
            mode, Y = "multilabel", y.astype(np.float32)
        elif int(y.max()) <= 1:
            mode, Y = "binary", (y == 1).astype(np.float32)[:, None]
        else:
            fit = fit_multinomial(X, y, masks, float(self.C), tol=self.tol, max_iter=self.max_iter, balanced=self._balanced())
            return "multiclass", fit
        F = masks.shape[1]
        fit = fit_batched(X, Y, masks, np.arange(F), np.full(F, float(self.C)), tol=self.tol, max_iter=self.max_iter,
                          balanced=self._balanced())
        # A label constant in a training part predicts its rate, 0 or 1, exactly (as the exact probe does).
        npos, ntr = masks.T.astype(np.float64) @ Y, masks.sum(0)[:, None]
        icpt = np.where(npos == 0, -np.inf, np.where(npos == ntr, np.inf, fit.intercept)).astype(np.float32)
        return mode, PathFit(fit.coef, icpt, fit.n_iter, fit.converged)

    def _report(self, mode: str, fit, f: int) -> dict:
        if mode == "multiclass":
            return {"solver": "torch-lbfgs multinomial (batched over folds)", "n_iter": fit.n_iter, "converged": fit.converged,
                    "tol": self.tol, "dtype": "float32"}
        return {"solver": "batched lbfgs one-vs-rest (probekit.probe.fastlogreg)", "n_iter": fit.n_iter[f].tolist(),
                "converged": bool(fit.converged[f].all()), "tol": self.tol, "dtype": "float32"}

    def fit(self, X, y, groups=None):
        y = np.asarray(y)
        if y.ndim == 2:
            self.classes_ = np.arange(y.shape[1])
            yi = y
        else:
            self.classes_, yi = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"the training rows hold a single class ({self.classes_[0]}); a probe needs two or more")
        self._mode, fit = self._solve(X, yi, np.ones((len(y), 1), dtype=bool))
        self.coef_ = fit.coef[0]
        self.intercept_ = fit.intercept[0]
        self.n_iter_ = np.atleast_1d(fit.n_iter[0] if self._mode != "multiclass" else fit.n_iter)
        self.n_features_in_ = self.coef_.shape[1]
        self.report_ = self._report(self._mode, fit, 0)
        return self

    def decision_function(self, X):
        s = np.asarray(X, dtype=np.float32) @ self.coef_.T + self.intercept_
        return s[:, 0] if self._mode == "binary" else s

    def predict_proba(self, X):
        return _proba(self._mode, self.decision_function(X))

    def predict(self, X):
        proba = self.predict_proba(X)
        if self._mode == "multilabel":
            return (proba >= 0.5).astype(np.int64)
        return self.classes_[np.argmax(proba, axis=1)]

    def fold_proba(self, X, y, folds, groups=None) -> list[np.ndarray]:
        """Per fold ``(n_test, C)`` (1-D ``y``, columns over class indices ``0..y.max()``) or ``(n_test, k)``
        probabilities, as ``clone(self).fit(X[train], y[train]).predict_proba(X[test])`` gives them,
        from one batched solve of all folds and labels. ``X`` is read once into float32."""
        y = np.asarray(y)
        Xt = to_float32(X)
        masks = np.zeros((len(y), len(folds)), dtype=bool)
        for f, (tr, _te) in enumerate(folds):
            masks[np.asarray(tr), f] = True
        if y.ndim == 1:
            for f in range(len(folds)):
                if len(np.unique(y[masks[:, f]])) < 2:
                    raise ValueError(f"fold {f}: the training rows hold a single class; a probe needs two or more")
        mode, fit = self._solve(Xt, y, masks)
        out, reports = [], []
        n_classes = int(y.max()) + 1 if y.ndim == 1 else 0
        for f, (tr, te) in enumerate(folds):
            Xte = Xt[torch.from_numpy(np.asarray(te, dtype=np.int64))].numpy()
            if mode == "multiclass" and len(np.unique(y[tr])) == 2:
                # Two classes present: scikit-learn (and fit) solve a binary problem, whose penalty
                # differs from a two-class multinomial; this rare fold is fitted on its own.
                est = clone(self).fit(Xt[torch.from_numpy(np.asarray(tr, dtype=np.int64))].numpy(), y[tr])
                out.append(class_columns(est.predict_proba(Xte), est.classes_, n_classes))
                reports.append(est.report_)
                continue
            reports.append(self._report(mode, fit, f))
            s = Xte @ fit.coef[f].T + fit.intercept[f]
            out.append(_proba(mode, s[:, 0] if mode == "binary" else s).astype(np.float64))
        self.fold_reports_ = reports
        return out
