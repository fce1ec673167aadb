"""Learned utility-prediction baselines on PyTorch (CPU): matrix factorisation, graph and attention routers.

The paper's Linear MF, MLP MF, Graph, Attentive and Double-Attentive routers (the paper's §5; docs/paper.md), behind the
``torch`` extra (``pip install '.[torch]'`` in the knnroute checkout). Torch is imported when a router is fitted
or predicts
(the trainer is :mod:`knnroute.routers.torch_base`, the networks :mod:`knnroute.routers.torch_nets`), so
importing this module is cheap; without torch, constructing a router raises ``ImportError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from knnroute.routers.torch_base import ATTRS_DOC, COMMON_PARAMS_DOC, TorchRouter

__all__ = ["AttnRouter", "DAttnRouter", "GraphRouter", "LinearMFRouter", "MLPMFRouter"]

_NET_NAMES = ("LinearMFNet", "MLPMFNet", "GraphNet", "AttnNet", "DAttnNet")


def __getattr__(name: str) -> Any:
    """The networks, for routers pickled while they lived here (``torch_routers.GraphNet``)."""
    if name in _NET_NAMES:
        from knnroute.routers import torch_nets

        return torch_nets.NETS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LinearMFRouter(TorchRouter):
    __doc__ = (
        """Bilinear (matrix-factorisation) router, the paper's "Linear (MF)" (RouteLLM-inspired).

    ``s_hat(x, m) = (W_s x + w_s) . e_m + b_s^m`` and the same for the cost, with a learned ``dim``-dim
    model embedding ``e_m`` shared by the two heads.

    Parameters
    ----------
    dim : int, default 128
        Model-embedding dimension d_m."""
        + COMMON_PARAMS_DOC.format(batch_size=256, max_epochs=200, patience=5, max_train_rows=4000)
        + ATTRS_DOC
    )
    _net_name = "LinearMFNet"

    dim: int

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


class MLPMFRouter(TorchRouter):
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
        + COMMON_PARAMS_DOC.format(batch_size=256, max_epochs=200, patience=5, max_train_rows=4000)
        + ATTRS_DOC
    )
    _net_name = "MLPMFNet"

    dim: int
    hidden: int

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


class GraphRouter(TorchRouter):
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
        + COMMON_PARAMS_DOC.format(batch_size=128, max_epochs=15, patience=3, max_train_rows=1000)
        + ATTRS_DOC
    )
    _net_name = "GraphNet"

    k: int
    hidden: int
    n_layers: int

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


class AttnRouter(TorchRouter):
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
        + COMMON_PARAMS_DOC.format(batch_size=128, max_epochs=15, patience=3, max_train_rows=1000)
        + ATTRS_DOC
    )
    _net_name = "AttnNet"

    k: int
    heads: int
    head_dim: int

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
        + COMMON_PARAMS_DOC.format(batch_size=128, max_epochs=15, patience=3, max_train_rows=1000)
        + ATTRS_DOC
    )
    _net_name = "DAttnNet"
