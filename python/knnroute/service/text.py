"""The text a prompt is routed by: one function for ``POST /route`` and the gateway, so both route the same
text for the same input (the gateway used to collapse whitespace and keep the last 256 words, which changed
17 of 300 RouterBench decisions).

The text is taken as sent: newlines, indentation and case are kept (the router was fitted on raw prompts).
Two things change: lone UTF-16 surrogates (valid in JSON, not encodable as UTF-8) become U+FFFD instead of
failing in the tokenizer, and a text longer than ``max_chars`` keeps its last ``max_chars`` characters (the
end of a conversation is the request). ``POST /route`` refuses prompts longer than
:data:`~knnroute.service.schemas.MAX_PROMPT_CHARS`, so for everything it accepts the cut is a no-op.
"""

from __future__ import annotations

from knnroute.service.schemas import MAX_PROMPT_CHARS

__all__ = ["route_text"]


def route_text(text: str, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """``text`` as routed: its last ``max_chars`` characters, lone surrogates replaced by U+FFFD."""
    if len(text) > max_chars:
        text = text[-max_chars:]
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: keep every other character as it is
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
