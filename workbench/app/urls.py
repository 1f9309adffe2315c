"""The view lives in the URL (``?model=...&task=...``): :func:`seed_from_query` gives a
widget its first value from the URL, :func:`share_in_url` writes the current values back,
so a view is a shareable link."""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

import streamlit as st


def seed_from_query(
    key: str, default: Any, cast: Callable[[str], Any] = str, valid: Container | None = None,
    param: str | None = None,
) -> None:
    """Give the widget with ``key`` its first value from ``?key=...`` (or ``?param=...``; else
    ``default``), once per session; a value that does not cast or is not in ``valid`` falls
    back to default."""
    if key in st.session_state:
        return
    value = default
    raw = st.query_params.get(param or key)
    if raw is not None:
        try:
            value = cast(raw)
        except (ValueError, KeyError):
            value = default
    if valid is not None and value not in valid:
        value = default
    st.session_state[key] = value


def seed_list_from_query(key: str, default: list, valid: Container, param: str | None = None) -> None:
    """:func:`seed_from_query` for a multiselect: ``?param=a,b`` (the values in ``valid``;
    none of them: ``default``)."""
    if key in st.session_state:
        return
    raw = st.query_params.get(param or key) or ""
    st.session_state[key] = [value for value in raw.split(",") if value in valid] or list(default)


def share_in_url(**values: Any) -> None:
    """Write the view into the URL so it can be shared; ``None`` removes a parameter."""
    for key, value in values.items():
        if value is None:
            st.query_params.pop(key, None)
        else:
            st.query_params[key] = str(value)


def clicked_cell(event) -> list | None:
    """The ``customdata`` of the first clicked cell in a Plotly selection event
    (``st.session_state[key]`` of a chart with ``on_select``), or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or ():
        data = point.get("customdata")
        if data:
            return list(data)
    return None
