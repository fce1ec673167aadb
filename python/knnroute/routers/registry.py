"""Name -> constructor tables for the learned baselines (merged with the kNN names by ``routers/__init__``).

``BASELINE_FACTORIES`` holds the paper's utility-prediction routers (Router protocol: ``fit`` /
``predict`` / ``route``); ``SELECTION_FACTORIES`` the appendix-D selection (classification) routers
(``fit`` / ``route`` only, ``selection = True``). Each value is a callable taking keyword overrides, e.g.
``BASELINE_FACTORIES["graph-100"](random_state=0)``. Importing this module imports neither scikit-learn nor
torch: the router modules are imported when a factory is called.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["BASELINE_FACTORIES", "SELECTION_FACTORIES"]


def _factory(module: str, cls: str, **preset: Any) -> Callable[..., Any]:
    def make(**kw: Any) -> Any:
        router_cls = getattr(import_module(f"knnroute.routers.{module}"), cls)
        return router_cls(**{**preset, **kw})

    preset_txt = ", ".join(f"{k}={v!r}" for k, v in preset.items())
    make.__name__ = make.__qualname__ = f"make_{cls}"
    make.__doc__ = f"{cls}({preset_txt}) from knnroute.routers.{module}; keyword arguments override."
    return make


# The k=100 neighbour routers cost ~10x the k=10 ones per training prompt: they train on at most 500
# prompts (seeded subsample; the support set stays every training prompt), the k=10 ones and the MF routers
# on their class defaults (1000 / 4000). This keeps `knnroute eval --data all --routers all` within the
# 2-core time budget; see docs/baselines.md.
_ROWS_K100 = 500

BASELINE_FACTORIES: dict[str, Callable[..., Any]] = {
    "linear": _factory("linear", "LinearRouter"),
    "linear-mf": _factory("torch_routers", "LinearMFRouter"),
    "mlp": _factory("mlp", "MLPRouter"),
    "mlp-mf": _factory("torch_routers", "MLPMFRouter"),
    "graph-10": _factory("torch_routers", "GraphRouter", k=10),
    "graph-100": _factory("torch_routers", "GraphRouter", k=100, max_train_rows=_ROWS_K100),
    "attn-10": _factory("torch_routers", "AttnRouter", k=10),
    "attn-100": _factory("torch_routers", "AttnRouter", k=100, max_train_rows=_ROWS_K100),
    "dattn-10": _factory("torch_routers", "DAttnRouter", k=10),
    "dattn-100": _factory("torch_routers", "DAttnRouter", k=100, max_train_rows=_ROWS_K100),
}

SELECTION_FACTORIES: dict[str, Callable[..., Any]] = {
    "knn-vote-10": _factory("selection", "KNNVoteSelector", k=10),
    "knn-vote-100": _factory("selection", "KNNVoteSelector", k=100),
    "logreg": _factory("selection", "LogisticSelector"),
    "mlp-clf": _factory("selection", "MLPSelector"),
}
