"""Evaluation, --tau auto and calibration over Ray workers, with the numbers of one process.

How it works:

* The dataset's index range is cut into shards whose bounds are multiples of the batch
  size, so every worker runs exactly the batches one process would run (the same arrays
  into the same onnxruntime graphs: the same floats).
* Each worker is a Ray actor, one per GPU where Ray sees GPUs (else one per CPU, or
  ``workers``), holding the job's sessions: an :class:`~srp_onnx.evaluate.Evaluator`
  (the spiking model and the ANNs), a spiking model for --tau auto, or the calibration
  ANN. It reads its shard from the same path (:class:`~srp_onnx.pipeline.DataSource`:
  no image passes through the driver) and returns exact integer counts
  (:class:`~srp_onnx.evaluate.EvalCounts`, :class:`~srp_onnx.evaluate.TauCounts`,
  :class:`~srp_onnx.calibrate.CalibStats`).
* The driver takes each shard's counts once, by shard id, merges them and builds the
  report with the code a single process uses (:func:`~srp_onnx.evaluate.build_report`,
  :func:`~srp_onnx.evaluate.pick_tau`, the thresholds of calibrate()): same numbers, same
  rows, plus a ``distributed`` block (workers, their devices, the images each counted).

Failures: a shard whose worker dies (the actor is restarted by Ray, and gets work again once
it answers) or raises anything but a srp-onnx error (bad data or model, raised as it is) is
given to another worker, at most :data:`MAX_ATTEMPTS` times. Ctrl-C kills the workers and raises EvalInterrupted, so the
caller writes nothing.

Ray is imported here only, when a :class:`Cluster` is made; without it, :class:`RayMissing`
says how to install it.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import onnx

from srp_onnx.analysis import Analysis, Analyzer, build_analysis
from srp_onnx.calibrate import CalibStats, HistogramCollector
from srp_onnx.data.base import one_line
from srp_onnx.errors import SrpOnnxError, UsageError
from srp_onnx.evaluate import (
    EvalInterrupted,
    EvalReport,
    Evaluator,
    TauChoice,
    TauCounts,
    build_report,
    count_tau,
    pick_tau,
    tau_candidates,
)
from srp_onnx.pipeline import DataSource
from srp_onnx.progress import NULL_PROGRESS, Progress
from srp_onnx.runtime import SpikingModel

__all__ = ["INSTALL_HINT", "MAX_ATTEMPTS", "Cluster", "ClusterError", "RayMissing", "plan_shards"]

INSTALL_HINT = "pip install 'srp-onnx[ray]'"
MAX_ATTEMPTS = 3  # tries of one shard before the run fails
SHARDS_PER_WORKER = 4  # finer shards balance uneven workers and lose less work to a failure
PROBES = 8  # a dead worker is asked this many times (0.5 s, 1 s, 2 s, ... apart) whether Ray restarted it
READY_TIMEOUT_S = 300  # workers not placed by then (resources the cluster lacks) fail the run


class RayMissing(UsageError):
    """Distributed work was asked for, but Ray is not installed."""


class ClusterError(SrpOnnxError):
    """The cluster could not do the work (no workers placed, a shard failing on every try)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(f"distributed runs need Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def plan_shards(n: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """Index ranges covering 0..n, each a whole number of batches (the last may end short).

    About SHARDS_PER_WORKER per worker, never splitting a batch: the batches are those of one pass.
    """
    batches = -(-n // batch_size)
    if batches == 0:
        return [(0, 0)]
    per = max(1, -(-batches // (workers * SHARDS_PER_WORKER)))
    return [(b * batch_size, min((b + per) * batch_size, n)) for b in range(0, batches, per)]


class _TauCounter:
    """--tau auto's work on one worker: the spiking model, counting each (tau, t) candidate."""

    def __init__(self, snn: onnx.ModelProto, taus: list[tuple[int, int]], *, device: str, threads: int | None):
        self.model = SpikingModel(snn, device=device, threads=threads)
        self.taus = taus

    @property
    def provider(self) -> str:
        return self.model.provider

    def count(self, batches, on_batch=None) -> TauCounts:
        return count_tau(self.model, self.taus, batches, on_batch)


class _CalibCounter:
    """Calibration's work on one worker: the ANN exposing the sites, streaming the images (not the labels)."""

    provider = "CPUExecutionProvider"  # calibration runs on the CPU, as in one process

    def __init__(self, model: onnx.ModelProto, input_name: str, sites: list, per_channel: bool, *, device: str,
                 threads: int | None):
        self.collector = HistogramCollector(model, input_name, sites, per_channel=per_channel, threads=threads)

    def count(self, batches, on_batch=None) -> CalibStats:
        return self.collector.count((x for x, _ in batches), on_batch)


class _AnalysisCounter:
    """analyze's work on one worker: the recording spiking model and the probing ANN, fed the images only."""

    def __init__(self, step: onnx.ModelProto, *, T: int, tau: int, device: str, threads: int | None):
        self.analyzer = Analyzer(step, T=T, tau=tau, device=device, threads=threads)

    @property
    def provider(self) -> str:
        return self.analyzer.provider

    def count(self, batches, on_batch=None):
        return self.analyzer.count((x for x, _ in batches), on_batch)


class _Job:
    """What workers build once per run (``make(device=, threads=)`` -> an object with ``count``) and read."""

    def __init__(self, make: Callable[..., Any], source: DataSource):
        self.make, self.source = make, source


class _Worker:
    """A Ray actor: builds a job's sessions on its first shard, then counts shards (the class is wrapped lazily)."""

    def __init__(self, device: str, threads: int | None):
        self.device, self.threads = device, threads
        self.job_id: int | None = None
        self.counter: Any = None
        self.source: DataSource | None = None

    def info(self) -> dict:
        import ray

        gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        return {"node": ray.util.get_node_ip_address(), "host": socket.gethostname(), "pid": os.getpid(),
                "gpus": [str(g) for g in gpus]}

    def run(self, job_id: int, box: list, start: int, stop: int) -> tuple[Any, str]:
        import ray

        if job_id != self.job_id:
            self.counter = self.source = None  # the last job's sessions go before the next one's are built
            job: _Job = ray.get(box[0])
            self.counter = job.make(device=self.device, threads=self.threads)
            self.source, self.job_id = job.source, job_id
        return self.counter.count(self.source.batches(start, stop)), self.counter.provider


class Cluster:
    """A Ray connection and a pool of workers, kept for the runs of one command (a context manager).

    ``address``: ``"auto"`` joins the running cluster (``ray start --head``, or RAY_ADDRESS) or else
    starts one on this machine; anything else is given to ``ray.init(address=...)``
    (``HOST:6379`` or ``ray://HOST:10001``). When Ray is initialized already (a notebook, a test),
    that instance is used and left running. ``workers``: how many; default one per GPU Ray sees,
    else one per CPU. ``device`` as for a single process: ``"cpu"`` never takes GPUs, ``"cuda"``
    refuses a cluster without them.
    """

    def __init__(self, address: str = "auto", *, workers: int | None = None, device: str = "auto",
                 progress: Progress = NULL_PROGRESS):
        ray = _ray()
        self._ray = ray
        self.device, self.progress = device, progress
        self._owned = False
        self.workers: list = []
        self._dead: set[int] = set()  # workers that stayed dead after Ray's restarts
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "auto" else address, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ClusterError(f"cannot reach the Ray cluster at '{address}': {one_line(e)}. Start one with "
                                   "'ray start --head' or give its address.") from None
            self._owned = True
        try:
            self._start(workers)
        except BaseException:
            self.close()
            raise

    def _start(self, workers: int | None) -> None:
        ray = self._ray
        res = ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        if self.device == "cuda" and gpus == 0:
            raise ClusterError("device 'cuda' was asked for, but the Ray cluster has no GPU.")
        if gpus > 0 and self.device != "cpu":
            n = workers or int(gpus)
            opts = {"num_gpus": 1 if n <= gpus else gpus / n, "num_cpus": 1 if n <= cpus else cpus / n}
            device, threads = ("cuda" if self.device == "cuda" else "auto"), None
        else:
            n = workers or max(1, int(cpus))
            share = cpus / n
            opts = {"num_cpus": float(int(share)) if share >= 1 else share}
            device, threads = "cpu", max(1, int(share))
        self.address = ray.get_runtime_context().gcs_address
        actor = ray.remote(max_restarts=MAX_ATTEMPTS, max_task_retries=0, **opts)(_Worker)
        self.workers = [actor.remote(device, threads) for _ in range(n)]
        try:
            self.info = ray.get([w.info.remote() for w in self.workers], timeout=READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(f"Ray could not place {n} workers ({opts}) within {READY_TIMEOUT_S} s; "
                               "ask for fewer workers or add nodes.") from None
        self._next_job = 0

    def close(self) -> None:
        """Stop the workers (their running work too); disconnect, and stop Ray if this started it."""
        for w in self.workers:
            try:
                self._ray.kill(w)
            except Exception:  # noqa: BLE001 - a worker that is gone already
                pass
        self.workers = []
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the three jobs ------------------------------------------------------------------------------

    def evaluate(self, snn: onnx.ModelProto, source: DataSource, *, T: int, tau: int | None = None,
                 ann: onnx.ModelProto | dict[str, onnx.ModelProto] | None = None, compare_baseline: bool = False,
                 chosen: tuple | None = None, chosen_label: str = "", settings: dict | None = None) -> EvalReport:
        """evaluate.evaluate over the workers: the same report, plus its ``distributed`` block."""
        make = functools.partial(Evaluator, snn, T=T, tau=tau, ann=ann, compare_baseline=compare_baseline,
                                 chosen=chosen, chosen_label=chosen_label)
        counts, block = self._run(make, source, "eval")
        providers = sorted({w["device"] for w in block["workers"] if w["images"]})
        return build_report(counts, compare_baseline=compare_baseline, device=self.device,
                            provider=", ".join(providers), settings=settings, distributed=block)

    def choose_tau(self, snn: onnx.ModelProto, source: DataSource, *, T: int | None = None,
                   budget: int | None = None, max_tau: int = 16, default: int | None = None) -> TauChoice:
        """evaluate.choose_tau over the workers (the same choice and curve)."""
        taus, criterion = tau_candidates(T=T, budget=budget, max_tau=max_tau)
        counts, _ = self._run(functools.partial(_TauCounter, snn, taus), source, "tau auto")
        return pick_tau(counts, criterion, default)

    def calib_stats(self, model: onnx.ModelProto, input_name: str, sites: list, source: DataSource, *,
                    per_channel: bool = False) -> CalibStats:
        """The merged activation histograms of ``sites`` (calibrate's ``collect``): the same thresholds."""
        make = functools.partial(_CalibCounter, model, input_name, list(sites), per_channel)
        stats, _ = self._run(make, source, "calibration")
        return stats

    def analyze(self, step: onnx.ModelProto, source: DataSource, *, T: int, tau: int) -> Analysis:
        """analysis.analyze over the workers: the same analysis, plus its ``distributed`` block."""
        counts, block = self._run(functools.partial(_AnalysisCounter, step, T=T, tau=tau), source, "analyze")
        an = build_analysis(counts)
        an.distributed = block
        return an

    @staticmethod
    def _retry(sid: int, w: int, error: BaseException, shards, tries, failed_on, todo, label: str) -> None:
        """Put a failed shard back in front (for another worker), or give up after MAX_ATTEMPTS tries."""
        tries[sid] += 1
        if tries[sid] >= MAX_ATTEMPTS:
            a, b = shards[sid]
            raise ClusterError(f"{label}: images {a}..{b - 1} failed on {tries[sid]} tries; the last error: "
                               f"{one_line(error)}")
        failed_on[sid].add(w)
        todo.appendleft(sid)

    # -- scheduling ----------------------------------------------------------------------------------

    def _run(self, make: Callable[..., Any], source: DataSource, label: str) -> tuple[Any, dict]:
        """Count every shard once over the workers; return the merged counts and the ``distributed`` block."""
        ray = self._ray
        if not self.workers:
            raise ClusterError("the cluster is closed.")
        n = len(source)
        shards = plan_shards(n, source.batch_size, len(self.workers))
        self._next_job += 1
        job_id, box = self._next_job, [ray.put(_Job(make, source))]
        results: dict[int, Any] = {}
        done_by = {i: [0, 0] for i in range(len(self.workers))}  # worker -> [images, shards] taken
        provider: dict[int, str] = {}
        todo = collections.deque(range(len(shards)))
        failed_on: dict[int, set[int]] = collections.defaultdict(set)
        tries = collections.Counter()
        idle = collections.deque(w for w in range(len(self.workers)) if w not in self._dead)
        recovering: dict[int, list[float]] = {}  # worker -> [time of its next probe, probes so far]
        pending: dict[Any, tuple[int | None, int]] = {}  # ref -> (shard, worker); shard None: a probe
        done = 0
        self.progress.start(n, "images", label)

        def submit() -> None:
            alive = set(range(len(self.workers))) - self._dead
            for sid in list(todo):
                if not idle:
                    break
                # a retried shard goes to another worker while one is alive to take it
                w = next((w for w in idle if w not in failed_on[sid]), None)
                if w is None and not alive <= failed_on[sid]:
                    continue
                w = idle[0] if w is None else w
                idle.remove(w)
                todo.remove(sid)
                pending[self.workers[w].run.remote(job_id, box, *shards[sid])] = (sid, w)
            now = time.monotonic()
            for w, (when, _) in list(recovering.items()):  # a worker Ray restarts gets work once it answers
                if when <= now and (None, w) not in pending.values():
                    pending[self.workers[w].info.remote()] = (None, w)

        try:
            while len(results) < len(shards):
                submit()
                if not pending and not recovering:
                    raise ClusterError(f"{label}: every worker died; {len(shards) - len(results)} shard(s) not done.")
                if not pending:  # only restarting workers: wait for their next probe
                    time.sleep(0.2)
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5 if recovering else None)
                if not ready:
                    continue
                ref = ready[0]
                sid, w = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the task raised; the worker lives on
                    if isinstance(e.cause, SrpOnnxError):  # bad data or model: the same on every worker
                        raise e.cause from None
                    idle.append(w)
                    self._retry(sid, w, e.cause or e, shards, tries, failed_on, todo, label)
                    continue
                except ray.exceptions.RayError as e:  # the worker died: Ray restarts it (max_restarts)
                    probes = recovering.get(w, [0.0, 0])[1]
                    if probes >= PROBES:
                        self._dead.add(w)
                        recovering.pop(w, None)
                    else:
                        recovering[w] = [time.monotonic() + 0.5 * 2 ** probes, probes + 1]
                    if sid is not None:
                        self._retry(sid, w, e, shards, tries, failed_on, todo, label)
                    continue
                if sid is None:  # a probe answered: the restarted worker takes work again
                    recovering.pop(w, None)
                    idle.append(w)
                    continue
                idle.append(w)
                value, provider[w] = value
                if sid in results:  # never counted twice
                    continue
                results[sid] = value
                a, b = shards[sid]
                done_by[w][0] += b - a
                done_by[w][1] += 1
                done += b - a
                self.progress.update(b - a)
        except KeyboardInterrupt:
            self.close()  # stops the work on the cluster now
            raise EvalInterrupted(done, n) from None
        finally:  # after an error, shards still running finish on their workers and are dropped
            self.progress.close()
        merged = functools.reduce(lambda x, y: x.merge(y), (results[i] for i in range(len(shards))))
        workers = []
        for i, info in enumerate(self.info):
            dev = provider.get(i, "")
            if info["gpus"]:
                dev += f" (GPU {','.join(info['gpus'])})"
            workers.append({"worker": i, "node": info["node"], "host": info["host"], "device": dev,
                            "images": done_by[i][0], "shards": done_by[i][1]})
        block = {"engine": "ray", "ray_version": ray.__version__, "address": self.address, "shards": len(shards),
                 "retried_shards": len(tries), "workers": workers}
        return merged, block

