"""Figures and tables built from workbench results: each function takes data and returns a
Plotly figure or a DataFrame, so the app, the CLI and the tests share it."""
