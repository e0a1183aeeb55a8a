"""Batched L2 logistic regression: many folds, C values and labels solved as one matrix problem.

The plain loop fits one scikit-learn ``LogisticRegression`` per (layer, fold, C, label): each fit
streams the whole float64 matrix through a matrix-vector product at every L-BFGS iteration.
Here one layer's matrix ``X`` ``(n, d)`` is held once in float32 and every problem of that layer
(training fold x C x label) is a column of a ``(d, P)`` weight matrix, so each iteration is two
matrix-matrix products shared by all problems.

* Folds are row masks over the same ``X``; each fold is standardised with its own training mean
  and standard deviation through a change of variables (``w / sd`` and an intercept shift), so no
  standardised copy per fold is ever made.
* Each problem keeps its own L-BFGS history and its own step length (a safeguarded 1-D Newton
  search along the direction, which needs no extra matrix product); converged problems drop out.
* Same objective as scikit-learn: ``C * sum_i logloss_i + ||w||^2 / 2`` on standardised
  features, no penalty on the intercept. Internally it is divided by ``C * n_train`` (so tolerances
  match scikit-learn's ``lbfgs``, whose gradient tolerance is on the same scaled objective).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["PathFit", "fit_batched", "decision_batched", "FastLogReg"]


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


def _to_float32(X) -> torch.Tensor:
    """One float32 copy of a float16/float32 array (never a float64 one)."""
    if isinstance(X, torch.Tensor):
        return X.to(torch.float32)
    arr = np.asarray(X)
    if arr.dtype == np.float32:
        return torch.from_numpy(np.ascontiguousarray(arr))
    return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32)


def _fold_stats(X: torch.Tensor, M: torch.Tensor, block: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-fold training mean and population std ``(F, d)``, like ``StandardScaler``; zero std -> 1."""
    cnt = M.sum(0).clamp_min(1.0)[:, None]
    mu = (M.T @ X) / cnt
    # Two passes per fold (centre on the fold's own mean): E[x^2] - mu^2 cancels badly in float32.
    var = torch.zeros_like(mu)
    for lo in range(0, X.shape[0], block):  # row blocks: no full-size temporary per fold
        xb, mb = X[lo : lo + block], M[lo : lo + block]
        for f in range(M.shape[1]):
            var[f] += (mb[:, f : f + 1] * (xb - mu[f]).square()).sum(0)
    var /= cnt
    sd = var.sqrt()
    sd = torch.where(sd < 1e-6 * (1.0 + mu.abs()), torch.ones_like(sd), sd)
    return mu, sd


