"""Literal text in Markdown: :func:`text` escapes what comes from a URL, a file or a run
store, so it cannot put links, images or styled text into the app."""

from __future__ import annotations

import re

_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")

# Where GFM would turn bare text into a link (https://..., www...., a@b.c): a zero-width space
# breaks the pattern; Streamlit finds such links after escapes are undone.
_AUTOLINK = re.compile(r"(?<=\\:)(?=//)|(?<=[Ww]{3})(?=\\\.)|(?<=@)")


def text(value: object) -> str:
    """``value`` as literal text in any element that renders Markdown (``st.error``,
    ``st.caption``, ...): every Markdown, HTML and directive character is escaped, and bare
    URLs and e-mail addresses are kept from turning into links. Anything that comes from a
    URL, a file or a run store goes through here, so a crafted link or file cannot put links,
    images or styled text into the app."""
    return _AUTOLINK.sub("\u200b", _MARKDOWN_SYNTAX.sub(r"\\\1", str(value)))
