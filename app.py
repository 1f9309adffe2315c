"""Task Vector Workbench: the Streamlit app (`make app`, i.e. `streamlit run app.py`).

The pages (``app_state.VIEWS``, home first) share the sidebar's model picker, which is kept
in the URL (``?model=...``) with each page's own settings, so a view is a shareable link.
Pages live in ``pages/``; each is thin: widgets -> ``workbench`` -> figures from
``analyses/``. Shared Streamlit helpers, the page list included, are in ``app_state.py``.
"""

import app_state

app_state.run_app()
