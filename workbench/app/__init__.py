"""The Streamlit app's helpers, one module per concern; the pages (``pages/*.py``) import
the ones they use (``from workbench.app import runs, urls``) and stay thin: widgets ->
``workbench`` -> ``analyses`` figures.

    views    the pages (:data:`views.VIEWS`), the app's entry (:func:`views.run_app`), enter_page
    text     text(): anything from a URL, a file or a store shown as literal text
    urls     the view in the URL: seed a widget from ``?key=``, share values back, clicked cells
    models   the sidebar's model picker, the cached model, which models this server loads
    tasks    built-in and uploaded tasks: the task picker, the upload, get_task
    progress progress_bar(): a st.progress bar as the workbench's progress callback
    export   download buttons: a figure as HTML / PNG / SVG / PDF, tables as CSV
    tables   saved result tables (methods benchmark, transfer matrix), read once per change
    runs     the run stores: their runs (cached per change), the newest fit per task, loading one
    fits     fits in the background: the Fit form (config_form), start_fit, the live jobs panel
    jobs     the server's fit queue, each fit in a process of its own (no Streamlit)

``text`` and ``jobs`` import no Streamlit: each fit process imports ``jobs`` afresh (its
entry point, ``jobs._fit_process``, is found by module path under ``spawn``).
"""
