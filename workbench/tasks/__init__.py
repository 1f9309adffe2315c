"""Tasks and prompts: a task and its fixed splits (:mod:`~workbench.tasks.task`), task files
and the built-in library (:mod:`~workbench.tasks.files`), and prompt templates
(:mod:`~workbench.tasks.prompts`)."""
