"""The fast MLP probe: every fold of a layer trained as one batched torch network (float32, Adam)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import softmax

from probekit.probe.probes._base import local_classes
from probekit.probe.probes._fast import FastProbe, Projection, fit_projection, inner_split, sample_weight
from probekit.probe.probes.mlp import MLPParams, MLPProbe

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_TOL = 1e-4  # a validation loss must improve by this much to count (scikit-learn's tol)
EPOCH_MIN_ROWS = 8192  # an epoch is one pass over the training rows, or this many rows if there are fewer


@dataclass(frozen=True)
class _Part:
    """One training part, ready for the batched trainer: ``Z`` ``(m, r)`` float32 projected rows; ``t``
    targets (``(m,)`` local class index or ``(m, k)`` 0/1); ``w`` ``(m,)`` row weights; ``fit``/``val``
    positions; ``n_out`` output units (present classes, or labels)."""

    Z: np.ndarray
    t: np.ndarray
    w: np.ndarray
    fit: np.ndarray
    val: np.ndarray
    n_out: int
    split: str


@dataclass(frozen=True)
class FittedMLP:
    """A fitted part: projection, then ``relu(Z @ W1 + b1) @ W2 + b2`` (softmax over the present
    classes, or a sigmoid per label).

    ``coefs_`` / ``intercepts_`` / ``activation`` / ``out_activation_`` describe the same network on
    raw features, as scikit-learn's ``MLPClassifier`` names them (the projection folded into the
    first layer; a two-class softmax as one logistic output), so an export reads it like one.
    """

    proj: Projection
    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    multilabel: bool
    activation: str = "relu"

    @property
    def out_activation_(self) -> str:
        return "logistic" if self.multilabel or self.W2.shape[1] == 2 else "softmax"

    @property
    def coefs_(self) -> list[np.ndarray]:
        W2 = self.W2[:, 1:] - self.W2[:, :1] if self.W2.shape[1] == 2 and not self.multilabel else self.W2
        return [self.proj.weight.astype(np.float64) @ self.W1, W2]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        b2 = self.b2[1:] - self.b2[:1] if self.W2.shape[1] == 2 and not self.multilabel else self.b2
        return [self.b1 - self.proj.offset.astype(np.float64) @ self.W1, b2]

    def predict_proba(self, X) -> np.ndarray:
        Z = self.proj.transform(X)
        s = np.maximum(Z @ self.W1 + self.b1, 0.0) @ self.W2 + self.b2
        if self.multilabel:
            return (1.0 / (1.0 + np.exp(-s))).astype(np.float64)
        return softmax(s, axis=1).astype(np.float64)


class FastMLPProbe(MLPParams, FastProbe):
    """One ReLU hidden layer of ``hidden`` units on a training part's own PCA (``pca_dims`` whitened axes).

    Trained with Adam (``learning_rate``, mini-batches of ``batch_size``, L2 ``alpha`` as scikit-learn
    scales it) for at most ``max_epochs`` epochs (an epoch: one pass, or 8192 rows of a smaller part), stopping after ``patience`` epochs without a better
    loss on an inner validation split (about ``val_fraction`` of the training part, whole speakers when
    ``groups`` is given) and keeping the best epoch's weights. Multi-label targets get one sigmoid
    output per label (as :class:`MLPProbe`). ``fold_proba`` trains every fold as one batched network
    (``bmm``): each fold keeps its own data order, initial weights and stopping, so it equals ``fit``
    on that fold. Deterministic for a ``seed``. Parts of fewer than ``fast_min_rows`` rows use
    :class:`MLPProbe` itself (``solver`` and ``max_iter`` apply only there).
    """

    _exact = MLPProbe
    _exact_solver = "sklearn MLPClassifier"

    def __init__(
        self,
        hidden: int = 256,
        alpha: float = 1e-2,
        solver: str = "lbfgs",
        max_iter: int = 300,
        learning_rate: float = 1e-3,
        class_weight: str | None = None,
        seed: int = 0,
        pca_dims: int = 128,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 3,
        val_fraction: float = 0.1,
        fast_min_rows: int = 2000,
    ):
        super().__init__(hidden, alpha, solver, max_iter, learning_rate, class_weight, seed)
        self.pca_dims = pca_dims
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.fast_min_rows = fast_min_rows

    def _prepare(self, X, y, groups) -> tuple[Projection, _Part]:
        X = np.asarray(X, dtype=np.float32)  # one float32 copy of the part serves the PCA and the projection
        proj = fit_projection(X, self.pca_dims)
        fit, val, how = inner_split(len(y), groups, self.val_fraction, self.seed)
        w = sample_weight(y, self.class_weight)
        w = np.ones(len(y), dtype=np.float32) if w is None else w
        if y.ndim == 2:
            t, n_out = y.astype(np.float32), y.shape[1]
        else:
            present, t = local_classes(y)
            n_out = len(present)
        return proj, _Part(proj.transform(X), t, w, fit, val, n_out, how)

    def _fit_fast(self, X, y, trains, groups):
        parts = [self._prepare(X[tr], y[tr], None if groups is None else groups[tr]) for tr in trains]
        if not parts:
            return []
        nets, reports = self._train([p for _, p in parts], y.ndim == 2)
        return [(FittedMLP(proj, *net, y.ndim == 2), {
            "solver": "torch-adam batched MLP", "pca_dims": proj.dims,
            "pca_explained_variance": round(proj.explained, 4), "hidden": int(self.hidden),
            "batch_size": int(self.batch_size), **rep,
            "early_stopping": f"patience {self.patience} on {part.split}" if len(part.val) else part.split,
            "gave_up": "features beyond the PCA axes, the held-out rows (not refitted), full-batch lbfgs",
        }) for (proj, part), net, rep in zip(parts, nets, reports)]

    def _train(self, parts: list[_Part], multilabel: bool):
        """Train one network per part, all as one batched network. Returns per part ``(W1, b1, W2, b2)``
        (numpy, the best epoch's) and a report ``{"epochs", "best_epoch", "max_epochs"}``."""
        F, H = len(parts), int(self.hidden)
        r = parts[0].Z.shape[1]
        K = max(p.n_out for p in parts)
        sizes = [len(p.fit) for p in parts]
        bs = [max(1, min(int(self.batch_size), m)) for m in sizes]
        B = max(bs)
        # Mini-batches per epoch, per part. A small part's "epoch" spans EPOCH_MIN_ROWS rows (several
        # passes), so its stopping rule sees as many updates between checks as a large part's does.
        steps = [-(-max(m, EPOCH_MIN_ROWS) // b) for m, b in zip(sizes, bs)]
        Mx = max(sizes)
        Z = torch.zeros(F, Mx, r)
        T = torch.zeros(F, Mx, K) if multilabel else torch.zeros(F, Mx, dtype=torch.int64)
        Wr = torch.zeros(F, Mx)
        mask = torch.zeros(F, 1, K)  # -1e4 on output units a part does not have (absent classes)
        params = [torch.zeros(F, r, H), torch.zeros(F, 1, H), torch.zeros(F, H, K), torch.zeros(F, 1, K)]
        for f, p in enumerate(parts):
            Z[f, : sizes[f]] = torch.from_numpy(p.Z[p.fit])
            T[f, : sizes[f]] = torch.from_numpy(p.t[p.fit])
            Wr[f, : sizes[f]] = torch.from_numpy(p.w[p.fit])
            mask[f, 0, p.n_out :] = -1e4
            # Glorot-uniform initial weights, as scikit-learn's MLP, from a generator of this part's own.
            gen = torch.Generator().manual_seed(int(self.seed))
            for li, (fan_in, fan_out) in enumerate(((r, H), (H, p.n_out))):
                bound = float(np.sqrt(6.0 / (fan_in + fan_out)))
                params[2 * li][f, :, :fan_out] = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
                params[2 * li + 1][f, 0, :fan_out] = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
        m1 = [torch.zeros_like(q) for q in params]
        m2 = [torch.zeros_like(q) for q in params]
        rngs = [np.random.default_rng(int(self.seed)) for _ in parts]
        order = [rng.permutation(m) for rng, m in zip(rngs, sizes)]
        pos, cursor, epoch = [0] * F, [0] * F, [0] * F
        best = [np.inf] * F
        best_epoch, bad = [0] * F, [0] * F
        best_params = [[q[f].clone() for q in params] for f in range(F)]
        active = list(range(F))  # original part index of each row of the batched tensors
        lr, (b1, b2) = float(self.learning_rate), _ADAM_BETAS
        step = 0
        while active:
            step += 1
            A = len(active)
            idx = torch.zeros(A, B, dtype=torch.int64)
            live = torch.zeros(A, B)
            for a, f in enumerate(active):
                if cursor[f] >= sizes[f]:  # this pass over the part is done: a new order
                    order[f], cursor[f] = rngs[f].permutation(sizes[f]), 0
                chunk = order[f][cursor[f] : cursor[f] + bs[f]]
                cursor[f] += len(chunk)
                idx[a, : len(chunk)] = torch.from_numpy(chunk)
                live[a, : len(chunk)] = 1.0
            rows = torch.arange(A)[:, None]
            zb, wb = Z[rows, idx], Wr[rows, idx] * live
            W1, c1, W2, c2 = params
            # Forward and backward by hand: four batched products per step, no autograd graph. The
            # products with few output units (K) are laid out as BLAS runs them fastest on one core:
            # W2 transposed in memory, and W2's gradient as the transpose of (K, H) (3-7x faster).
            pre = torch.baddbmm(c1, zb, W1)  # (A, B, H)
            h = pre.clamp_min(0.0)
            s = torch.baddbmm(c2, h, W2.transpose(1, 2).contiguous().transpose(1, 2)).add_(mask)  # (A, B, K)
            wn = wb / wb.sum(1, keepdim=True).clamp_min(1e-12)  # each part's loss: weighted mean over its rows
            if multilabel:
                dS = torch.sigmoid(s).sub_(T[rows, idx]).mul_((wn / K)[:, :, None])
            else:
                dS = torch.softmax(s, 2)
                dS.scatter_add_(2, T[rows, idx][:, :, None], torch.full((A, B, 1), -1.0))
                dS.mul_(wn[:, :, None])
            reg = (float(self.alpha) / live.sum(1))[:, None, None]  # scikit-learn's L2: alpha/2 ||W||^2 / batch rows
            # ReLU's backward (the gradient where pre > 0, else 0) as autograd computes it: a tenth of the
            # time of multiplying by the boolean mask.
            dH = torch.ops.aten.threshold_backward(torch.bmm(dS, W2.transpose(1, 2)), pre, 0.0)
            grads = [
                torch.bmm(zb.transpose(1, 2), dH).add_(reg * W1),
                dH.sum(1, keepdim=True),
                torch.bmm(dS.transpose(1, 2), h).transpose(1, 2).add(reg * W2),
                dS.sum(1, keepdim=True),
            ]
            with torch.no_grad():
                # Adam over the four tensors at once (foreach kernels: a quarter of the per-tensor loop's time).
                corr1, corr2 = 1 - b1**step, 1 - b2**step
                torch._foreach_mul_(m1, b1)
                torch._foreach_add_(m1, grads, alpha=1 - b1)
                torch._foreach_mul_(m2, b2)
                torch._foreach_addcmul_(m2, grads, grads, value=1 - b2)
                den = torch._foreach_sqrt(m2)
                torch._foreach_div_(den, corr2**0.5)
                torch._foreach_add_(den, _ADAM_EPS)
                torch._foreach_addcdiv_(params, m1, den, value=-lr / corr1)
                finished = []
                for a, f in enumerate(active):
                    pos[f] += 1
                    if pos[f] < steps[f]:
                        continue
                    pos[f], epoch[f] = 0, epoch[f] + 1
                    val_loss = self._val_loss(parts[f], [q[a] for q in params], mask[a], multilabel)
                    if val_loss < best[f] - _TOL or not len(parts[f].val):
                        best[f], best_epoch[f], bad[f] = val_loss, epoch[f], 0
                        best_params[f] = [q[a].clone() for q in params]
                    else:
                        bad[f] += 1
                    if bad[f] >= int(self.patience) or epoch[f] >= int(self.max_epochs):
                        finished.append(a)
                if finished:
                    keep = torch.tensor([a for a in range(A) if a not in finished], dtype=torch.int64)
                    active = [active[a] for a in keep.tolist()]
                    params = [q.index_select(0, keep) for q in params]
                    m1 = [q.index_select(0, keep) for q in m1]
                    m2 = [q.index_select(0, keep) for q in m2]
                    Z, T, Wr, mask = (q.index_select(0, keep) for q in (Z, T, Wr, mask))
        nets = []
        for f, p in enumerate(parts):
            W1, c1, W2, c2 = (q.numpy() for q in best_params[f])
            nets.append((W1, c1[0], W2[:, : p.n_out], c2[0, : p.n_out]))
        reports = [{"epochs": epoch[f], "best_epoch": best_epoch[f], "max_epochs": int(self.max_epochs),
                    "learning_rate": float(self.learning_rate)} for f in range(F)]
        return nets, reports

    @staticmethod
    def _val_loss(part: _Part, params, mask, multilabel: bool) -> float:
        """Weighted mean loss of one part's current weights on its validation rows (``inf`` without any)."""
        if not len(part.val):
            return float("inf")
        W1, c1, W2, c2 = params
        z = torch.from_numpy(part.Z[part.val])
        s = torch.relu(z @ W1 + c1) @ W2 + c2 + mask
        w = torch.from_numpy(part.w[part.val])
        if multilabel:
            per_row = torch.nn.functional.binary_cross_entropy_with_logits(s, torch.from_numpy(part.t[part.val]), reduction="none").mean(1)
        else:
            per_row = -torch.log_softmax(s, 1).gather(1, torch.from_numpy(part.t[part.val]).long()[:, None]).squeeze(1)
        return float((per_row * w).sum() / w.sum())
