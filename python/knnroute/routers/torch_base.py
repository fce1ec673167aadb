"""The trainer shared by the torch routers (:mod:`knnroute.routers.torch_routers`).

Torch is imported inside methods only (the networks, :mod:`knnroute.routers.torch_nets`, when a router is
fitted), so importing this module is cheap; without torch, constructing a router raises ``ImportError``.

The five torch routers follow the Router protocol (:mod:`knnroute.routers.base`) and share this trainer:

* **Targets.** Scores as given ([0, 1]); costs as the per-model z-score ``(c - mean_m) / std_m`` (see
  :mod:`knnroute.routers.training`), mapped back to dollars and clipped at 0 on prediction. The paper's
  Graph/Attn routers predicted token counts; most of our data has no token counts, so every router here
  predicts the cost in dollars directly. Loss: ``MSE(score) + cost_weight * MSE(cost z)`` over the observed
  cells only (NaN cells are masked out; the paper's α is not reported, ``cost_weight=1`` by default).
* **Training.** Adam, mini-batches of prompts, gradient-norm clipping, early stopping on the validation
  loss with ``patience`` epochs and the best weights restored; ``max_epochs`` caps the fit time. The
  validation set is the one passed to ``fit``, else a seeded ``validation_fraction`` hold-out.
* **Determinism.** ``random_state`` seeds initialisation, shuffling and the hold-out; training runs inside
  ``torch.random.fork_rng`` (the caller's global torch RNG is left alone) with ``n_threads`` intra-op
  threads (restored afterwards). Same seed, same thread count -> same predictions.
* **Neighbours** (Graph, Attn, D-Attn). The support set is the training prompts with their outcomes.
  Each prompt's k nearest support prompts by exact cosine similarity are inputs to the network. When
  training, a prompt never sees itself (leave-one-out), otherwise the network learns to copy its own
  outcome. With an internal hold-out, the support set while training is the training part only (the
  hold-out prompts' outcomes are neither inputs nor targets); after training it is every prompt passed
  to ``fit``. The paper retrieves neighbours per model; here one list per prompt serves all models, and
  a neighbour's missing outcome is an input of 0 with an "observed" flag of 0.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from knnroute.routers.base import (
    ParamsMixin,
    UtilityRouterMixin,
    as_features,
    check_is_fitted,
    seed_from,
    validate_fit,
)
from knnroute.routers.neighbours import neighbours
from knnroute.routers.training import column_stats, internal_split, score_means

__all__ = ["ATTRS_DOC", "COMMON_PARAMS_DOC", "TorchRouter"]

_INSTALL_HINT = "the torch-based routers need PyTorch: pip install '.[torch]' in the knnroute checkout"


def _require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise ImportError(_INSTALL_HINT)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return torch


@contextlib.contextmanager
def _torch_session(torch: Any, seed: int | None, n_threads: int | None) -> Iterator[None]:
    """Seeded private RNG state and a bounded intra-op thread count, both restored on exit."""
    old_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(max(1, int(n_threads)))
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(old_threads)


def _net_class(name: str) -> Any:
    """The network class ``name`` from :mod:`knnroute.routers.torch_nets` (imports torch)."""
    _import_torch()  # a clear ImportError when torch is missing
    from knnroute.routers import torch_nets

    return torch_nets.NETS[name]


class TorchRouter(UtilityRouterMixin, ParamsMixin):
    """Common trainer; subclasses set ``_net_name`` and implement ``_net_kwargs``."""

    _net_name = ""
    # Constructor parameters every subclass stores through _set_common (declared for the type checker).
    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    max_train_rows: int | None
    validation_fraction: float
    cost_weight: float
    grad_clip: float
    n_threads: int | None
    random_state: int | np.random.Generator | None

    def _net_kwargs(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {}

    def _k(self) -> int | None:
        return None

    def _set_common(self, **kw: Any) -> None:
        """Store the constructor parameters (after checking that torch is installed)."""
        _require_torch()
        for name, value in kw.items():
            setattr(self, name, value)

    # ---- fitting ---------------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        scores: Any,
        costs: Any,
        model_names: Sequence[str] | None = None,
        X_val: Any = None,
        scores_val: Any = None,
        costs_val: Any = None,
    ) -> TorchRouter:
        """Train the network.

        Parameters
        ----------
        X : array-like (n, d)
            Prompt embeddings (unit rows expected; neighbour search normalises anyway).
        scores, costs : array-like (n, M)
            True scores on [0, 1] and costs in USD per query; NaN = missing (masked out of the loss).
        model_names : sequence of str of length M, optional
        X_val, scores_val, costs_val : array-like, optional
            Validation split for early stopping; without it a ``validation_fraction`` hold-out is used.

        Returns
        -------
        self
        """
        torch = _import_torch()
        X, S, C, names, val = validate_fit(
            X, scores, costs, model_names, X_val, scores_val, costs_val, dtype=np.float32
        )
        n, d = X.shape
        M = S.shape[1]
        seed = seed_from(self.random_state)
        cost_mean, cost_std = column_stats(C)
        score_init = score_means(S)
        k = self._k()

        if val is None:
            tr, va = internal_split(n, self.validation_fraction, seed)
            sup_rows = tr  # hold-out outcomes are neither inputs nor targets while training
            val_q = (X[va], S[va], C[va]) if va.size else None
        else:
            tr = np.arange(n)
            sup_rows = tr
            val_q = val
        if k is not None:
            if sup_rows.size < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 training prompts for neighbours")
            k_eff = int(min(k, sup_rows.size - 1))
        cap = None if self.max_train_rows is None else max(2, int(self.max_train_rows))
        rng_cap = np.random.default_rng(seed)
        q_sel = np.sort(rng_cap.choice(tr.size, cap, replace=False)) if cap and tr.size > cap else None
        if val_q is not None and cap and val_q[0].shape[0] > cap:
            v_sel = np.sort(rng_cap.choice(val_q[0].shape[0], cap, replace=False))
            val_q = tuple(a[v_sel] for a in val_q)

        with _torch_session(torch, seed, self.n_threads):
            net = _net_class(self._net_name)(d, M, score_init, **self._net_kwargs())
            sup = self._support_tensors(torch, X[sup_rows], S[sup_rows], C[sup_rows], cost_mean, cost_std)
            q_rows = tr if q_sel is None else tr[q_sel]  # training targets (capped at max_train_rows)
            train = self._query_tensors(torch, X[q_rows], S[q_rows], C[q_rows], cost_mean, cost_std)
            if k is not None:
                # tr == sup_rows: training prompts are the support rows, leave-one-out
                nb_tr = neighbours(X[sup_rows], X[tr], k_eff, exclude_self=True)[0]
                train["nb"] = torch.from_numpy(np.ascontiguousarray(nb_tr if q_sel is None else nb_tr[q_sel]))
            valid = None
            if val_q is not None:
                valid = self._query_tensors(torch, *val_q, cost_mean, cost_std)
                if k is not None:
                    valid["nb"] = torch.from_numpy(neighbours(X[sup_rows], val_q[0], k_eff, False)[0])
            history = self._train(torch, net, sup, train, valid, seed)
        self.net_ = net
        self.net_.eval()
        self.support_ = self._support_tensors(torch, X, S, C, cost_mean, cost_std) if k is not None else None
        self.support_X_ = X if k is not None else None
        self.k_ = k_eff if k is not None else None
        self.cost_mean_, self.cost_std_ = cost_mean, cost_std
        self.history_ = history
        self.n_train_rows_ = int(q_rows.size)
        self.n_epochs_ = len(history["val_loss"] or history["train_loss"])
        self.best_epoch_ = history["best_epoch"]
        self.model_names_ = names
        self.n_features_in_ = d
        return self

    @staticmethod
    def _support_tensors(
        torch: Any, X: np.ndarray, S: np.ndarray, C: np.ndarray, cost_mean: np.ndarray, cost_std: np.ndarray
    ) -> dict[str, Any]:
        obs_s, obs_c = np.isfinite(S), np.isfinite(C)
        s0 = np.where(obs_s, S, 0.0)
        cz0 = np.where(obs_c, (C - cost_mean) / cost_std, 0.0)
        observed = (obs_s & obs_c).astype(np.float64)
        edges = np.stack([s0, cz0, observed], axis=-1).astype(np.float32)  # (N, M, 3)
        flat = np.concatenate([s0, cz0, observed], axis=1).astype(np.float32)  # (N, 3M)
        return {
            "X": torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
            "edges": torch.from_numpy(edges),
            "flat": torch.from_numpy(flat),
        }

    @staticmethod
    def _query_tensors(
        torch: Any, X: np.ndarray, S: np.ndarray, C: np.ndarray, cost_mean: np.ndarray, cost_std: np.ndarray
    ) -> dict[str, Any]:
        obs_s, obs_c = np.isfinite(S), np.isfinite(C)

        def as_t(a: Any) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        return {
            "x": as_t(X),
            "s": as_t(np.where(obs_s, S, 0.0)),
            "ms": as_t(obs_s),
            "c": as_t(np.where(obs_c, (C - cost_mean) / cost_std, 0.0)),
            "mc": as_t(obs_c),
        }

    def _loss(self, torch: Any, net: Any, sup: Any, q: dict[str, Any], idx: Any) -> Any:
        nb = q["nb"][idx] if "nb" in q else None
        s_pred, c_pred = net(q["x"][idx], nb, sup)
        ms, mc = q["ms"][idx], q["mc"][idx]
        ls = (((s_pred - q["s"][idx]) ** 2) * ms).sum() / ms.sum().clamp(min=1.0)
        lc = (((c_pred - q["c"][idx]) ** 2) * mc).sum() / mc.sum().clamp(min=1.0)
        return ls + self.cost_weight * lc

    def _train(
        self, torch: Any, net: Any, sup: Any, train: dict[str, Any], valid: dict[str, Any] | None, seed: int
    ) -> dict[str, Any]:
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        n_tr = train["x"].shape[0]
        bs = max(2, int(self.batch_size))
        history: dict[str, Any] = {"train_loss": [], "val_loss": [], "best_epoch": None}
        best, best_state, bad = np.inf, None, 0
        for epoch in range(int(self.max_epochs)):
            net.train()
            perm = torch.randperm(n_tr, generator=gen)
            total, count = 0.0, 0
            for start in range(0, n_tr, bs):
                idx = perm[start : start + bs]
                if idx.numel() < 2 and n_tr >= 2:  # BatchNorm needs 2 rows: skip a lone last row (reshuffled)
                    continue
                loss = self._loss(torch, net, sup, train, idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                opt.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            history["train_loss"].append(total / max(count, 1))
            if valid is None:
                continue
            vloss = self._evaluate(torch, net, sup, valid)
            history["val_loss"].append(vloss)
            if vloss < best - 1e-6 * abs(best) or best_state is None:
                best, bad = vloss, 0
                best_state = copy.deepcopy(net.state_dict())
                history["best_epoch"] = epoch
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        return history

    def _evaluate(self, torch: Any, net: Any, sup: Any, q: dict[str, Any]) -> float:
        net.eval()
        n = q["x"].shape[0]
        ms_total = float(q["ms"].sum().clamp(min=1.0))
        mc_total = float(q["mc"].sum().clamp(min=1.0))
        se_s = se_c = 0.0
        with torch.no_grad():
            for start in range(0, n, 1024):
                idx = torch.arange(start, min(start + 1024, n))
                nb = q["nb"][idx] if "nb" in q else None
                s_pred, c_pred = net(q["x"][idx], nb, sup)
                se_s += float((((s_pred - q["s"][idx]) ** 2) * q["ms"][idx]).sum())
                se_c += float((((c_pred - q["c"][idx]) ** 2) * q["mc"][idx]).sum())
        return se_s / ms_total + self.cost_weight * se_c / mc_total

    # ---- prediction ------------------------------------------------------------------------------

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predicted scores and costs.

        Parameters
        ----------
        X : array-like (n, d)

        Returns
        -------
        s_hat : ndarray (n, M) float64
        c_hat : ndarray (n, M) float64
            USD per query, clipped at 0.
        """
        check_is_fitted(self)
        torch = _import_torch()
        X = as_features(X, "X", self.n_features_in_, dtype=np.float32)
        n = X.shape[0]
        M = len(self.model_names_)
        s_hat = np.empty((n, M))
        cz_hat = np.empty((n, M))
        if n == 0:
            return s_hat, cz_hat
        nb_all = None
        if self.k_ is not None:
            assert self.support_X_ is not None  # fitted with k_ set keeps its support set
            nb_all = torch.from_numpy(neighbours(self.support_X_, X, self.k_, exclude_self=False)[0])
        xt = torch.from_numpy(X)
        with _torch_session(torch, None, self.n_threads), torch.no_grad():
            self.net_.eval()
            for start in range(0, n, 1024):
                sl = slice(start, min(start + 1024, n))
                s, c = self.net_(xt[sl], None if nb_all is None else nb_all[sl], self.support_)
                s_hat[sl], cz_hat[sl] = s.double().numpy(), c.double().numpy()
        return s_hat, np.maximum(cz_hat * self.cost_std_ + self.cost_mean_, 0.0)


