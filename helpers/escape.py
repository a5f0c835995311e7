"""Untrusted text (a student's name, a parameter, a configuration or class name, a path) shown literally.

A report interpolates values it did not write into Markdown, HTML and CSS. Each context has its own escape, and
each is applied where the value is interpolated, never to the whole sentence (the toolkit's own ``**bold**`` stays
markup):

- :func:`md_text` for running Markdown text: every Markdown punctuation character is backslash-escaped, so ``<``,
  ``*``, ``[`` ... ``](``, ``!``, ``$`` and backticks are characters, not markup (the backslash form is the one
  that renders the same whether or not the Markdown renderer escapes raw HTML: a numeric character reference
  would be shown as ``&#60;`` by a renderer that escapes);
- :func:`md_code` for an inline code span, fenced by more backticks than the value holds;
- :func:`html_text` for HTML (text and attribute values);
- :func:`css_string` for a quoted CSS string (the PDF's running header sits in a ``<style>`` element, which ends
  at the first ``</style`` whatever CSS thinks).

All of them first make the text :func:`visible`: line breaks become spaces (a newline could start a Markdown
heading, list or new paragraph) and characters that are invisible or change how the text around them is drawn
(controls, bidirectional overrides such as U+202E, which would show ``72.00%`` as ``%00.27``) are shown as
``[U+202E]``. This module imports nothing of the package.
"""

from __future__ import annotations

import html
import re
import string
import unicodedata

# Line and paragraph breaks (besides \n and \r): each would end a Markdown line
LINE_BREAKS = "\r\n\t\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Joiners that scripts (Persian, Indic) and emoji sequences need: format characters that are kept
KEPT_FORMAT = {"\u200c", "\u200d"}
# The ASCII punctuation that is Markdown (inline markup, HTML, entities, math, autolinks, GFM extensions) or starts
# a block at the start of a line; the rest (, ; / ? % " ') stays as written, so a name stays readable in the source
MARKDOWN_PUNCTUATION = frozenset(string.punctuation) - frozenset(",;/?%\"'")


def _shown(ch: str) -> str:
    if ch in LINE_BREAKS:
        return " "
    category = unicodedata.category(ch)
    # Cc: controls (an ANSI escape, NUL); Cf: format characters (bidi overrides and isolates, zero-width space,
    # the invisible tag characters); Cs: lone surrogates, which cannot be encoded at all
    if category in ("Cc", "Cs") or (category == "Cf" and ch not in KEPT_FORMAT):
        return f"[U+{ord(ch):04X}]"
    return ch


def visible(value) -> str:
    """``str(value)`` on one line, with every control or format character shown by its code point."""
    text = str(value)
    if text.isprintable() and not any(ch in LINE_BREAKS for ch in text):
        return text
    return "".join(map(_shown, text))


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (a running header has one line)."""
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + "…"


def md_text(value) -> str:
    """``value`` as Markdown text that renders exactly as the characters given (no markup, no HTML, no math)."""
    return "".join("\\" + ch if ch in MARKDOWN_PUNCTUATION else ch for ch in visible(value))


def md_code(value) -> str:
    """``value`` as a Markdown inline code span (backticks included) that renders exactly as the characters given.

    The fence is one backtick longer than the longest run of backticks in the value. A space on each side, which
    CommonMark strips again, is added only where it is needed: a value that starts or ends with a backtick, or
    with a space at both ends (an ordinary name is fenced by single backticks, as before).
    """
    text = visible(value)
    if not text:
        return "` `"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" or (text[0] == " " and text[-1] == " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def html_text(value) -> str:
    """``value`` escaped for HTML text or a quoted attribute value."""
    return html.escape(visible(value), quote=True)


def css_string(value) -> str:
    """``value`` as a double-quoted CSS string, safe inside a ``<style>`` element.

    Every ASCII character but letters, digits and the space is written as a CSS hex escape (``\\3c `` for ``<``),
    so neither a quote, a backslash, a ``;`` nor ``</style>`` can end the string, the rule or the element.
    """
    out = []
    for ch in visible(value):
        if ch.isascii() and not (ch.isalnum() or ch == " "):
            out.append(f"\\{ord(ch):x} ")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
