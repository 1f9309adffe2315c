"""Experiments on fitted methods: evaluation of any intervention on held-out queries
(:mod:`~workbench.experiments.evaluation`), task x shots grids (:mod:`~workbench.experiments.grid`),
fitting a method into the run store (:mod:`~workbench.experiments.fitting`), methods side by
side (:mod:`~workbench.experiments.comparison`), per-head maps (:mod:`~workbench.experiments.head_maps`),
cross-task transfer of head selections (:mod:`~workbench.experiments.transfer`), and time and
memory measurement (:mod:`~workbench.experiments.measure`)."""
