"""Task Vector Workbench: the Streamlit app (`make app`, i.e. `streamlit run app.py`).

This entry script declares the pages (``app_state.VIEWS``: home first) and the sidebar's
model picker, which every page shares and which is kept in the URL (``?model=...``) with
each page's own settings, so a view is a shareable link. Pages live in ``pages/``; each is
thin: widgets -> ``workbench`` -> figures from ``analyses/``. Shared Streamlit helpers are
in ``app_state.py``.
"""

import streamlit as st

import app_state

st.set_page_config(page_title="Task Vector Workbench", page_icon=":material/hub:", layout="wide")

page = app_state.navigation()
app_state.model_picker()
page.run()
