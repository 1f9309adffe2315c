"""A fit is a spec: plain data that says which fit to make, can be written once, sent to a
worker and made again.

    method: SITE
    model: smollm2-135m-instruct
    tasks: [antonym, my_pairs.csv]            # or {name, path, sha256} records
    settings: {steps: 200, loss: answer}      # the method's Config fields; the rest are defaults
    bos: true                                 # prompts start with the model's BOS token
    device: cpu                               # where to run (null: CUDA if present)

:meth:`FitSpec.from_dict` fills in every default setting and each task's content hash, so
the spec a run records (``meta["spec"]``) names the fit completely, and :attr:`FitSpec.hash`
is its identity: method, model, task names and contents, every setting and the prompt
start. The device is where a fit ran, not what it is, and is left out of the hash. A task
named by a spec is found by its path (or as a built-in task by name) and must still have
the recorded content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEC_VERSION = 1
FIELDS = ("method", "model", "tasks", "settings", "bos", "device")


class SpecError(ValueError):
    """A spec that cannot name a fit; the message says which field and why."""


@dataclass(frozen=True)
class TaskRef:
    """A task as a spec names it: its name, the file it is read from ("" for a built-in task
    found by name), the sha256 of its pairs, and whether repeated inputs kept the first record."""

    name: str
    path: str = ""
    sha256: str = ""
    keep_first_duplicates: bool = False

    @classmethod
    def of(cls, task) -> TaskRef:
        from workbench.store.schema import task_source

        source = task_source(task)
        return cls(task.name, source["path"], source["sha256"], bool(task.meta.get("duplicates_dropped")))

    def load(self):
        """The task, checked to have the recorded content."""
        from workbench.tasks.files import DATA_DIR, catalog, load_task

        builtin = self.name in catalog() and (not self.path or Path(self.path).name == f"{self.name}.json"
                                                and Path(self.path).parent.name == DATA_DIR.name)
        task = load_task(self.name if builtin else self.path or self.name,
                         keep_first_duplicates=self.keep_first_duplicates)
        if self.sha256 and task.content_hash != self.sha256:
            raise SpecError(f"Task {self.name!r} ({self.path or 'built-in'}) has changed since the spec "
                            f"was written: its pairs hash to {task.content_hash[:12]}..., "
                            f"the spec names {self.sha256[:12]}...")
        return task if task.name == self.name else dataclasses.replace(task, name=self.name)


@dataclass(frozen=True)
class FitSpec:
    method: str
    tasks: tuple[TaskRef, ...]
    model: str = "smollm2-135m-instruct"
    settings: dict = field(default_factory=dict)  # every field of the method's Config
    bos: bool = True
    device: str | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_dict(cls, data: Any, where: str = "spec") -> FitSpec:
        """A spec from plain data (a parsed YAML / JSON file, a run's ``meta["spec"]``), checked:
        a known method, its settings within their bounds (defaults filled in), tasks found."""
        from workbench.methods import get_method
        from workbench.methods.settings import fields
        from workbench.tasks.files import resolve_tasks

        if not isinstance(data, dict):
            raise SpecError(f"{where}: a spec is a mapping of {', '.join(FIELDS)}, "
                            f"not {type(data).__name__}.")
        unknown = sorted(set(data) - {*FIELDS, "version", "hash"})
        if unknown:
            raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                            f"a spec has {', '.join(FIELDS)}.")
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise SpecError(f"{where}: spec version {data.get('version')!r}, "
                            f"this workbench reads {SPEC_VERSION}.")
        if not isinstance(data.get("method"), str):
            raise SpecError(f"{where}: 'method' must name a method.")
        try:
            method = get_method(data["method"].upper())
        except ValueError as err:
            raise SpecError(f"{where}: {err}") from None
        settings = data.get("settings") or {}
        if not isinstance(settings, dict):
            raise SpecError(f"{where}: 'settings' must be a mapping of setting names to values.")
        known = set(method.Config.__dataclass_fields__)
        if set(settings) - known:
            raise SpecError(f"{where}: {method.name} has no setting "
                            f"{', '.join(sorted(set(settings) - known))} "
                            f"(its settings: {', '.join(method.Config.__dataclass_fields__)}).")
        kinds = {f.name: f.kind for f in fields(method.Config)}
        settings = {k: float(v) if kinds[k] is float and type(v) is int else v for k, v in settings.items()}
        try:
            config = method.Config(**settings)
            config.check()
        except (TypeError, ValueError) as err:
            raise SpecError(f"{where}: {method.name} settings: {err}") from None
        raw_tasks = data.get("tasks")
        if isinstance(raw_tasks, (str, dict)):
            raw_tasks = [raw_tasks]
        if not isinstance(raw_tasks, list) or not raw_tasks:
            raise SpecError(f"{where}: 'tasks' must list one or more tasks "
                            "(names, files, or {name, path, sha256}).")
        refs = []
        for item in raw_tasks:
            if isinstance(item, str):
                refs += [TaskRef.of(task) for task in resolve_tasks([item])]
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                extra = sorted(set(item) - {f.name for f in dataclasses.fields(TaskRef)})
                if extra:
                    raise SpecError(f"{where}: task {item['name']!r} has unknown field(s) "
                                    f"{', '.join(extra)}.")
                refs.append(TaskRef(**item))
            else:
                raise SpecError(f"{where}: a task is a name, a path, or a mapping with a name; got {item!r}.")
        if len(refs) > 1 and not method.several_tasks:
            raise SpecError(f"{where}: {method.name} is fitted per task; the spec names {len(refs)} tasks.")
        model, bos, device = data.get("model", cls.model), data.get("bos", True), data.get("device")
        if not isinstance(model, str) or not model.strip():
            raise SpecError(f"{where}: 'model' must be a model name or folder.")
        if not isinstance(bos, bool):
            raise SpecError(f"{where}: 'bos' must be true or false.")
        if device is not None and not isinstance(device, str):
            raise SpecError(f"{where}: 'device' must be a device name (cpu, cuda, cuda:N) or null.")
        return cls(method.name, tuple(refs), model, config.as_dict(), bos, device)

    @classmethod
    def from_text(cls, text: str, where: str = "spec") -> FitSpec:
        """A spec from YAML (JSON is YAML too)."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"{where}: not valid YAML / JSON ({' '.join(str(err).split())}).") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_file(cls, path: str | Path) -> FitSpec:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"Cannot read the spec {path}: {err}") from None
        return cls.from_text(text, str(path))

    @classmethod
    def of_fit(cls, fit, model, tasks) -> FitSpec:
        """The spec of a fit just made: its method and config, the model and how prompts start,
        the tasks as they were read, and the device it ran on."""
        return cls(fit.name, tuple(TaskRef.of(t) for t in tasks), model.name, fit.config.as_dict(),
                   bool(model.prepend_bos), str(model.device))

    # ------------------------------------------------------------------ using

    def config(self):
        from workbench.methods import get_method

        return get_method(self.method).Config(**self.settings)

    def load_tasks(self) -> list:
        return [ref.load() for ref in self.tasks]

    def to_dict(self) -> dict:
        return {"version": SPEC_VERSION, "method": self.method, "model": self.model,
                "tasks": [dataclasses.asdict(t) for t in self.tasks], "settings": dict(self.settings),
                "bos": self.bos, "device": self.device}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @property
    def hash(self) -> str:
        return spec_hash(self.to_dict())


def spec_hash(spec: dict) -> str:
    """The identity of a spec's fit (16 hex digits): method, model, each task's name and
    content hash, every setting and the prompt start; not the device, nor file paths."""
    identity = {
        "method": spec["method"],
        "model": spec["model"],
        "tasks": [[t["name"], t.get("sha256", "")] for t in spec["tasks"]],
        "settings": spec["settings"],
        "bos": bool(spec["bos"]),
    }
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
