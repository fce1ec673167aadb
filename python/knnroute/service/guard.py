"""Request bodies -> validated route requests, bounded before any per-item work (see ``docs/security.md``).

The routing endpoints read the raw body and hand it to :func:`parse_route` / :func:`parse_batch` on a
worker thread, never on the event loop. Order of the checks, cheapest first:

1. the body size (``BodyLimitMiddleware``, before this module: 413);
2. JSON syntax and nesting depth (400), the JSON types of the envelope;
3. the item count against ``max_batch`` and each embedding's length against the router's dimension,
   on the raw lists (422), so a 1 MiB body of 350k empty items or a 250k-value embedding is refused
   after one parse, without building a model per item. A batch body of the plain shape
   ``{"items": [...]}`` is not even parsed whole: its items are scanned one by one and the scan stops at
   item ``max_batch + 1`` (:func:`_batch_over_limit`);
4. pydantic (strict types: no strings or booleans for numbers), whose error list is cut to
   :data:`MAX_ERRORS` entries and :data:`MAX_DETAIL_CHARS` characters.

Also here: :func:`resolve_images`, the image-path resolver (a path under ``image_dir``, else base64),
which answers the same for files that exist outside the folder as for files that do not.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pydantic import ValidationError

from knnroute.service.schemas import BatchRequest, RouteRequest

__all__ = ["MAX_DETAIL_CHARS", "MAX_ERRORS", "RequestError", "parse_batch", "parse_route", "resolve_images"]

MAX_ERRORS = 10
MAX_DETAIL_CHARS = 2000
MAX_PATH_CHARS = 4096
_BATCH_HEAD = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"items"[ \t\n\r]*:[ \t\n\r]*\[')
_WS = re.compile(r"[ \t\n\r]*")
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # the C scanner (undeclared in typeshed)


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a short detail (str or a list of errors)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise RequestError(400, f"malformed JSON body: {e}"[:MAX_DETAIL_CHARS]) from None
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON body: not UTF-8") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON body: nested too deeply") from None


def _check_embedding(obj: Any, dim: int, where: str) -> None:
    if isinstance(obj, dict):
        e = obj.get("embedding")
        if isinstance(e, list) and len(e) != dim:
            raise RequestError(422, f"{where}embedding has {len(e)} values, the router expects {dim}")


def _validation(e: ValidationError, prefix: tuple[Any, ...] = ()) -> RequestError:
    errors = e.errors(include_url=False, include_input=False, include_context=False)
    clean = [{"loc": list(prefix) + list(x.get("loc", ())), "msg": str(x.get("msg", ""))[:200],
              "type": x.get("type")} for x in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        clean.append({"loc": [], "msg": f"... and {len(errors) - MAX_ERRORS} more errors",
                      "type": "truncated"})
    return RequestError(422, clean)


def parse_route(body: bytes, dim: int) -> RouteRequest:
    """The body of ``POST /route`` as a RouteRequest; raises :class:`RequestError` (400/422)."""
    obj = _loads(body)
    _check_embedding(obj, dim, "")
    try:
        return RouteRequest.model_validate(obj)
    except ValidationError as e:
        raise _validation(e, ("body",)) from None


def _batch_over_limit(body: bytes, limit: int) -> bool:
    """True when ``body`` is ``{"items": [...]}`` with more than ``limit`` items, found by scanning at most
    ``limit + 1`` items (not the whole body). False when it has fewer, or another shape, or bad JSON
    (the full parse then decides and reports)."""
    m = _BATCH_HEAD.match(body)
    if m is None:
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    idx = _WS.match(text, m.end()).end()  # type: ignore[union-attr]
    if text.startswith("]", idx):
        return False
    for n in range(1, limit + 2):
        try:
            _, idx = _SCAN(text, idx)
        except (StopIteration, RecursionError, ValueError):
            return False
        if n > limit:
            return True  # item limit + 1 exists (what follows it is not read)
        idx = _WS.match(text, idx).end()  # type: ignore[union-attr]
        if not text.startswith(",", idx):
            return False
        idx = _WS.match(text, idx + 1).end()  # type: ignore[union-attr]
    return False  # not reached: the loop returns


def parse_batch(body: bytes, dim: int, max_batch: int) -> list[RouteRequest]:
    """The items of ``POST /route/batch``; the count is checked on the raw list before any item is."""
    if _batch_over_limit(body, max_batch):
        raise RequestError(422, f"batch has more than {max_batch} items; the limit is {max_batch}")
    obj = _loads(body)
    items = obj.get("items") if isinstance(obj, dict) else None
    if isinstance(items, list):
        if len(items) > max_batch:
            raise RequestError(422, f"batch has {len(items)} items; the limit is {max_batch}")
        for i, it in enumerate(items):
            _check_embedding(it, dim, f"item {i}: ")
    try:
        return BatchRequest.model_validate(obj).items
    except ValidationError as e:
        raise _validation(e, ("body",)) from None


def resolve_images(raw: list[str], image_root: str | None) -> list[Any]:
    """Each image as an ImageRef (bytes): a file path under ``image_root``, else base64 / a data URL.

    A path is only tried when the service has an image folder. A path that contains a NUL byte or
    resolves outside the folder is treated like any other string that is not a file in the folder:
    it is decoded as base64 and refused with the same message whether or not the file exists, so the
    answer tells a client nothing about the service's file system.
    """
    from knnroute.embed.image import ImageRef, decode_base64_image

    out: list[Any] = []
    for j, s in enumerate(raw):
        if image_root is not None and len(s) < MAX_PATH_CHARS and not s.startswith("data:") and "\0" not in s:
            p = os.path.realpath(os.path.join(image_root, s))
            if os.path.commonpath([p, image_root]) == image_root and os.path.isfile(p):
                with open(p, "rb") as fh:
                    out.append(ImageRef(fh.read(), os.path.basename(p)))
                continue
        try:
            out.append(ImageRef(decode_base64_image(s), f"image {j}"))
        except ValueError as e:
            hint = " (or a file path inside the service's image folder)" if image_root is not None else ""
            raise RequestError(422, f"image {j}: {e}{hint}"[:MAX_DETAIL_CHARS]) from None
    return out
