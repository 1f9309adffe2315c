"""Every app page on a damaged run store, through ``streamlit.testing.v1.AppTest`` on
tiny-llama: a truncated tensors file, a ``meta.json`` set to ``{}``, a ``meta.json`` that is
not JSON, in the user store and in the bundled one. No page raises or shows an error box;
the damaged run (or store) is skipped with a warning that names it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_pages import no_exception, open_page, private_stores, shown

from workbench.methods import METHODS
from workbench.store.codec import to_run
from workbench.store.runs import RunStore
from workbench.tasks.files import load_task

DAMAGED_TASK = "antonym"
PAGES = {  # page -> its query
    "home": {},
    "evaluate": {"task": DAMAGED_TASK, "shots": "2", "limit": "4"},
    "compare": {"source": "Compute here", "task": DAMAGED_TASK},
    "head_relevance": {"task": DAMAGED_TASK},
    "transfer": {},
    "fit": {"method": "SITE", "task": DAMAGED_TASK},
}
LOADS_THE_RUN = {"compare", "head_relevance"}  # pages that load the damaged task's SITE run


@pytest.fixture(scope="module")
def healthy_store(tiny_llama, tmp_path_factory) -> Path:
    """SITE runs on antonym and uppercase, an FV run on antonym."""
    root = tmp_path_factory.mktemp("healthy_runs")
    store = RunStore(root)
    for task, methods in ((DAMAGED_TASK, ["SITE", "FV"]), ("uppercase", ["SITE"])):
        for method in (METHODS[name] for name in methods):
            fit = method.fit(tiny_llama, load_task(task), method.Config(**method.tiny_settings))
            store.save(to_run(fit, tiny_llama, load_task(task)))
    return root


def _site_run(root: Path) -> Path:
    return next(p for p in root.iterdir() if p.name.startswith(f"site-{DAMAGED_TASK}-"))


def truncate_tensors(root: Path) -> None:
    tensors = _site_run(root) / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])


def empty_meta(root: Path) -> None:
    (_site_run(root) / "meta.json").write_text("{}", encoding="utf-8")


def broken_meta(root: Path) -> None:
    (_site_run(root) / "meta.json").write_text('{"id": "site-antonym', encoding="utf-8")


DAMAGES = {"truncated tensors": truncate_tensors, "meta {}": empty_meta, "meta not JSON": broken_meta}


@pytest.fixture(params=["user", "bundled"])
def damaged(request, healthy_store, tmp_path, monkeypatch) -> tuple[str, Path]:
    """The healthy runs as the user store or as the bundled one (the other store empty)."""
    if request.param == "user":
        return "user", private_stores(monkeypatch, tmp_path, healthy_store)
    private_stores(monkeypatch, tmp_path)
    bundled = tmp_path / "bundled" / "runs"
    shutil.copytree(healthy_store, bundled, ignore=shutil.ignore_patterns("index.sqlite"))
    return "bundled", bundled


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("page", list(PAGES))
def test_page_survives_a_damaged_run(page, damage, damaged):
    store, root = damaged
    DAMAGES[damage](root)
    at = open_page(page, **PAGES[page])
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert at.title, "the page stopped before its title"
    warnings = [shown(w.value) for w in at.warning]
    listed = damage == "truncated tensors" or store == "user"  # the store still lists the run
    if not listed:  # the run's metadata is unreadable: the store's listing flags it (or the store)
        assert any(store in w and ("damaged" in w or "could not be read" in w) for w in warnings), warnings
    elif page in LOADS_THE_RUN:  # it is listed; loading it fails and is flagged
        assert any(DAMAGED_TASK in w and "site-" in w for w in warnings), warnings


def test_head_relevance_offers_a_new_fit_for_a_damaged_run(healthy_store, tmp_path, monkeypatch):
    root = private_stores(monkeypatch, tmp_path, healthy_store)
    truncate_tensors(root)
    at = open_page("head_relevance", task=DAMAGED_TASK)
    no_exception(at)
    assert any("Skipped the newest SITE run of antonym" in shown(w.value) for w in at.warning)
    assert any(b.label == "Fit SITE now" for b in at.button)
    at = open_page("head_relevance", task="uppercase")  # the healthy task's map still shows
    no_exception(at)
    assert at.get("plotly_chart") and not at.error


def test_a_new_empty_user_store_is_no_problem(tmp_path, monkeypatch):
    """A first start: the user store's folder does not exist yet (so it has no index)."""
    root = private_stores(monkeypatch, tmp_path)
    assert not root.exists()
    at = open_page("home")
    no_exception(at)
    assert not at.error and not [w.value for w in at.warning]
