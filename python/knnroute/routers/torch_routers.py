"""Learned utility-prediction baselines on PyTorch (CPU): matrix factorisation, graph and attention routers.

The paper's Linear MF, MLP MF, Graph, Attentive and Double-Attentive routers (PAPER.md §4), behind the
``torch`` extra (``pip install knnroute[torch]``). Torch is imported inside methods only, so importing
this module is cheap; without torch, constructing or fitting a router raises ``ImportError``.

All five follow the Router protocol of ``docs/internals.md`` and share one trainer:

* **Targets.** Scores as given ([0, 1]); costs as the per-model z-score ``(c - mean_m) / std_m`` (see
  :mod:`knnroute.routers.baselines`), mapped back to dollars and clipped at 0 on prediction. The paper's
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
from functools import cache
from typing import Any

import numpy as np

from knnroute.routers.baselines import (
    _as_X,
    _check_is_fitted,
    _column_stats,
    _internal_split,
    _neighbours,
    _ParamsMixin,
    _score_means,
    _seed_from,
    _UtilityRouterMixin,
    _validate_fit,
)

__all__ = ["AttnRouter", "DAttnRouter", "GraphRouter", "LinearMFRouter", "MLPMFRouter"]

_INSTALL_HINT = "the torch-based routers need PyTorch: pip install knnroute[torch]"


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


# --------------------------------------------------------------------------------------------------
# networks (defined on first use, so torch is imported lazily; exposed as module attributes through
# __getattr__ so fitted routers pickle and unpickle)
# --------------------------------------------------------------------------------------------------

_NET_NAMES = ("LinearMFNet", "MLPMFNet", "GraphNet", "AttnNet", "DAttnNet")


def __getattr__(name: str) -> Any:
    if name in _NET_NAMES:
        return _nets()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _nets() -> dict[str, type]:
    torch = _import_torch()
    nn = torch.nn
    F = torch.nn.functional

    def _rows(table: Any, idx: Any) -> Any:
        """``table[idx]`` for a row index tensor: ``F.embedding`` (a plain gather) measured ~7x faster
        than advanced indexing for these shapes on CPU, forward, and faster backward too."""
        flat = F.embedding(idx, table.reshape(table.shape[0], -1))
        return flat.reshape(*idx.shape, *table.shape[1:])

    class _Net(nn.Module):
        """Base: forward(xq (B, d), nb (B, k) int64 or None, support) -> (score (B, M), cost z (B, M))."""

        uses_neighbours = False

        def __init__(self, score_init: Any) -> None:
            super().__init__()
            # per-model output bias starting at the model's mean training score (the cost z starts at 0)
            self.score_bias = nn.Parameter(torch.as_tensor(score_init, dtype=torch.float32).clone())

    class LinearMFNet(_Net):
        """``s = (W_s x) . e_m + b_s^m``, ``c = (W_c x) . e_m + b_c^m``; ``e_m`` a learned d_m-dim model embedding.

        The ``W`` layers carry a bias ``w0``, so ``w0 . e_m`` adds a learned per-model offset on top of
        ``b^m``.
        """

        def __init__(self, d: int, M: int, score_init: Any, dim: int = 128) -> None:
            super().__init__(score_init)
            self.emb = nn.Parameter(torch.randn(M, dim) / dim**0.5)
            self.ws = nn.Linear(d, dim)
            self.wc = nn.Linear(d, dim)

        def forward(self, xq: Any, nb: Any, support: Any) -> tuple[Any, Any]:
            return self.ws(xq) @ self.emb.T + self.score_bias, self.wc(xq) @ self.emb.T

    class MLPMFNet(_Net):
        """``s = MLP_s([x; e_m])``, ``c = MLP_c([x; e_m])``, each d + d_m -> hidden -> hidden -> 1, ReLU.

        The first layer of ``[x; e_m]`` is split as ``A x + B e_m`` so the prompt part is computed once per
        prompt, not once per (prompt, model) pair (the same function, fewer multiplications).
        """

        def __init__(self, d: int, M: int, score_init: Any, dim: int = 128, hidden: int = 100) -> None:
            super().__init__(score_init)
            self.emb = nn.Parameter(torch.randn(M, dim) / dim**0.5)
            self.x_in = nn.ModuleList([nn.Linear(d, hidden) for _ in range(2)])
            self.e_in = nn.ModuleList([nn.Linear(dim, hidden, bias=False) for _ in range(2)])
            self.mid = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(2)])
            self.out = nn.ModuleList([nn.Linear(hidden, 1) for _ in range(2)])

        def forward(self, xq: Any, nb: Any, support: Any) -> tuple[Any, Any]:
            outs = []
            for t in range(2):  # 0: score head, 1: cost head
                h = F.relu(self.x_in[t](xq)[:, None, :] + self.e_in[t](self.emb)[None, :, :])  # (B, M, H)
                outs.append(self.out[t](F.relu(self.mid[t](h))).squeeze(-1))
            return outs[0] + self.score_bias, outs[1]

    class GraphNet(_Net):
        """GeneralConv-style message passing on each prompt's bipartite prompt–model graph.

        Nodes: the query prompt, its k support neighbours (``W_proj x``) and the M models (learned
        embeddings). Edges: every prompt node to every model node; a neighbour's edge to model m carries
        ``[score, cost z, observed]`` of that neighbour's outcome, the query's edges carry ``[0, 0, 0]``
        (unknown). A layer is PyG ``GeneralConv`` with mean aggregation and a skip connection,
        ``h_i' = ReLU(BN(mean_j (W_msg h_j + W_edge e_ij) + W_self h_i))``, with one BatchNorm per node
        type. Because the message is affine in ``(h_j, e_ij)``, the mean of the messages is the message of
        the means; the layer is computed that way (exact, no per-edge tensor). A head MLP on
        ``[h_query; h_model]`` gives (score, cost z) per model.
        """

        uses_neighbours = True

        def __init__(self, d: int, M: int, score_init: Any, hidden: int = 128, n_layers: int = 2) -> None:
            super().__init__(score_init)
            self.proj = nn.Linear(d, hidden)
            self.emb = nn.Parameter(torch.randn(M, hidden) / hidden**0.5)
            self.msg = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(n_layers)])
            self.edge = nn.ModuleList([nn.Linear(3, hidden) for _ in range(n_layers)])
            self.skip = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(n_layers)])
            self.bn = nn.ModuleList(
                [nn.ModuleList([nn.BatchNorm1d(hidden) for _ in range(3)]) for _ in range(n_layers)]
            )
            self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

        @staticmethod
        def _bn_relu(bn: Any, h: Any) -> Any:
            shape = h.shape
            return F.relu(bn(h.reshape(-1, shape[-1])).reshape(shape))

        def forward(self, xq: Any, nb: Any, support: Any) -> tuple[Any, Any]:
            Xs, outcomes = support["X"], support["edges"]  # (N, d), (N, M, 3)
            B, k = nb.shape
            M = self.emb.shape[0]
            E = _rows(outcomes, nb)  # (B, k, M, 3)
            hq = self.proj(xq)  # (B, h)
            hm = self.emb.expand(B, M, -1)  # (B, M, h)
            # Layer-0 neighbour states are proj(x_i), query-independent: project each distinct support row
            # of the batch once, gather later. hn holds the states after layer 0 (None before).
            uniq, inv = torch.unique(nb, return_inverse=True)
            pu = self.proj(Xs.index_select(0, uniq))  # (U, h)
            hn = None
            e_to_model = E.sum(1) / (k + 1)  # mean over the k neighbours and the query (query edge = 0)
            e_to_nb = E.mean(2)  # (B, k, 3): mean over models
            zero_edge = E.new_zeros(B, 3)
            L = len(self.msg)
            for layer in range(L):
                msg, edge, skip, bns = self.msg[layer], self.edge[layer], self.skip[layer], self.bn[layer]
                if hn is None:
                    hn_mean = F.embedding(inv, pu).mean(1)
                else:
                    hn_mean = hn.mean(1)
                src_for_models = (hn_mean * k + hq) / (k + 1)  # (B, h)
                model_mean = hm.mean(1)  # (B, h)
                new_m = msg(src_for_models)[:, None, :] + edge(e_to_model) + skip(hm)
                new_q = msg(model_mean) + edge(zero_edge) + skip(hq)
                if layer < L - 1:  # the last layer's neighbour states feed nothing
                    if hn is None:
                        self_n = F.embedding(inv, skip(pu))
                    else:
                        self_n = skip(hn)
                    new_n = msg(model_mean)[:, None, :] + edge(e_to_nb) + self_n
                    hn = self._bn_relu(bns[1], new_n)
                hq = self._bn_relu(bns[0], new_q)
                hm = self._bn_relu(bns[2], new_m)
            out = self.head(torch.cat([hq[:, None, :].expand(B, M, -1), hm], dim=-1))  # (B, M, 2)
            return out[..., 0] + self.score_bias, out[..., 1]

    class _AttnBase(_Net):
        """Shared pieces of the attentive routers (4 heads x 32 = 128 by default).

        Neighbour i is encoded as ``e_i = W_proj x_i + W_out o_i`` with ``o_i`` its outcomes on all models
        (score, cost z, observed). One multi-head self-attention layer over the k neighbours with a residual
        gives ``Z_i = e_i + W_o SA(e)_i``. Cross-attention from the query (queries ``W_q W_proj x``,
        keys ``W_k W_proj x_i``: attention by prompt similarity, values ``W_v Z_i``) pools them.

        No LayerNorm or feed-forward sits between the two attentions, so the pooled value
        ``sum_i a_i W_v Z_i`` equals ``W_v (sum_i a_i e_i + W_o sum_i a_i SA_i)``: the projections are
        applied after pooling (an exact rewrite) and no (B, k, h) x (h, h) product is formed. Query, key
        and value projections of the self-attention act on ``e_i`` only, which does not depend on the
        query, so they are computed once per distinct support row in the batch.
        """

        uses_neighbours = True

        def __init__(self, d: int, M: int, score_init: Any, heads: int = 4, head_dim: int = 32) -> None:
            super().__init__(score_init)
            h = heads * head_dim
            self.heads, self.head_dim, self.hidden = heads, head_dim, h
            self.proj = nn.Linear(d, h)
            self.out_enc = nn.Linear(3 * M, h)
            self.sa_qkv = nn.Linear(h, 3 * h)
            self.sa_o = nn.Linear(h, h)
            self.ca_q = nn.Linear(h, h)
            self.ca_k = nn.Linear(h, h)
            self.ca_v = nn.Linear(h, h)
            self.ca_o = nn.Linear(h, h)

        def _encode(self, nb: Any, support: Any) -> tuple[Any, Any, Any]:
            """Neighbour elements ``e`` (B, k, h), self-attention output ``sa`` (B, k, h), keys (B, H, k, dh)."""
            Xs, flat = support["X"], support["flat"]  # (N, d), (N, 3M)
            B, k = nb.shape
            H, dh, h = self.heads, self.head_dim, self.hidden

            # per distinct support row of the batch, then gathered: each part separately (splitting the
            # gathered (B, k, 5h) block instead made its backward concatenate the five gradients)
            uniq, inv = torch.unique(nb, return_inverse=True)
            p = self.proj(Xs.index_select(0, uniq))
            e_u = p + self.out_enc(flat.index_select(0, uniq))
            q_u, k_u, v_u = self.sa_qkv(e_u).split(h, dim=-1)
            e, q, kk, v, ck = (F.embedding(inv, t) for t in (e_u, q_u, k_u, v_u, self.ca_k(p)))  # (B, k, h)

            def heads_first(t: Any) -> Any:
                return t.reshape(B, k, H, dh).transpose(1, 2)  # (B, H, k, dh)

            sa = F.scaled_dot_product_attention(heads_first(q), heads_first(kk), heads_first(v))
            sa = sa.transpose(1, 2).reshape(B, k, h)
            return e, sa, heads_first(ck)

        def _pool(self, a: Any, e: Any, sa: Any) -> Any:
            """Cross-attention values pooled per head, heads concatenated: a (B, ..., H, k) -> (B, ..., h).

            Head j's output is ``W_v[j] sum_i a_ji Z_i`` with ``W_v[j]`` the j-th block of rows of ``W_v``
            (only that block is applied, not the whole ``W_v``).
            """
            B, k = e.shape[0], e.shape[1]
            H, dh = self.heads, self.head_dim
            a_flat = a.reshape(B, -1, k)  # (B, X, k): X = H (Attn) or M * H (D-Attn)
            # sum_i a_i (e_i + W_o sa_i + b_o) with the weights summing to 1: apply W_o before or after
            # pooling, whichever touches fewer rows (k per prompt before, X after); the result is the same
            if a_flat.shape[1] < k:
                pooled_sa = torch.einsum("bxk,bkd->bxd", a_flat, sa)
                z_bar = torch.einsum("bxk,bkd->bxd", a_flat, e) + self.sa_o(pooled_sa)
            else:
                z_bar = torch.einsum("bxk,bkd->bxd", a_flat, e + self.sa_o(sa))
            z_bar = z_bar.reshape(*a.shape[:-1], e.shape[-1])  # (B, ..., H, h)
            w = self.ca_v.weight.reshape(H, dh, -1)  # (H, dh, h)
            v = torch.einsum("...jd,jed->...je", z_bar, w) + self.ca_v.bias.reshape(H, dh)
            return v.reshape(*v.shape[:-2], H * dh)

    class AttnNet(_AttnBase):
        """Attentive router (conditional neural process): self-attention over the neighbours' outcomes,
        cross-attention from the query, an MLP head on ``[latent; W_proj x]`` -> (score, cost z) for all M."""

        def __init__(self, d: int, M: int, score_init: Any, heads: int = 4, head_dim: int = 32) -> None:
            super().__init__(d, M, score_init, heads, head_dim)
            h = self.hidden
            self.head = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 2 * M))

        def forward(self, xq: Any, nb: Any, support: Any) -> tuple[Any, Any]:
            B = xq.shape[0]
            H, dh = self.heads, self.head_dim
            e, sa, ck = self._encode(nb, support)
            pq = self.proj(xq)
            cq = self.ca_q(pq).reshape(B, H, 1, dh)
            a = torch.softmax((cq @ ck.transpose(-1, -2)).squeeze(2) / dh**0.5, dim=-1)  # (B, H, k)
            latent = self.ca_o(self._pool(a, e, sa))  # (B, h)
            out = self.head(torch.cat([latent, pq], dim=-1))
            M = out.shape[1] // 2
            return out[:, :M] + self.score_bias, out[:, M:]

    class DAttnNet(_AttnBase):
        """Double-attentive router: attention across neighbours, then across models.

        As :class:`AttnNet` up to the cross-attention, which here runs once per model: the query for model
        m is ``W_q (W_proj x + u_m)`` (``u_m`` a learned model embedding), so each model weighs the
        neighbours its own way, and the values add the neighbour's outcome on that model
        (``W_v (Z_i + U o_im)``). The M per-model latents then attend to each other (a transformer layer
        across models: self-attention + feed-forward, residuals and LayerNorm), and a head MLP on
        ``[latent_m; W_proj x]`` gives (score, cost z) per model.
        """

        def __init__(self, d: int, M: int, score_init: Any, heads: int = 4, head_dim: int = 32) -> None:
            super().__init__(d, M, score_init, heads, head_dim)
            h = self.hidden
            self.emb = nn.Parameter(torch.randn(M, h) / h**0.5)
            self.cell_enc = nn.Linear(3, h, bias=False)
            self.across_models = nn.TransformerEncoderLayer(
                h, heads, dim_feedforward=2 * h, dropout=0.0, batch_first=True
            )
            self.head = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 2))

        def forward(self, xq: Any, nb: Any, support: Any) -> tuple[Any, Any]:
            B = xq.shape[0]
            M = self.emb.shape[0]
            H, dh, h = self.heads, self.head_dim, self.hidden
            e, sa, ck = self._encode(nb, support)
            cells = _rows(support["edges"], nb)  # (B, k, M, 3)
            pq = self.proj(xq)
            cq = self.ca_q(pq[:, None, :] + self.emb[None]).reshape(B, M, H, dh)
            a = torch.softmax(torch.einsum("bmhd,bhkd->bmhk", cq, ck) / dh**0.5, dim=-1)  # (B, M, H, k)
            pooled = self._pool(a, e, sa)  # (B, M, h)
            # the model-specific part of the value, W_v[j] U o_im for head j, pooled with the same weights;
            # W_v[j] U is only (dh, 3)
            wu = torch.einsum("jed,df->jef", self.ca_v.weight.reshape(H, dh, h), self.cell_enc.weight)
            cv = torch.einsum("bmjf,jef->bmje", torch.einsum("bmjk,bkmf->bmjf", a, cells), wu)
            cv = cv.reshape(B, M, h)
            latent = self.ca_o(pooled + cv) + self.emb[None]
            latent = self.across_models(latent)  # (B, M, h)
            out = self.head(torch.cat([latent, pq[:, None, :].expand(B, M, -1)], dim=-1))
            return out[..., 0] + self.score_bias, out[..., 1]

    nets = {
        "LinearMFNet": LinearMFNet,
        "MLPMFNet": MLPMFNet,
        "GraphNet": GraphNet,
        "AttnNet": AttnNet,
        "DAttnNet": DAttnNet,
    }
    for name, cls in nets.items():  # importable as knnroute.routers.torch_routers.<name> (pickling)
        cls.__module__ = __name__
        cls.__qualname__ = name
    return nets


# --------------------------------------------------------------------------------------------------
# routers
# --------------------------------------------------------------------------------------------------


class _TorchRouter(_UtilityRouterMixin, _ParamsMixin):
    """Common trainer; subclasses set ``_net_name`` and implement ``_net_kwargs``."""

    _net_name = ""

    def _net_kwargs(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {}

    def _k(self) -> int | None:
        return None

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
    ) -> _TorchRouter:
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
        X, S, C, names, val = _validate_fit(
            X, scores, costs, model_names, X_val, scores_val, costs_val, dtype=np.float32
        )
        n, d = X.shape
        M = S.shape[1]
        seed = _seed_from(self.random_state)
        cost_mean, cost_std = _column_stats(C)
        score_init = _score_means(S)
        k = self._k()

        if val is None:
            tr, va = _internal_split(n, self.validation_fraction, seed)
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
            net = _nets()[self._net_name](d, M, score_init, **self._net_kwargs())
            sup = self._support_tensors(torch, X[sup_rows], S[sup_rows], C[sup_rows], cost_mean, cost_std)
            q_rows = tr if q_sel is None else tr[q_sel]  # training targets (capped at max_train_rows)
            train = self._query_tensors(torch, X[q_rows], S[q_rows], C[q_rows], cost_mean, cost_std)
            if k is not None:
                # tr == sup_rows: training prompts are the support rows, leave-one-out
                nb_tr = _neighbours(X[sup_rows], X[tr], k_eff, exclude_self=True)[0]
                train["nb"] = torch.from_numpy(np.ascontiguousarray(nb_tr if q_sel is None else nb_tr[q_sel]))
            valid = None
            if val_q is not None:
                valid = self._query_tensors(torch, *val_q, cost_mean, cost_std)
                if k is not None:
                    valid["nb"] = torch.from_numpy(_neighbours(X[sup_rows], val_q[0], k_eff, False)[0])
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
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
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
        _check_is_fitted(self)
        torch = _import_torch()
        X = _as_X(X, "X", self.n_features_in_, dtype=np.float32)
        n = X.shape[0]
        M = len(self.model_names_)
        s_hat = np.empty((n, M))
        cz_hat = np.empty((n, M))
        if n == 0:
            return s_hat, cz_hat
        nb_all = None
        if self.k_ is not None:
            nb_all = torch.from_numpy(_neighbours(self.support_X_, X, self.k_, exclude_self=False)[0])
        xt = torch.from_numpy(X)
        with _torch_session(torch, None, self.n_threads), torch.no_grad():
            self.net_.eval()
            for start in range(0, n, 1024):
                sl = slice(start, min(start + 1024, n))
                s, c = self.net_(xt[sl], None if nb_all is None else nb_all[sl], self.support_)
                s_hat[sl], cz_hat[sl] = s.double().numpy(), c.double().numpy()
        return s_hat, np.maximum(cz_hat * self.cost_std_ + self.cost_mean_, 0.0)


_COMMON_PARAMS_DOC = """
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