COMMON_PARAMS_DOC = """
    lr : float, default 1e-3
        Adam learning rate.
    weight_decay : float, default 1e-5
    batch_size : int, default {batch_size}
        Prompts per step.
    max_epochs : int, default {max_epochs}
        Hard cap on epochs (bounds the fit time).
    patience : int, default {patience}
        Early stopping: epochs without a lower validation loss before stopping (best weights restored).
    max_train_rows : int or None, default {max_train_rows}
        Cap on the prompts used as training targets per epoch, and on the early-stopping prompts: above
        it a seeded subsample of that size is used (None: all). Bounds the fit time so that the full
        ``knnroute eval --routers all`` grid fits the 2-core budget. Neighbour routers still retrieve
        from every training prompt (the support set is never subsampled).
    validation_fraction : float, default 0.1
        Hold-out used for early stopping when ``fit`` gets no validation data.
    cost_weight : float, default 1.0
        Weight of the cost-z MSE against the score MSE in the loss (the paper's unreported α).
    grad_clip : float, default 5.0
        Gradient-norm clip.
    n_threads : int or None, default 1
        Torch intra-op threads while fitting/predicting (restored afterwards); None leaves torch's setting.
        The default is 1 because these networks run many small products: on the shared 2-core machine,
        with other jobs running, 2 OpenMP threads made an epoch several times slower than 1 (threads
        spin-waiting for a busy core). Use 2 on an otherwise idle machine.
    random_state : int, Generator or None, default None
"""

ATTRS_DOC = """
    Attributes
    ----------
    net_ : torch.nn.Module
        The trained network (eval mode).
    k_ : int or None
        Neighbours used (``min(k, n_support - 1)``); None for routers without neighbours.
    support_ : dict of tensors or None
        Support prompts and their outcomes (all prompts passed to ``fit``), for neighbour routers.
    cost_mean_, cost_std_ : ndarray (M,)
        Cost z-scaling.
    history_ : dict
        ``train_loss`` and ``val_loss`` per epoch, ``best_epoch``.
    n_epochs_, best_epoch_ : int
    n_train_rows_ : int
        Prompts used as training targets (``min(n_train, max_train_rows)``).
    model_names_ : list of str
    n_features_in_ : int
"""
