"""Evaluation of image + text routing: text-only, image-only and fused views of one dataset.

A multimodal dataset (``ds.meta["images"]``: one image path per prompt, ``""`` for none; MATH-V) becomes
one :class:`~knnroute.evaluate.runner.EvalData` whose ``X`` is the text block (so every ordinary router
name is the text-only router, exactly as on text data) and whose ``meta`` carries the image block
(``image_X``, ``has_image``). Router names with a view suffix select the input:

* ``<router>@text``: the text block (same as ``<router>``);
* ``<router>@image``: the image block (items without an image fall back to their text; see
  :func:`knnroute.embed.multimodal.fuse` at ``w = 1``);
* ``<router>@fused``: ``fuse(text, image, w)`` with the image weight ``w`` chosen per split seed on the
  validation prompts only: for each ``w`` in :data:`~knnroute.embed.multimodal.FUSION_WEIGHTS` the router
  is fitted on the train prompts and scored by its validation AUC; the best ``w`` (ties: the smaller,
  i.e. closer to text-only) is refitted and evaluated on test. Records carry ``image_weight`` and
  ``fusion_val_auc``.

``<router>`` is any name :func:`~knnroute.evaluate.runner.run_one` accepts (``knn-100``, ``knn-tuned``,
``linear``, ``mlp``...). On a dataset without images the ``@image`` / ``@fused`` rows are skipped (no
record).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MULTIMODAL_ROUTERS", "VIEWS", "eval_data", "is_multimodal", "run_view", "split_view"]

VIEWS: tuple[str, ...] = ("text", "image", "fused")
#: rows added to ``knnroute eval``'s default router list when a dataset has images
MULTIMODAL_ROUTERS: tuple[str, ...] = ("knn-100@image", "knn-100@fused", "knn-tuned@image", "knn-tuned@fused")


def split_view(name: str) -> tuple[str, str | None]:
    """``"knn-100@fused"`` -> ``("knn-100", "fused")``; a plain name -> ``(name, None)``."""
    if "@" not in name:
        return name, None
    base, _, view = name.rpartition("@")
    if view not in VIEWS or not base:
        raise ValueError(f"router {name!r}: the view after '@' must be one of {', '.join(VIEWS)}")
    return base, view


def is_multimodal(ds: Any) -> bool:
    """Whether a RoutingDataset carries per-prompt images (``meta["images"]``)."""
    imgs = getattr(ds, "meta", {}).get("images")
    return imgs is not None and len(imgs) == ds.n


def eval_data(
    ds: Any,
    embedder: Any = "minilm",
    image_embedder: Any = "efficientnet-lite0",
    progress: bool = True,
) -> tuple[Any, Any]:
    """``(EvalData, RoutingDataset)`` for a multimodal dataset: text block as ``X``, image block in ``meta``.

    The text block is :func:`knnroute.embed.embed_dataset` (cached, prefix stripping as for text data);
    the image block is :func:`knnroute.embed.image.embed_images` (cached by image bytes). The returned
    dataset carries the text embeddings and, in ``meta``, ``image_embeddings``, ``has_image`` and
    ``image_embedder`` (identity).
    """
    from knnroute.embed import embed_dataset
    from knnroute.embed.image import embed_images
    from knnroute.evaluate.cell import EvalData

    if ds.embeddings is None:
        ds = embed_dataset(ds, embedder=embedder, progress=progress)
    paths = [str(p) if p is not None else "" for p in ds.meta["images"]]
    has = np.array([bool(p) for p in paths], dtype=bool)
    stats: dict[str, Any] = {}
    image_X = np.zeros((ds.n, 0), dtype=np.float32)
    if has.any():
        V = embed_images([p for p in paths if p], image_embedder, progress=progress, stats=stats)
        image_X = np.zeros((ds.n, V.shape[1]), dtype=np.float32)
        image_X[has] = V
    ds = ds.replace(
        meta={
            **ds.meta,
            "image_embeddings": image_X,
            "has_image": has,
            "image_embedder": stats.get("identity"),
            "image_embed_stats": stats,
        }
    )
    ed = EvalData.from_dataset(ds)
    ed = dataclasses.replace(ed, meta={**ed.meta, "image_X": image_X, "has_image": has})
    return ed, ds


def _view_X(data: Any, view: str, w: float | None = None) -> np.ndarray:
    from knnroute.embed.multimodal import fuse

    if view == "text":
        return data.X
    img, has = data.meta["image_X"], data.meta["has_image"]
    return fuse(data.X, img, has, 1.0 if view == "image" else float(w))  # type: ignore[arg-type]


def _val_auc(data: Any, base: str, seed: int, X: np.ndarray, sp: Any) -> float:
    from knnroute.evaluate import curves as _curves
    from knnroute.evaluate.cell import input_cost_kwargs, make_eval_router
    from knnroute.routers import tuned as _tuning

    if sp.val.size == 0:
        raise ValueError(f"{data.name}: no validation prompts to choose the image weight on")
    fit_kw, pred_kw = input_cost_kwargs(data, base, sp.train, sp.val, sp.val)  # as run_one does
    if base == "knn-tuned":
        model: Any = _tuning.TunedKNNRouter(random_state=seed)
    else:
        model, _ = make_eval_router(base, seed, int(sp.train.size))
    model.fit(
        X[sp.train], data.scores[sp.train], data.costs[sp.train], model_names=list(data.model_names),
        X_val=X[sp.val], scores_val=data.scores[sp.val], costs_val=data.costs[sp.val], **fit_kw,
    )
    if pred_kw:
        ts, tc = _curves.fill_missing(data.scores[sp.val], data.costs[sp.val])
        s_hat, c_hat = model.predict(X[sp.val], **pred_kw)
        return float(_curves.curve_from_predictions(s_hat, c_hat, ts, tc, _curves.cost_scale(tc)).auc)
    return float(_curves.router_curve(model, X[sp.val], data.scores[sp.val], data.costs[sp.val]).auc)


def run_view(
    data: Any,
    router: str,
    seed: int,
    *,
    lams: Sequence[float] | None = None,
    n_random: int = 10,
    weights: Sequence[float] | None = None,
    **kw: Any,
) -> Any:
    """Evaluate ``<router>@<view>`` on one dataset and seed (see the module docstring)."""
    from knnroute.embed.multimodal import FUSION_WEIGHTS
    from knnroute.evaluate.cell import RunOutput, split_indices
    from knnroute.evaluate.cell import run_cell as run_one

    base, view = split_view(router)
    if view is None:
        return run_one(data, router, seed, lams=lams, n_random=n_random, **kw)
    if base in ("oracle", "random", "best-single", "single") or "@" in base:
        raise ValueError(f"router {router!r}: views apply to learned routers, not {base!r}")
    if view != "text" and "image_X" not in data.meta:
        return RunOutput([], {})
    fields: dict[str, Any] = {"view": view}
    if view == "fused":
        sp = kw.get("split") or split_indices(data.n, seed, data.split)
        grid = list(FUSION_WEIGHTS if weights is None else weights)
        table = [(w, _val_auc(data, base, seed, _view_X(data, "fused", w), sp)) for w in grid]
        best_w, best_auc = table[0]
        for w, a in table[1:]:
            if a > best_auc:
                best_w, best_auc = w, a
        fields.update(image_weight=float(best_w), fusion_val_auc=float(best_auc))
        X = _view_X(data, "fused", best_w)
        extra_rows = [{"image_weight": float(w), "val_auc": a} for w, a in table]
    else:
        X = _view_X(data, view)
        fields["image_weight"] = 1.0 if view == "image" else 0.0
        extra_rows = []
    out = run_one(dataclasses.replace(data, X=X), base, seed, lams=lams, n_random=n_random, **kw)
    for rec in out.records:
        rec.update(router=router, **fields)
    curves = {router: next(iter(out.curves.values()))} if out.curves else {}
    extra = dict(out.extra)
    if extra_rows:
        extra["fusion"] = extra_rows
    return RunOutput(out.records, curves, extra)