_ATTRS_DOC = """
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


class _CommonInit:
    def _set_common(self, **kw: Any) -> None:
        _require_torch()
        for name, value in kw.items():
            setattr(self, name, value)


class LinearMFRouter(_TorchRouter, _CommonInit):
    __doc__ = (
        """Bilinear (matrix-factorisation) router, the paper's "Linear (MF)" (RouteLLM-inspired).

    ``s_hat(x, m) = (W_s x + w_s) . e_m + b_s^m`` and the same for the cost, with a learned ``dim``-dim
    model embedding ``e_m`` shared by the two heads.

    Parameters
    ----------
    dim : int, default 128
        Model-embedding dimension d_m."""
        + _COMMON_PARAMS_DOC.format(batch_size=256, max_epochs=200, patience=5, max_train_rows=4000)
        + _ATTRS_DOC
    )
    _net_name = "LinearMFNet"

    def __init__(
        self,
        dim: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 256,
        max_epochs: int = 200,
        patience: int = 5,
        max_train_rows: int | None = 4000,
        validation_fraction: float = 0.1,
        cost_weight: float = 1.0,
        grad_clip: float = 5.0,
        n_threads: int | None = 1,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self._set_common(
            dim=dim,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            max_train_rows=max_train_rows,
            validation_fraction=validation_fraction,
            cost_weight=cost_weight,
            grad_clip=grad_clip,
            n_threads=n_threads,
            random_state=random_state,
        )

    def _net_kwargs(self) -> dict[str, Any]:
        return {"dim": self.dim}


class MLPMFRouter(_TorchRouter, _CommonInit):
    __doc__ = (
        """MLP on ``[prompt; model embedding]``, the paper's "MLP (MF)".

    ``s_hat(x, m) = MLP_s([x; e_m])``, ``c_hat(x, m) = MLP_c([x; e_m])``: two MLPs
    (d + dim -> hidden -> hidden -> 1, ReLU) sharing the learned model embedding ``e_m``.

    Parameters
    ----------
    dim : int, default 128
        Model-embedding dimension.
    hidden : int, default 100
        Hidden units per layer (two hidden layers)."""
        + _COMMON_PARAMS_DOC.format(batch_size=256, max_epochs=200, patience=5, max_train_rows=4000)
        + _ATTRS_DOC
    )
    _net_name = "MLPMFNet"

    def __init__(
        self,
        dim: int = 128,
        hidden: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 256,
        max_epochs: int = 200,
        patience: int = 5,
        max_train_rows: int | None = 4000,
        validation_fraction: float = 0.1,
        cost_weight: float = 1.0,
        grad_clip: float = 5.0,
        n_threads: int | None = 1,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self._set_common(
            dim=dim,
            hidden=hidden,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            max_train_rows=max_train_rows,
            validation_fraction=validation_fraction,
            cost_weight=cost_weight,
            grad_clip=grad_clip,
            n_threads=n_threads,
            random_state=random_state,
        )

    def _net_kwargs(self) -> dict[str, Any]:
        return {"dim": self.dim, "hidden": self.hidden}


class GraphRouter(_TorchRouter, _CommonInit):
    __doc__ = (
        """Graph router (GraphRouter-style), the paper's "Graph (k)".

    Each prompt becomes a bipartite prompt–model graph enriched with its k nearest support prompts,
    whose edges to the models carry their observed outcomes ``[score, cost, observed]``; two
    GeneralConv-style layers (hidden 128, BatchNorm, ReLU) and an MLP head on ``[query; model]`` node
    states predict each model's score and cost (see ``GraphNet`` for the exact layer). Message passing is
    plain torch (no graph library): every prompt's graph has the same shape, so batches are dense tensors.

    Parameters
    ----------
    k : int, default 10
        Support neighbours per prompt (the paper: 10 or 100).
    hidden : int, default 128
    n_layers : int, default 2"""
        + _COMMON_PARAMS_DOC.format(batch_size=128, max_epochs=15, patience=3, max_train_rows=1000)
        + _ATTRS_DOC
    )
    _net_name = "GraphNet"

    def __init__(
        self,
        k: int = 10,
        hidden: int = 128,
        n_layers: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 128,
        max_epochs: int = 15,
        patience: int = 3,
        max_train_rows: int | None = 1000,
        validation_fraction: float = 0.1,
        cost_weight: float = 1.0,
        grad_clip: float = 5.0,
        n_threads: int | None = 1,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self._set_common(
            k=k,
            hidden=hidden,
            n_layers=n_layers,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            max_train_rows=max_train_rows,
            validation_fraction=validation_fraction,
            cost_weight=cost_weight,
            grad_clip=grad_clip,
            n_threads=n_threads,
            random_state=random_state,
        )

    def _k(self) -> int:
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        return int(self.k)

    def _net_kwargs(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "n_layers": self.n_layers}


class AttnRouter(_TorchRouter, _CommonInit):
    __doc__ = (
        """Attentive router (a conditional neural process), the paper's "Attn (k)".

    The k nearest support prompts with their outcomes on every model form a set; one multi-head
    self-attention layer runs over it and cross-attention from the query prompt pools it into a latent;
    an MLP head on ``[latent; prompt]`` predicts all M scores and costs (see ``AttnNet``).

    Parameters
    ----------
    k : int, default 10
        Support neighbours per prompt (the paper: 10 or 100).
    heads : int, default 4
    head_dim : int, default 32"""
        + _COMMON_PARAMS_DOC.format(batch_size=128, max_epochs=15, patience=3, max_train_rows=1000)
        + _ATTRS_DOC
    )
    _net_name = "AttnNet"

    def __init__(
        self,
        k: int = 10,
        heads: int = 4,
        head_dim: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 128,
        max_epochs: int = 15,
        patience: int = 3,
        max_train_rows: int | None = 1000,
        validation_fraction: float = 0.1,
        cost_weight: float = 1.0,
        grad_clip: float = 5.0,
        n_threads: int | None = 1,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self._set_common(
            k=k,
            heads=heads,
            head_dim=head_dim,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            max_train_rows=max_train_rows,
            validation_fraction=validation_fraction,
            cost_weight=cost_weight,
            grad_clip=grad_clip,
            n_threads=n_threads,
            random_state=random_state,
        )

    def _k(self) -> int:
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        return int(self.k)

    def _net_kwargs(self) -> dict[str, Any]:
        return {"heads": self.heads, "head_dim": self.head_dim}


class DAttnRouter(AttnRouter):
    __doc__ = (
        """Double-attentive router, the paper's "D-Attn (k)": attention across neighbours and across models.

    As :class:`AttnRouter`, but the cross-attention from the query runs once per model (a learned model
    embedding in the query, the neighbour's outcome on that model in the value), and the M per-model
    latents then attend to each other before a per-model head (see ``DAttnNet``).

    Parameters
    ----------
    k : int, default 10
        Support neighbours per prompt (the paper: 10 or 100).
    heads : int, default 4
    head_dim : int, default 32"""
        + _COMMON_PARAMS_DOC.format(batch_size=128, max_epochs=15, patience=3, max_train_rows=1000)
        + _ATTRS_DOC
    )
    _net_name = "DAttnNet"
