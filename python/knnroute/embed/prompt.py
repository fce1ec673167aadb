"""PromptEncoder: embed new prompts exactly like a router's support set.

A router file records which embedder its support set was embedded with (``identity``: weights and
truncation; ``spec``: how to rebuild it, e.g. ``"minilm"``), and the learned shared-prefix stripping
(:class:`~knnroute.data.hygiene.PrefixStripper` state). :class:`PromptEncoder` holds those facts, builds
the embedder on first use (refusing one whose identity differs), strips the prefixes, pairs prompts with
images for a multimodal embedder, and encodes. :class:`~knnroute.production.ProductionRouter` holds one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from knnroute.embed.encoders import embedder_spec

__all__ = ["PromptEncoder", "embedder_spec"]


def _resolve_info(embedder: Any) -> dict[str, Any]:
    """``{"identity", "spec", "dim"}`` (and ``prefix_stripper`` from a mapping) of an embedder argument."""
    if embedder is None:
        return {"identity": None, "spec": None, "dim": None}
    if isinstance(embedder, Mapping):
        info = {key: embedder.get(key) for key in ("identity", "spec", "dim")}
        if embedder.get("prefix_stripper") is not None:
            info["prefix_stripper"] = dict(embedder["prefix_stripper"])
        if embedder.get("text_norm") is not None:  # knnroute.embed.textnorm state (validated by the encoder)
            info["text_norm"] = embedder["text_norm"]
        for key in ("identity", "spec"):
            if info[key] is not None and not isinstance(info[key], str):
                raise ValueError(f"embedder {key} must be a string")
        return info
    from knnroute.embed.encoders import get_embedder

    if isinstance(embedder, (str, os.PathLike)):
        spec: str | None = str(embedder)
        emb = get_embedder(spec)
    else:
        emb = get_embedder(embedder)
        spec = embedder_spec(emb)
    return {"identity": emb.identity, "spec": spec, "dim": getattr(emb, "_dim", None)}


class PromptEncoder:
    """The embedder of a support set plus its prompt hygiene: new prompts in, unit vectors out.

    Parameters
    ----------
    embedder : spec, Embedder, or dict, optional
        A :func:`knnroute.embed.get_embedder` spec (``"minilm"``), an :class:`~knnroute.embed.Embedder`,
        or the recorded ``{"identity": ..., "spec": ..., "prefix_stripper": ...}``. Only the identity and
        spec are kept (an Embedder object is also used as is); the model loads on first use.
    prefix_stripper : dict, optional
        ``PrefixStripper.to_dict()`` state of the support set, applied to new prompts before embedding.
    text_norm : TextNormaliser or dict, optional
        :class:`~knnroute.embed.textnorm.TextNormaliser` (or its state) applied after prefix stripping, as
        the support set's prompts were (a recorded mapping may carry it as ``"text_norm"``). None: the text
        is embedded as it is (every router file saved before it existed).
    lexical : LexicalModel, optional
        With a recorded hybrid embedder (a mapping with ``lexical`` facts, as a router file holds): its
        :class:`~knnroute.embed.lexical.LexicalModel` (rebuilt from the file's arrays). The embedder is then
        a :class:`~knnroute.embed.lexical.HybridLexicalEmbedder` around the dense embedder the facts name
        (or the dense one given to :meth:`set_embedder`). A ``HybridLexicalEmbedder`` object carries its own.

    Encoding is serialised by a lock (fast tokenizers are not safe to share between threads). One prompt
    without images goes through ``Embedder.encode_one`` (the static and hybrid embedders' lean path, no batch
    set-up); ``single_fast = False`` sends it through ``encode`` as before (the benchmark's reference).
    """

    single_fast: bool = True

    def __init__(self, embedder: Any = None, prefix_stripper: Mapping[str, Any] | None = None,
                 lexical: Any = None, text_norm: Any = None) -> None:
        from knnroute.embed.lexical import HybridLexicalEmbedder, LexicalModel
        from knnroute.embed.textnorm import TextNormaliser

        self._lock = threading.Lock()
        self._embedder_obj: Any = None
        self._stripper: Any = None
        self._lexical: LexicalModel | None = None
        self.info: dict[str, Any] = _resolve_info(embedder)
        if embedder is not None and not isinstance(embedder, (Mapping, str, os.PathLike)):
            self._embedder_obj = embedder if hasattr(embedder, "encode") else None
        if isinstance(embedder, HybridLexicalEmbedder):
            self._lexical = embedder.lexical
            self.info["lexical"] = embedder.file_info()
        elif isinstance(embedder, Mapping) and embedder.get("lexical") is not None:
            if not isinstance(lexical, LexicalModel):
                raise ValueError("this embedder has lexical facts: it needs its LexicalModel (lexical=...)")
            self._lexical = lexical
            self.info["lexical"] = dict(embedder["lexical"])
            self._check_lexical()
        elif lexical is not None:
            raise ValueError("lexical= is only for a recorded hybrid embedder (a mapping with 'lexical' facts)")
        if prefix_stripper is not None:
            self.info["prefix_stripper"] = dict(prefix_stripper)
        if text_norm is not None:
            self.info["text_norm"] = text_norm.to_dict() if isinstance(text_norm, TextNormaliser) else text_norm
        self._norm: TextNormaliser | None = None
        if self.info.get("text_norm") is not None:
            self._norm = (text_norm if isinstance(text_norm, TextNormaliser)
                          else TextNormaliser.from_dict(self.info["text_norm"]))

    def _check_lexical(self) -> None:
        """The recorded identity must be the one the dense identity, w and the lexical model give."""
        from knnroute.embed.lexical import hybrid_identity

        lex = self.info["lexical"]
        assert self._lexical is not None
        want = hybrid_identity(lex["dense"]["identity"], float(lex["w"]), self._lexical.sha256())
        if self.info.get("identity") != want:
            raise ValueError(f"embedder identity {self.info.get('identity')!r} does not match its lexical "
                             f"facts ({want!r})")
        dim = self.info.get("dim")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= self._lexical.dim):
            raise ValueError(f"embedder dim {dim!r} leaves no dense dimensions beside {self._lexical.dim} "
                             "lexical ones")

    @property
    def lexical(self) -> Any:
        """The :class:`~knnroute.embed.lexical.LexicalModel` of a hybrid embedder (None otherwise)."""
        return self._lexical

    def lexical_arrays(self) -> dict[str, np.ndarray]:
        """The optional router-file arrays of a hybrid embedder (empty otherwise)."""
        if self._lexical is None:
            return {}
        return {
            "lexical_components": np.ascontiguousarray(self._lexical.components, dtype="<f4"),
            "lexical_idf": np.ascontiguousarray(self._lexical.idf.reshape(1, -1), dtype="<f4"),
        }

    @property
    def identity(self) -> str | None:
        return self.info.get("identity")

    @property
    def has_embedder(self) -> bool:
        return bool(self.info.get("identity")) or self._embedder_obj is not None

    @property
    def loaded(self) -> Any:
        """The embedder object if it was built or given (None before first use)."""
        return self._embedder_obj

    def to_dict(self) -> dict[str, Any]:
        """The recorded facts (identity, spec, dim, prefix_stripper) as stored in a router file."""
        return dict(self.info)

    def __repr__(self) -> str:
        return f"PromptEncoder(identity={self.identity!r}, spec={self.info.get('spec')!r})"

    # ------------------------------------------------------------------------------ the embedder
    def embedder(self) -> Any:
        """The recorded embedder, built once (loads the model's weights lazily on first encode).

        Raises ``ValueError`` if none is recorded, or if the spec now resolves to a different identity
        (other weights or truncation than the support set was embedded with).
        """
        if self._embedder_obj is not None:
            return self._embedder_obj
        with self._lock:
            if self._embedder_obj is None:
                info = self.info
                if not info.get("identity"):
                    raise ValueError(
                        "this router has no recorded embedder: route embeddings, or set_embedder(...)"
                    )
                if self._lexical is not None:
                    self._embedder_obj = self._build_hybrid()
                    return self._embedder_obj
                if not info.get("spec"):
                    raise ValueError(
                        f"embedder {info['identity']!r} cannot be rebuilt from the file (no spec): "
                        "call set_embedder(embedder) with the same model"
                    )
                from knnroute.embed.encoders import get_embedder

                emb = get_embedder(info["spec"])
                self._check_identity(emb)
                self._embedder_obj = emb
        return self._embedder_obj

    def _build_hybrid(self) -> Any:
        from knnroute.embed.encoders import get_embedder

        dense = self.info["lexical"]["dense"]
        if not dense.get("spec"):
            raise ValueError(
                f"the dense embedder {dense['identity']!r} of this lexical hybrid cannot be rebuilt from the "
                "file (no spec): call set_embedder(dense_embedder) with the same model"
            )
        return self._hybrid(get_embedder(dense["spec"]))

    def _hybrid(self, dense: Any) -> Any:
        """The hybrid of this router's lexical model around ``dense`` (identity checked)."""
        from knnroute.embed.lexical import HybridLexicalEmbedder

        emb = HybridLexicalEmbedder(dense, self._lexical, float(self.info["lexical"]["w"]))  # type: ignore[arg-type]
        self._check_identity(emb)
        return emb

    def _check_identity(self, emb: Any) -> None:
        want = self.info.get("identity")
        if want and emb.identity != want:
            raise ValueError(
                f"embedder mismatch: the router was fitted with {want!r}, but {emb.identity!r} is loaded; "
                "embed with the same model (or refit)"
            )

    def set_embedder(self, embedder: Any) -> None:
        """Use this embedder (its identity must match the recorded one, if any)."""
        from knnroute.embed.encoders import get_embedder
        from knnroute.embed.lexical import HybridLexicalEmbedder

        emb = get_embedder(embedder)
        if self._lexical is not None and not isinstance(emb, HybridLexicalEmbedder):
            emb = self._hybrid(emb)  # the dense half of this router's hybrid
        self._check_identity(emb)
        if not self.info.get("identity"):
            self.info.update(identity=emb.identity, spec=embedder_spec(emb))
            if isinstance(emb, HybridLexicalEmbedder):
                self._lexical = emb.lexical
                self.info["lexical"] = emb.file_info()
        self._embedder_obj = emb

    # ------------------------------------------------------------------------------ encoding
    @property
    def text_norm(self) -> Any:
        """The :class:`~knnroute.embed.textnorm.TextNormaliser` (None: the text is embedded as it is)."""
        return self._norm

    def _strip(self, texts: list[str]) -> list[str]:
        """The text the embedder gets: the learned prefix stripped, then normalised (when recorded)."""
        state = self.info.get("prefix_stripper")
        if state and state.get("prefixes"):
            if self._stripper is None:
                from knnroute.data.hygiene import PrefixStripper

                self._stripper = PrefixStripper.from_dict(state)
            texts = self._stripper.transform(texts)
        return texts if self._norm is None else self._norm.transform(texts)

    def encode(self, prompts: Sequence[str], images: Sequence[Any] | None = None) -> np.ndarray:
        """Embed prompts like the support set: strip the learned shared prefix, then encode.

        ``images`` (optional, one entry per prompt: None, one image or a list of images; an image is a
        file path, bytes or base64 text) needs a multimodal embedder
        (:class:`~knnroute.embed.multimodal.MultimodalEmbedder`); a prompt without images is embedded by
        its text alone. Returns (n, d) float32 unit rows.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of str, not one str")
        texts = list(prompts)
        emb = self.embedder()
        texts = self._strip(texts)
        items: list[Any] = texts
        if images is not None:
            items = _with_images(emb, texts, images)
        elif len(texts) == 1 and self.single_fast:  # one prompt (the serving path): the embedder's lean path
            with self._lock:
                return emb.encode_one(texts[0])[None, :]
        with self._lock:
            return emb.encode(items, batch_size=64, progress=False)

    def encode_one(self, prompt: str) -> np.ndarray:
        """One prompt -> (d,) float32 unit vector: the single-prompt path of :meth:`encode`.

        Same prefix stripping and embedder, but through ``Embedder.encode_one`` (the static embedder's
        lean tokenize-gather-sum path; other embedders fall back to ``encode``).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        emb = self.embedder()
        prompt = self._strip([prompt])[0]
        with self._lock:
            return emb.encode_one(prompt)


def _with_images(emb: Any, texts: list[str], images: Sequence[Any]) -> list[Any]:
    """Pair texts with their images as MultimodalInput items (the embedder must take images)."""
    if getattr(emb, "modality", "text") != "multimodal":
        raise ValueError(
            f"this router's embedder {emb.identity!r} takes text only: images need a router fitted on "
            "multimodal embeddings (knnroute.embed.multimodal.MultimodalEmbedder)"
        )
    if isinstance(images, (str, bytes)) or len(images) != len(texts):
        raise ValueError("images must be a sequence with one entry (None, an image or a list) per prompt")
    from knnroute.embed.multimodal import MultimodalInput

    out: list[Any] = []
    for t, im in zip(texts, images, strict=True):
        imgs = () if im is None else tuple(im) if isinstance(im, (list, tuple)) else (im,)
        out.append(MultimodalInput(t, imgs))
    return out
