"""The decision log and the routed text.

:class:`DecisionLog`: one JSON line per chat request (request id, time, chosen model, lambda, predicted
score and cost per model, fallback reason, each upstream attempt's status and latency); no prompt text
unless ``log_prompts``. :func:`routed_text`: which part of a conversation is routed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from knnroute.service.schemas import MAX_PROMPT_CHARS
from knnroute.service.text import route_text

__all__ = ["DecisionLog", "routed_text"]


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list (images and audio are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return ""


def routed_text(messages: list[Any], policy: str, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """The text routed for ``messages`` under ``policy`` ("last-user", "all-user", "system+last-user"):
    the chosen messages' texts joined by newlines, as :func:`~knnroute.service.text.route_text` prepares a
    ``POST /route`` prompt (kept as sent, cut to its last ``max_chars`` characters). So a conversation whose
    last user message is ``p`` is routed exactly as ``{"prompt": p}`` on ``/route``."""
    msgs = [m for m in messages if isinstance(m, dict)]
    users = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
    if policy == "all-user":
        parts = users
    else:
        parts = users[-1:]
        if policy == "system+last-user":
            parts = [_text(m.get("content")) for m in msgs if m.get("role") in ("system", "developer")] + parts
    return route_text("\n".join(p for p in parts if p), max_chars)


class DecisionLog:
    """Append JSON lines (flushed, not fsync-ed: it is a record, not the source of truth)."""

    def __init__(self, path: str | os.PathLike | None, log_prompts: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self.log_prompts = bool(log_prompts)
        self._lock = threading.Lock()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the process's life

    def write(self, record: dict[str, Any], prompt: str | None = None) -> None:
        if self._fh is None:
            return
        if self.log_prompts and prompt is not None:
            record = {**record, "prompt": prompt}
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
