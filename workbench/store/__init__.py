"""Saved runs: the store (:mod:`~workbench.store.runs`), the metadata schema every run
follows (:mod:`~workbench.store.schema`), and the codec between fitted methods and runs
(:mod:`~workbench.store.codec`)."""
