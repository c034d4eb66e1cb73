"""Fine-tune jobs of the service: ``os2d finetune`` on the stored training photos, in a child process.

One job at a time. A job writes ``input/boxes.csv`` and ``input/classes.csv`` (the training photos and the
gallery's pictures of their classes) in its run folder and runs ``python -m os2d finetune ... --output-dir
<run folder>/run --quiet`` as a child process (its output in ``output.txt``), so training never blocks the
inference worker and a crash of the trainer cannot take the service down. Progress is read from the run's
training log (one record per step); when the child ends, its held-out evaluations before and after become the
job's result. A job whose service stopped is ``interrupted`` and can be resumed (the CLI's ``--resume``), and
a running job can be cancelled (the child is terminated; it can be resumed too).

The child dies with the service (``PR_SET_PDEATHSIG`` on Linux; :meth:`FinetuneRunner.close` terminates it
otherwise).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from os2d.apps.service.training import Job, TrainingStore, iso

logger = logging.getLogger(__name__)

MIN_STEPS, MAX_STEPS = 1, 5000
OUTPUT_TAIL = 2000  # characters of the child's output kept as a failed job's error


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _Running:
    job_id: int
    proc: subprocess.Popen[bytes]
    cancelled: bool = False
    watcher: threading.Thread | None = None


class FinetuneRunner:
    """Starts, watches, cancels and resumes fine-tune jobs; their state lives in :class:`TrainingStore`."""

    def __init__(self, training: TrainingStore, *, torch_threads: int | None = None) -> None:
        """``torch_threads``: threads of the child (default: half the CPU cores)."""
        self.training = training
        self.torch_threads = torch_threads
        self._lock = threading.Lock()
        self._running: _Running | None = None

    # ------------------------------------------------------------------------------------ control

    def start(self, steps: int, base_weights: str, class_images: dict[str, list[Path]]) -> Job:
        """A new job on the training photos stored now; ``ValueError`` for what the user must fix first,
        ``RuntimeError`` when a job is already running."""
        if not MIN_STEPS <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}, got {steps}")
        summary = self.training.summary()
        if summary["num_photos"] < 2:
            raise ValueError(f"{summary['num_photos']} training photo(s) with boxes: a fine-tune needs at least 2 (one "
                             "to train on, one held out to check the result), better 10 or more")
        with self._lock:
            if self._running is not None:
                raise RuntimeError(f"fine-tune job {self._running.job_id} is running; wait for it or cancel it")
            job = self.training.create_job(steps, base_weights, summary["num_photos"], summary["num_boxes"])
            try:
                boxes, classes, _, _ = self.training.write_dataset(job.run_dir / "input", class_images)
                self._launch(job, boxes, classes, resume=False)
            except BaseException as e:
                self.training.update_job(job.id, state="failed", ended=time.time(), error=str(e))
                raise
        return self.training.job(job.id) or job

    def resume(self, job_id: int) -> Job:
        """Continue an interrupted, cancelled or failed job from its last checkpoint."""
        job = self._job(job_id)
        if job.state not in ("interrupted", "cancelled", "failed"):
            raise ValueError(f"job {job_id} is {job.state}; only an interrupted, cancelled or failed job resumes")
        if not any((job.run_dir / "run" / "checkpoints").glob("step_*.pt")):
            raise ValueError(f"job {job_id} stopped before its first checkpoint: start a new fine-tune instead")
        with self._lock:
            if self._running is not None:
                raise RuntimeError(f"fine-tune job {self._running.job_id} is running; wait for it or cancel it")
            self.training.update_job(job_id, state="running", ended=None, error=None, started=time.time())
            try:
                self._launch(job, job.run_dir / "input" / "boxes.csv", job.run_dir / "input" / "classes.csv",
                             resume=True)
            except BaseException as e:
                self.training.update_job(job_id, state="failed", ended=time.time(), error=str(e))
                raise
        return self._job(job_id)

    def cancel(self, job_id: int) -> Job:
        with self._lock:
            running = self._running
            if running is None or running.job_id != job_id:
                raise ValueError(f"job {job_id} is not running")
            running.cancelled = True
            running.proc.terminate()
        if running.watcher is not None:  # it records the job as cancelled
            running.watcher.join(timeout=30)
        return self._job(job_id)

    def close(self) -> None:
        """Stop a running child (the job becomes ``interrupted``, resumable)."""
        with self._lock:
            running = self._running
        if running is not None:
            running.proc.terminate()
            try:
                running.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                running.proc.kill()
                running.proc.wait()
            if running.watcher is not None:  # it records the job as interrupted
                running.watcher.join(timeout=20)

    # ------------------------------------------------------------------------------------- status

    def record(self, job: Job) -> dict[str, Any]:
        """The job as JSON, with its progress while it runs."""
        out: dict[str, Any] = {
            "id": job.id, "state": job.state, "steps": job.steps, "base_weights": job.base_weights,
            "photos": job.num_photos, "boxes": job.num_boxes, "created": iso(job.created),
            "started": iso(job.started), "ended": iso(job.ended), "result": job.result, "error": job.error}
        step, phase = self.progress(job)
        out["step"], out["phase"] = step, phase
        return out

    @staticmethod
    def progress(job: Job) -> tuple[int, str]:
        """The last step done and the phase: ``starting``, ``evaluating`` (held-out photos, before the first or
        after the last step), ``training`` or ``finished``."""
        from os2d.train.run_log import JSONL_NAME, read_log

        log = job.run_dir / "run" / JSONL_NAME
        try:
            records = read_log(log) if log.is_file() else []
        except (OSError, ValueError):
            records = []
        steps = [int(r["step"]) for r in records if r.get("kind") == "train" and "step" in r]
        evals = [r for r in records if r.get("kind") == "eval"]
        step = max(steps, default=0)
        if job.state != "running":
            return step, "finished"
        if not records and not (job.run_dir / "run" / "config.yaml").is_file():
            return step, "starting"
        if step >= job.steps or (not steps and not evals):
            return step, "evaluating"
        return step, "training"

    # ------------------------------------------------------------------------------------ internals

    def _job(self, job_id: int) -> Job:
        job = self.training.job(job_id)
        if job is None:
            raise KeyError(f"no fine-tune job {job_id}")
        return job

    def _launch(self, job: Job, boxes: Path, classes: Path, *, resume: bool) -> None:
        cmd = [sys.executable, "-m", "os2d", "finetune", "--boxes", str(boxes), "--classes", str(classes),
               "--output-dir", str(job.run_dir / "run"), "--weights", job.base_weights,
               "--steps", str(job.steps), "--quiet"] + (["--resume"] if resume else [])
        env = dict(os.environ)
        # half the cores by default: the service's own detections share the CPU, and oversubscribed OpenMP
        # threads slow both down several times (README "Fine-tuning on your own photos")
        env["OMP_NUM_THREADS"] = str(self.torch_threads or max(1, (os.cpu_count() or 2) // 2))
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with open(job.run_dir / "output.txt", "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        running = self._running = _Running(job.id, proc)
        logger.info("fine-tune job %d started (pid %d): %s", job.id, proc.pid, " ".join(cmd))
        running.watcher = threading.Thread(target=self._watch, args=(running,), name=f"os2d-finetune-{job.id}",
                                           daemon=True)
        running.watcher.start()

    def _watch(self, running: _Running) -> None:
        rc = running.proc.wait()
        job = self._job(running.job_id)
        now = time.time()
        try:
            if running.cancelled:
                self.training.update_job(job.id, state="cancelled", ended=now)
            elif rc == 0:
                self.training.update_job(job.id, state="done", ended=now, result=job_result(job, now))
            elif rc in (-signal.SIGTERM, -signal.SIGKILL):  # the service stopped it (or someone else did)
                self.training.update_job(job.id, state="interrupted", ended=now)
            else:
                self.training.update_job(job.id, state="failed", ended=now, error=output_tail(job))
        except Exception as e:  # never leave the job "running"
            logger.exception("fine-tune job %d: recording its end failed", job.id)
            self.training.update_job(job.id, state="failed", ended=time.time(), error=f"recording the result: {e}")
        finally:
            with self._lock:
                if self._running is running:
                    self._running = None
        logger.info("fine-tune job %d ended: %s", job.id, self._job(job.id).state)


def output_tail(job: Job) -> str:
    """The end of the child's output (a failed job's error: the CLI prints one line saying what is wrong)."""
    try:
        text = (job.run_dir / "output.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "the fine-tune process failed (no output)"
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("$ ")]
    return "\n".join(lines)[-OUTPUT_TAIL:] or "the fine-tune process failed (no output)"


def job_result(job: Job, ended: float) -> dict[str, Any]:
    """Held-out mAP/recall before and after, per-class AP, minutes (of this sitting), and which weights file to
    use: ``best.pt`` when the fine-tuned model is strictly better on the held-out photos, else ``final.pt`` (and
    ``better`` false: the service refuses to switch to it unless forced)."""
    from os2d.train import checkpoint as ckpt_io
    from os2d.train.run_log import JSONL_NAME, read_log

    run = job.run_dir / "run"
    evals = [r for r in read_log(run / JSONL_NAME) if r.get("kind") == "eval" and r.get("split", "val") == "val"]
    if not evals:
        raise ValueError(f"{run}: no held-out evaluation in the training log")
    before, after = evals[0], evals[-1]

    def metrics(r: dict[str, Any]) -> dict[str, Any]:
        return {"step": r.get("step"), "mAP": r.get("mAP@0.50"), "recall": r.get("recall@0.50"),
                "ap_per_class": r.get("ap_per_class") or {}}

    better = (after.get("mAP@0.50") or 0.0) > (before.get("mAP@0.50") or 0.0) and (run / ckpt_io.BEST_MODEL).is_file()
    minutes = None if job.started is None else round((ended - job.started) / 60, 2)
    return {"before": metrics(before), "after": metrics(after), "better": better,
            "weights": str(run / (ckpt_io.BEST_MODEL if better else ckpt_io.FINAL_MODEL)),
            "final_weights": str(run / ckpt_io.FINAL_MODEL), "minutes": minutes}


__all__ = ["MAX_STEPS", "MIN_STEPS", "FinetuneRunner", "job_result", "output_tail"]
