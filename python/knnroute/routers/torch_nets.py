"""The torch networks of the learned routers (module-level classes, so fitted routers pickle).

This module imports torch at the top: :mod:`knnroute.routers.torch_base` imports it only when a torch
router is fitted or predicts, so ``import knnroute.routers`` never imports torch.

Every network maps ``forward(xq (B, d), nb (B, k) int64 or None, support)`` to ``(score (B, M), cost z
(B, M))``; ``support`` holds the support prompts (``X``) and their outcomes (``edges`` (N, M, 3) and
``flat`` (N, 3M): score, cost z, observed).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NETS", "AttnNet", "DAttnNet", "GraphNet", "LinearMFNet", "MLPMFNet"]


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
    """``s = (W_s x) . e_m + b_s^m``, ``c = (W_c x) . e_m + b_c^m``; ``e_m`` a learned d_m-dim model
    embedding.

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
            msg, edge, skip = self.msg[layer], self.edge[layer], self.skip[layer]
            bns: Any = self.bn[layer]  # a ModuleList of three BatchNorms (indexed below)
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


NETS: dict[str, type[_Net]] = {
    "LinearMFNet": LinearMFNet,
    "MLPMFNet": MLPMFNet,
    "GraphNet": GraphNet,
    "AttnNet": AttnNet,
    "DAttnNet": DAttnNet,
}
