"""The model: the sidebar's picker shared by every page (kept in ``?model=``), the model
loaded once per server process, and whether this server loads models other than its
built-in ones (:func:`model_paths_allowed`)."""

from __future__ import annotations

import ipaddress
import os

import streamlit as st

from workbench.app import runs
from workbench.app.text import text
from workbench.app.urls import share_in_url
from workbench.model.loading import DEFAULT_MODEL, LoadedModel, ModelLoadError, available_models, load_model

OTHER_MODEL = "other"
ALLOW_MODEL_PATHS = (
    "WORKBENCH_ALLOW_MODEL_PATHS"  # env var: 1 lets a server reachable from elsewhere load local models
)
MODEL_NOTES = {
    DEFAULT_MODEL: "smollm2-135m-instruct (default)",
    "tiny-llama": "tiny-llama (random, tests)",
    "tiny-gpt2": "tiny-gpt2 (random, tests)",
    OTHER_MODEL: "Other: local folder or HF name",
}


def model_paths_allowed() -> bool:
    """Whether this server loads models other than the built-in ones (a local folder or a name
    in the Hugging Face cache, typed in the sidebar or asked for by ``?model=``).

    Off on a server reachable from other machines, where anyone could make it load any local
    directory (an oracle of which folders exist, and a way to fill its memory). On when the
    server listens on the loopback interface only (``server.address`` 127.0.0.1 or
    localhost, the default in ``.streamlit/config.toml``), or when the environment variable
    ``WORKBENCH_ALLOW_MODEL_PATHS`` is 1 / true / yes (0 / false / no turns it off anywhere)."""
    setting = os.environ.get(ALLOW_MODEL_PATHS, "").strip().lower()
    if setting in ("1", "true", "yes"):
        return True
    if setting in ("0", "false", "no"):
        return False
    address = str(st.get_option("server.address") or "").strip("[]")
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # unset: Streamlit listens on every interface
        return False


def model_picker() -> str:
    """The sidebar model picker shared by every page, kept in ``?model=``. Returns the name."""
    builtin = available_models()
    paths_allowed = model_paths_allowed()
    choices = [*builtin, OTHER_MODEL] if paths_allowed else builtin
    if "model_choice" not in st.session_state:
        requested = st.query_params.get("model") or DEFAULT_MODEL
        if requested in builtin:
            st.session_state.model_choice = requested
        elif paths_allowed:
            st.session_state.model_choice = OTHER_MODEL
            st.session_state.model_path = requested
        else:
            st.session_state.model_choice = DEFAULT_MODEL
            st.warning(
                f"The link asks for the model {text(requested)}, but this server loads only its built-in "
                f"models: it is reachable from other machines. Showing {DEFAULT_MODEL} instead. (Set "
                f"{ALLOW_MODEL_PATHS}=1 where the server is started to allow local folders.)",
                icon=":material/block:",
            )
    with st.sidebar:
        choice = st.selectbox("Model", choices, key="model_choice", format_func=MODEL_NOTES.get)
        name = choice
        if choice == OTHER_MODEL:
            name = st.text_input(
                "Model directory or Hugging Face name",
                key="model_path",
                help="A local folder with config and weights, or a name already in the local "
                "Hugging Face cache (there is no hub access at run time).",
            ).strip()
        elif not paths_allowed:
            st.caption(
                f"Built-in models only: this server is reachable from other machines ({ALLOW_MODEL_PATHS})."
            )
    if not name:
        st.info("Type a local model directory or a Hugging Face model name in the sidebar.")
        st.stop()
    share_in_url(model=name)
    return name


def current_model_name() -> str:
    return st.query_params.get("model") or DEFAULT_MODEL


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_model(name: str) -> LoadedModel:
    return load_model(name)


def get_model(name: str) -> LoadedModel:
    """The model, loaded once per server process; a load error is shown and stops the page."""
    if name not in available_models() and not model_paths_allowed():
        st.error(f"This server loads only its built-in models, not {text(name)}.", icon=":material/block:")
        st.stop()
    try:
        with st.spinner(f"Loading model {text(name)} (the embedded model takes ~15 s the first time) ..."):
            return _load_model(name)
    except ModelLoadError as err:
        st.error(text(err), icon=":material/error:")
        st.stop()


def current_model() -> LoadedModel:
    """The model picked in the sidebar (or ``?model=``), with its shape shown in the sidebar,
    and a warning there for any run store or run that cannot be read."""
    model = get_model(current_model_name())
    shape = model.heads.shape
    st.sidebar.caption(
        f"**{text(model.name)}** ({model.source}, {model.device}): {shape.n_layers} layers x "
        f"{shape.n_heads} heads ({shape.n_kv_heads} key/value), d_model {shape.d_model}"
    )
    runs.show_store_problems()
    return model
