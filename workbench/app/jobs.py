"""Fits that run beside the app: a queue of fit jobs the server owns, each fit in a process of
its own, so no browser session waits on it (and none can disturb the hooks of the model a
page is using).

:class:`FitJobs` takes a :class:`FitRequest` (method, model, tasks, config), runs one job at
a time in a fresh process that loads the model, fits, scores and saves through
``workbench.experiments.fitting.fit_score_save`` into the given run store, and keeps each
job's live state in a :class:`FitJob`: stage, steps done, the latest numbers of the fit
(losses), peak memory, the run id or the error. :meth:`FitJobs.stop` asks the fit to stop
at its next progress report, and ends the process if it has not within a few seconds: runs
are written atomically, so a stopped fit leaves no half-written run.

No Streamlit here (each fit process imports this module afresh, by its path: the spawned
process's target is :func:`_fit_process`): :mod:`workbench.app.fits` holds one
:class:`FitJobs` per server (``st.cache_resource``) and draws the jobs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, field

import psutil

from workbench.methods import MethodConfig
from workbench.tasks.task import Task

QUEUED, RUNNING, DONE, FAILED, STOPPED = "queued", "running", "done", "failed", "stopped"
ACTIVE = (QUEUED, RUNNING)
KEEP_FINISHED = 20  # finished jobs kept for display, newest first


@dataclass(frozen=True)
class FitRequest:
    method: str  # a name in workbench.methods.METHODS
    model: str  # a name workbench.model.loading.load_model takes
    tasks: tuple[Task, ...]
    config: MethodConfig
    store: str  # folder of the run store the run is saved to
    eval_limit: int = 100  # test queries scored after the fit (0: not scored)

    @property
    def label(self) -> str:
        return f"{self.method} on {'+'.join(t.name for t in self.tasks)} ({self.model})"


@dataclass
class FitJob:
    id: str
    request: FitRequest
    state: str = QUEUED
    stage: str = "waiting for the fits before it"
    done: int = 0
    total: int = 0
    record: dict = field(default_factory=dict)  # the numbers of the latest progress report
    history: list[dict] = field(default_factory=list)  # every report that carried numbers, with its step
    peak_mib: float = 0.0  # the fit process's peak resident memory
    run_id: str | None = None
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stop_requested: bool = False

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        if self.state == DONE:
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def seconds(self) -> float:
        """Time running so far (or in all, once finished)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started


class FitStopped(Exception):
    """Raised inside the fit process at a progress report once a stop was asked for."""


