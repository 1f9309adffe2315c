"""Task Vector Workbench: the Streamlit app (`make app`, i.e. `streamlit run app.py`).

The pages (``workbench.app.views.VIEWS``, home first) share the sidebar's model picker,
which is kept in the URL (``?model=...``) with each page's own settings, so a view is a
shareable link. Pages live in ``pages/``; each is thin: widgets -> ``workbench`` -> figures
from ``analyses/``. The Streamlit helpers they share, one module per concern, are in
``workbench/app/`` (the page list in ``views``).
"""

from workbench.app import views

views.run_app()