def _preconditioner(X: torch.Tensor, max_rows: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors ``(d, d)`` and eigenvalues ``(d,)`` of the correlation matrix of ``X``'s rows.

    Only a preconditioner (it changes the speed, never the solution), so one matrix per layer serves
    every fold, and an evenly spaced subsample of at most ``max_rows`` rows estimates it well enough.
    """
    n, d = X.shape
    rows = X if n <= max_rows else X[torch.linspace(0, n - 1, max_rows).long()]
    xc = rows - rows.mean(0)
    cov = xc.T @ xc / len(rows)
    sd = cov.diagonal().sqrt().clamp_min(1e-6)
    corr = cov / sd[:, None] / sd[None, :]
    evals, Q = torch.linalg.eigh(corr)
    return Q.contiguous(), evals.clamp_min(0.0)


def _solve_chunk(X, Y, M, fold, label, Cs, mu, sd, tol, max_iter, history, Q, evals, W0=None, b0=None):
    """L-BFGS over ``P`` independent problems; returns (V (d,P), c (P,), n_iter (P,), converged (P,))."""
    n, d = X.shape
    P = fold.numel()
    Yp = Y[:, label]  # (n, P)
    Mp = M[:, fold]  # (n, P)
    ntr = Mp.sum(0).clamp_min(1.0)
    Wt = Mp / ntr  # per-row weight of the averaged loss
    lam = 1.0 / (Cs * ntr)  # penalty weight of the scaled objective
    isd = (1.0 / sd[fold]).T.contiguous()  # (d, P)
    mup = mu[fold].T.contiguous()  # (d, P)

    pos = (Yp * Mp).sum(0) / ntr
    single = (pos <= 0) | (pos >= 1)
    rate = pos.clamp(1e-4, 1 - 1e-4)
    if W0 is None:
        W = torch.zeros(d, P)
        b = torch.log(rate / (1 - rate))
        Z = b.expand(n, P).clone()
    else:  # warm start from the previous C of the path, same fold and label
        W = torch.where(single[None, :], torch.zeros_like(W0), W0)
        b = torch.where(single, torch.log(rate / (1 - rate)), b0)
        V0 = W * isd
        Z = X @ V0 + (b - (mup * V0).sum(0))
    # Initial inverse Hessian of L-BFGS: the Hessian at w = 0 is about p(1-p) * Cov + lam * I,
    # diagonal in the eigenbasis Q of the (globally standardised) covariance. Correlated embedding
    # dimensions make plain L-BFGS crawl; this preconditioner cuts the iterations several-fold.
    curv = (rate * (1 - rate)).clamp_min(0.01)
    h0 = 1.0 / (curv[None, :] * evals[:, None] + lam[None, :])  # (d, P)

    def grad(Z, W):
        R = Wt * (torch.sigmoid(Z) - Yp)
        sR = R.sum(0)
        gW = (X.T @ R - mup * sR) * isd + lam * W
        return torch.cat([gW, sR[None]], 0)

    G = grad(Z, W)
    conv = single | (G.abs().amax(0) <= tol)
    n_iter = torch.zeros(P, dtype=torch.int64)
    S_hist: list[torch.Tensor] = []
    Y_hist: list[torch.Tensor] = []
    R_hist: list[torch.Tensor] = []
    for it in range(max_iter):
        act = (~conv).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        full = act.numel() == P
        sel = (lambda T: T) if full else (lambda T: T[..., act])
        g = sel(G)
        # Two-loop recursion, column-wise (each problem its own curvature pairs).
        q = g.clone()
        alphas = []
        for s, y, rho in zip(reversed(S_hist), reversed(Y_hist), reversed(R_hist)):
            s, y, rho = sel(s), sel(y), sel(rho)
            a = rho * (s * q).sum(0)
            q -= a * y
            alphas.append(a)
        h0_a, curv_a = sel(h0), sel(curv)
        q = torch.cat([Q @ ((Q.T @ q[:d]) * h0_a), (q[d] / curv_a)[None]], 0)
        for (s, y, rho), a in zip(zip(S_hist, Y_hist, R_hist), reversed(alphas)):
            s, y, rho = sel(s), sel(y), sel(rho)
            beta = rho * (y * q).sum(0)
            q += (a - beta) * s
        D = -q
        slope = (D * g).sum(0)
        bad = ~(slope < 0)
        if bad.any():
            D[:, bad] = -g[:, bad]
            slope = (D * g).sum(0)
        Dw, Db = D[:d], D[d]
        isd_a, mup_a, Wt_a, Yp_a, lam_a = sel(isd), sel(mup), sel(Wt), sel(Yp), sel(lam)
        W_a, Z_a = sel(W), sel(Z)
        dV = Dw * isd_a
        dZ = X @ dV + (Db - (mup_a * dV).sum(0))
        wd, dd = (W_a * Dw).sum(0), (Dw * Dw).sum(0)
        # Safeguarded Newton on phi(t) = f(theta + t D): convex in t, phi'(0) < 0.
        lo = torch.zeros_like(slope)
        hi = torch.full_like(slope, float("inf"))
        t = torch.ones_like(slope)
        WdZ = Wt_a * dZ
        WdZ2 = WdZ * dZ
        for _ in range(3):
            sig = torch.sigmoid(Z_a + t * dZ)
            p1 = ((sig - Yp_a) * WdZ).sum(0) + lam_a * (wd + t * dd)
            p2 = (sig * (1 - sig) * WdZ2).sum(0) + lam_a * dd
            lo = torch.where(p1 < 0, torch.maximum(lo, t), lo)
            hi = torch.where(p1 >= 0, torch.minimum(hi, t), hi)
            tn = t - p1 / p2.clamp_min(1e-30)
            inside = (tn > lo) & (tn < hi)
            # Newton leaving the bracket: bisect it, or expand when no upper end is known yet.
            fallback = torch.where(torch.isfinite(hi), 0.5 * (lo + hi), 2.0 * t.clamp_min(1.0))
            t = torch.where(inside, tn, fallback)
        step = t * D
        if full:
            W += step[:d]
            b += step[d]
            Z += t * dZ
        else:
            W[:, act] += step[:d]
            b[act] += step[d]
            Z[:, act] += t * dZ
        if it % 50 == 49:  # refresh against float32 drift of the incremental update
            V = W * isd
            Z = X @ V + (b - (mup * V).sum(0))
        # New gradient only for active problems (the one big X^T R product).
        Za, Wa = sel(Z), sel(W)
        R = Wt_a * (torch.sigmoid(Za) - Yp_a)
        sR = R.sum(0)
        gW = (X.T @ R - mup_a * sR) * isd_a + lam_a * Wa
        g_new = torch.cat([gW, sR[None]], 0)
        yv = g_new - g
        sy = (step * yv).sum(0)
        rho_new = torch.where(sy > 1e-20, 1.0 / sy.clamp_min(1e-20), torch.zeros_like(sy))
        if full:
            G = g_new
            s_full, y_full, r_full = step, yv, rho_new
        else:
            G[:, act] = g_new
            s_full = torch.zeros(d + 1, P)
            y_full = torch.zeros(d + 1, P)
            r_full = torch.zeros(P)
            s_full[:, act], y_full[:, act], r_full[act] = step, yv, rho_new
        S_hist.append(s_full)
        Y_hist.append(y_full)
        R_hist.append(r_full)
        if len(S_hist) > history:
            S_hist.pop(0), Y_hist.pop(0), R_hist.pop(0)
        n_iter[act] += 1
        done = g_new.abs().amax(0) <= tol
        conv[act] = done | (t * D.abs().amax(0) <= 1e-10)
    V = W * isd
    c = b - (mup * V).sum(0)
    return V, c, n_iter, conv, W, b


def fit_batched(
    X,
    Y,
    train_masks,
    group_fold,
    group_C,
    *,
    tol: float = 1e-5,
    max_iter: int = 1000,
    history: int = 10,
    max_problems: int | None = None,
    warm_start: bool = False,
) -> PathFit:
    """Fit every (group, label) L2 logistic regression at once.

    X: ``(n, d)`` float16 or float32 features of one layer (converted once to float32).
    Y: ``(n, k)`` 0/1 labels (``k=1`` for binary; one column per label for one-vs-rest).
    train_masks: ``(n, F)`` bool, column f = training rows of fold f (standardised with their own stats).
    group_fold: ``(G,)`` fold index per group; group_C: ``(G,)`` inverse regularisation strength.
    tol: stop a problem when its largest gradient entry (of the objective divided by ``C * n_train``)
    is below ``tol``. scikit-learn's default 1e-4 often stops rare labels far from the optimum; 1e-5
    lands within a fraction of an F1 point of the exact solution.
    warm_start: solve C values one after another in increasing order, each problem starting from the
    previous C's solution. Off by default: with the preconditioner and a grid spaced by 10x it saved
    no iterations in our measurements, and one wide batch of all C values uses the BLAS better.
    max_problems: cap on columns solved together (memory ~ ``6 * 4 * n * max_problems`` bytes);
    default keeps that under about 600 MB.
    """
    Xt = _to_float32(X)
    n, d = Xt.shape
    Yt = torch.as_tensor(np.asarray(Y, dtype=np.float32).reshape(n, -1))
    k = Yt.shape[1]
    M = torch.as_tensor(np.asarray(train_masks, dtype=np.float32).reshape(n, -1))
    group_fold = np.asarray(group_fold, dtype=np.int64)
    group_C = np.asarray(group_C, dtype=np.float64)
    G = len(group_fold)
    mu, sd = _fold_stats(Xt, M)
    Q, evals = _preconditioner(Xt)
    if max_problems is None:
        max_problems = max(k, int(600e6 // (24 * n)))
    per = max(1, max_problems // k)
    coef = np.zeros((G, k, d), dtype=np.float32)
    icpt = np.zeros((G, k), dtype=np.float32)
    iters = np.zeros((G, k), dtype=np.int64)
    conv = np.zeros((G, k), dtype=bool)
    last: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        if warm_start:
            stages = [np.flatnonzero(group_C == C) for C in np.unique(group_C)]
        else:  # one batch of all C values (sorted, so a chunk holds neighbouring C values)
            stages = [np.argsort(group_C, kind="stable")]
        for stage in stages:
            for lo in range(0, len(stage), per):
                gi = stage[lo : lo + per]
                fold = torch.as_tensor(np.repeat(group_fold[gi], k))
                label = torch.as_tensor(np.tile(np.arange(k), len(gi)))
                Cs = torch.as_tensor(np.repeat(group_C[gi], k), dtype=torch.float32)
                W0 = b0 = None
                if warm_start and all(int(f) in last for f in group_fold[gi]):
                    W0 = torch.cat([last[int(f)][0] for f in group_fold[gi]], 1)
                    b0 = torch.cat([last[int(f)][1] for f in group_fold[gi]])
                V, c, it, cv, W, b = _solve_chunk(Xt, Yt, M, fold, label, Cs, mu, sd, tol, max_iter, history, Q, evals, W0, b0)
                for j, f in enumerate(group_fold[gi]):
                    last[int(f)] = (W[:, j * k : (j + 1) * k].clone(), b[j * k : (j + 1) * k].clone())
                coef[gi] = V.T.reshape(len(gi), k, d).numpy()
                icpt[gi] = c.reshape(len(gi), k).numpy()
                iters[gi] = it.reshape(len(gi), k).numpy()
                conv[gi] = cv.reshape(len(gi), k).numpy()
    return PathFit(coef=coef, intercept=icpt, n_iter=iters, converged=conv)


def decision_batched(X, fit: PathFit, groups=None) -> np.ndarray:
    """Scores ``(n, G', k)`` of rows ``X`` ``(n, d)`` for the given groups (all by default)."""
    Xt = _to_float32(X)
    gi = np.arange(fit.coef.shape[0]) if groups is None else np.asarray(groups)
    G, k, d = fit.coef[gi].shape
    Wm = torch.from_numpy(fit.coef[gi].reshape(G * k, d))
    with torch.no_grad():
        out = Xt @ Wm.T + torch.from_numpy(fit.intercept[gi].reshape(-1))
    return out.numpy().reshape(-1, G, k)


class FastLogReg(ClassifierMixin, BaseEstimator):
    """scikit-learn estimator over :func:`fit_batched`: the ``logreg-fast`` probe.

    Standardises with the training data, then fits L2 logistic regression with scikit-learn's
    objective. Binary: one problem. Multi-label (``y`` an ``(n, k)`` 0/1 matrix): one-vs-rest per
    column, solved together. Multi-class: one-vs-rest per class, prediction by the highest score
    (scikit-learn's default is multinomial, so multi-class scores differ slightly from it).
    """

    def __init__(self, C: float = 1.0, tol: float = 1e-5, max_iter: int = 1000):
        self.C = C
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X, y):
        y = np.asarray(y)
        n = len(y)
        if y.ndim == 2:
            self.classes_ = np.arange(y.shape[1])
            self._mode = "multilabel"
            Y = y.astype(np.float32)
        else:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(f"FastLogReg needs at least two classes in y; got only {self.classes_.tolist()}")
            if len(self.classes_) == 2:
                self._mode = "binary"
                Y = (y == self.classes_[1]).astype(np.float32)[:, None]
            else:
                self._mode = "multiclass"
                Y = (y[:, None] == self.classes_[None, :]).astype(np.float32)
        fit = fit_batched(X, Y, np.ones((n, 1), dtype=bool), [0], [float(self.C)], tol=self.tol, max_iter=self.max_iter)
        self.coef_ = fit.coef[0]
        self.intercept_ = fit.intercept[0]
        self.n_iter_ = fit.n_iter[0]
        self.n_features_in_ = self.coef_.shape[1]
        return self

    def decision_function(self, X):
        s = np.asarray(X, dtype=np.float32) @ self.coef_.T + self.intercept_
        return s[:, 0] if self._mode == "binary" else s

    def predict_proba(self, X):
        s = self.decision_function(X)
        p = 1.0 / (1.0 + np.exp(-s))
        if self._mode == "binary":
            return np.stack([1 - p, p], axis=1)
        if self._mode == "multiclass":
            return p / p.sum(1, keepdims=True)
        return p

    def predict(self, X):
        s = self.decision_function(X)
        if self._mode == "binary":
            return self.classes_[(s > 0).astype(int)]
        if self._mode == "multiclass":
            return self.classes_[np.argmax(s, axis=1)]
        return (s > 0).astype(int)