def _numbers(record: dict) -> dict:
    """The finite numbers of a progress record (losses, accuracies), JSON-able."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def _fit_process(request: FitRequest, events, stop) -> None:
    """The body of a fit process: load, fit, score, save; every step reported on ``events``."""
    try:
        from workbench.experiments.fitting import fit_score_save
        from workbench.model.loading import load_model
        from workbench.store.runs import RunStore

        events.put(("progress", "loading the model", 0, 0, {}))
        model = load_model(request.model)
        if stop.is_set():
            raise FitStopped

        def progress(stage: str, done: int, total: int, record: dict) -> None:
            events.put(("progress", stage, int(done), int(total), _numbers(record)))
            if stop.is_set():
                raise FitStopped

        events.put(("progress", "preparing the fit", 0, 0, {}))
        _, run_id, metrics = fit_score_save(
            model,
            list(request.tasks),
            request.method,
            request.config,
            RunStore(request.store),
            eval_limit=request.eval_limit or None,
            score=request.eval_limit > 0,
            progress=progress,
        )
        events.put(("done", run_id, metrics))
    except FitStopped:
        events.put(("stopped",))
    except BaseException as err:  # the job reports it; the process ends either way
        events.put(("failed", f"{type(err).__name__}: {err}"))


class FitJobs:
    """The fit queue of one server: jobs run one at a time, each in its own process."""

    def __init__(self, stop_grace: float = 5.0, poll: float = 0.2) -> None:
        self.stop_grace = stop_grace  # seconds a fit has to stop by itself before its process is ended
        self.poll = poll
        self._jobs: dict[str, FitJob] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads
        self._worker = threading.Thread(target=self._work, name="fit-jobs", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ what sessions call

    def submit(self, request: FitRequest) -> FitJob:
        with self._lock:
            job = FitJob(id=f"fit-{next(self._ids)}", request=request)
            self._jobs[job.id] = job
            self._wake.notify_all()
            return dataclasses.replace(job)

    def stop(self, job_id: str) -> None:
        """Ask a job to stop: a queued one is dropped, a running one stops at its next report."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.active:
                return
            job.stop_requested = True
            if job.state == QUEUED:
                job.state, job.stage, job.finished = STOPPED, "stopped before it started", time.time()

    def jobs(self) -> list[FitJob]:
        """A snapshot of every job, the active ones first, then the newest."""
        with self._lock:
            snapshot = [dataclasses.replace(job, history=list(job.history)) for job in self._jobs.values()]
        return sorted(snapshot, key=lambda job: (not job.active, -job.submitted))

    def get(self, job_id: str) -> FitJob | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else dataclasses.replace(job, history=list(job.history))

    def wait(self, job_id: str, timeout: float = 300.0) -> FitJob:
        """Block until a job is finished (for scripts and tests); returns it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.get(job_id)
            if job is None or not job.active:
                return job
            time.sleep(self.poll)
        raise TimeoutError(f"Fit job {job_id} still {self.get(job_id).state} after {timeout:.0f} s.")

    # ------------------------------------------------------------------ the worker

    def _next(self) -> FitJob:
        with self._lock:
            while True:
                queued = [job for job in self._jobs.values() if job.state == QUEUED]
                if queued:
                    job = min(queued, key=lambda j: j.submitted)
                    job.state, job.stage, job.started = RUNNING, "starting a fit process", time.time()
                    return job
                self._wake.wait()

    def _work(self) -> None:
        while True:
            job = self._next()
            try:
                self._run(job)
            except Exception as err:  # the queue goes on whatever one job does
                self._finish(job, FAILED, error=f"{type(err).__name__}: {err}")
            self._forget_old()

    def _run(self, job: FitJob) -> None:
        events = self._context.Queue()
        stop = self._context.Event()
        process = self._context.Process(
            target=_fit_process, args=(job.request, events, stop), name=job.id, daemon=True
        )
        process.start()
        memory = psutil.Process(process.pid)
        stop_asked_at = None
        while True:
            try:
                event = events.get(timeout=self.poll)
            except queue.Empty:
                event = None
            with self._lock:
                if job.stop_requested and stop_asked_at is None:
                    stop.set()
                    stop_asked_at = time.time()
                    job.stage = "stopping"
                try:
                    job.peak_mib = max(job.peak_mib, memory.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
                if event is not None and event[0] == "progress":
                    _, stage, done, total, record = event
                    job.stage, job.done, job.total = stage, done, total
                    if record:
                        job.record = record
                        job.history.append({"stage": stage, "step": done, **record})
            if event is not None and event[0] != "progress":
                break
            if stop_asked_at is not None and time.time() - stop_asked_at > self.stop_grace:
                process.terminate()  # the fit did not reach a progress report in time
                event = ("stopped",)
                break
            if event is None and not process.is_alive():
                try:  # its last words may still be in the queue
                    event = events.get(timeout=1.0)
                except queue.Empty:
                    event = ("failed", f"The fit process ended unexpectedly (exit code {process.exitcode}).")
                if event[0] != "progress":
                    break
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
        if event[0] == "done":
            self._finish(job, DONE, run_id=event[1], metrics=event[2])
        elif event[0] == "stopped":
            self._finish(job, STOPPED)
        else:
            self._finish(job, FAILED, error=event[1])

    def _finish(self, job: FitJob, state: str, **fields) -> None:
        with self._lock:
            job.state, job.finished = state, time.time()
            job.stage = {DONE: "saved", STOPPED: "stopped, nothing saved", FAILED: "failed"}[state]
            for name, value in fields.items():
                setattr(job, name, value)

    def _forget_old(self) -> None:
        with self._lock:
            finished = sorted(
                (job for job in self._jobs.values() if not job.active), key=lambda j: -j.submitted
            )
            for job in finished[KEEP_FINISHED:]:
                del self._jobs[job.id]
