"""Where the runs of ``segbalance compare`` execute; no home-made scheduler.

* :func:`run_local` — one after another in this process's shell (the default), a progress bar over the runs
  (tqdm) and nnU-Net's per-epoch lines;
* :func:`run_local` with ``gpus`` — one run per GPU at a time, each with ``CUDA_VISIBLE_DEVICES`` set to its
  GPU (a thread per GPU hands out the runs; the runs themselves are nnU-Net's processes);
* :func:`run_submitit` — SLURM through submitit: one job-array element per trainer × fold; the array is
  waited for and the records collected when it ends. ``executor="local"`` drives the same code through
  submitit's ``LocalExecutor`` (the tests do).

Finished runs (a record exists) are never handed to a backend; rerunning the same command resubmits only
what is missing, and an interrupted training resumes from its last checkpoint.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path

from segbalance.compare.runs import Run, Setup, execute_run

__all__ = ["run_local", "run_submitit", "parse_gpus", "parse_time"]


def parse_gpus(text: str | None) -> list[str]:
    """``"0,1,2,3"`` → ``["0", "1", "2", "3"]``; empty or repeated ids are an error."""
    from segbalance.errors import UserError

    if not text:
        return []
    ids = [t.strip() for t in text.split(",")]
    if any(not t.isdigit() for t in ids) or len(set(ids)) != len(ids):
        raise UserError(f"--gpus {text}: expected distinct GPU indices such as 0,1,2,3")
    return ids


def parse_time(text: str) -> int:
    """SLURM's time limit in minutes: ``90``, ``1:30:00``, ``2-00:00:00``."""
    from segbalance.errors import UserError

    try:
        days, _, rest = text.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:  # MM:SS as SLURM reads it
            minutes = parts[0] + (parts[1] > 0)
        else:
            minutes = parts[0] * 60 + parts[1] + (parts[2] > 0)
        minutes += int(days) * 24 * 60 if days else 0
    except ValueError:
        raise UserError(f"--time {text}: expected minutes or [D-]HH:MM:SS") from None
    if minutes < 1:
        raise UserError(f"--time {text}: must be at least one minute")
    return minutes


def _report(result: dict, run: Run, say) -> None:
    if result.get("failed"):
        say(f"{run.trainer} fold {run.fold}: FAILED in {result['step']} (exit {result['exit_code']}); "
            f"log {result['log']}, its last lines:\n{result['log_tail']}")
    else:
        say(f"{run.trainer} fold {run.fold}: done")


def run_local(setup: Setup, runs: list[Run], gpus: list[str] | None = None, progress: bool = True,
              echo_epochs: bool = True) -> list[dict]:
    """Every run here; with ``gpus`` one at a time per GPU. Records (or failure records) in ``runs`` order."""
    from tqdm.auto import tqdm

    results: dict[Run, dict] = {}
    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not progress or not runs, file=sys.stderr)
    say = bar.write if progress else print
    if not gpus:
        for run in runs:
            bar.set_postfix_str(f"{run.trainer} fold {run.fold}")
            results[run] = execute_run(setup, run, echo=say if echo_epochs else None)
            _report(results[run], run, say)
            bar.update()
        bar.close()
        return [results[r] for r in runs]
    todo: queue.Queue = queue.Queue()
    for run in runs:
        todo.put(run)
    lock = threading.Lock()

    def worker(gpu: str) -> None:
        while True:
            try:
                run = todo.get_nowait()
            except queue.Empty:
                return
            result = execute_run(setup, run, env_overrides={"CUDA_VISIBLE_DEVICES": gpu})
            with lock:
                results[run] = result
                _report(result, run, lambda m: say(f"[GPU {gpu}] {m}"))
                bar.update()

    threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    return [results[r] for r in runs]


def run_submitit(setup: Setup, runs: list[Run], executor: str = "slurm", partition: str | None = None,
                 time_min: int = 24 * 60, gpus_per_job: int = 1, cpus_per_job: int | None = None,
                 mem_gb: float | None = None, array_parallelism: int | None = None,
                 extra: dict | None = None) -> list[dict]:
    """One submitit job-array element per run (``executor`` ``slurm``, or ``local`` for submitit's
    ``LocalExecutor``); waits for the array and returns the records (a job that died without a record,
    e.g. killed by SLURM at its time limit, becomes a failure record naming its submitit log)."""
    from segbalance.extras import require

    require("submitit", needed_for="segbalance compare --executor slurm / submitit-local")
    import submitit

    folder = Path(setup.out) / "submitit" / "%j"
    if executor == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=time_min,
                             gpus_per_node=gpus_per_job if setup.device == "cuda" else 0)
    else:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params: dict = {"timeout_min": time_min, "gpus_per_node": gpus_per_job, "nodes": 1,
                        "tasks_per_node": 1, "name": f"segbalance-compare-{setup.dataset}"}
        if partition:
            params["slurm_partition"] = partition
        if cpus_per_job:
            params["cpus_per_task"] = cpus_per_job
        if mem_gb:
            params["mem_gb"] = mem_gb
        if array_parallelism:
            params["slurm_array_parallelism"] = array_parallelism
        params.update(extra or {})
        ex.update_parameters(**params)
    if not runs:
        return []
    jobs = ex.map_array(execute_run, [setup] * len(runs), runs)
    print(f"submitted {len(jobs)} job(s) ({executor}): {', '.join(j.job_id for j in jobs[:4])}"
          f"{' …' if len(jobs) > 4 else ''}; logs in {folder.parent}", flush=True)
    results = []
    for job, run in zip(jobs, runs):
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - the job died (time limit, node failure, OOM …)
            paths = job.paths
            tail = ""
            for log in (paths.stderr, paths.stdout):
                if Path(log).is_file():
                    tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-40:])
                    break
            result = {"trainer": run.trainer, "fold": run.fold, "variant": run.cls, "failed": True,
                      "step": "job", "exit_code": None, "command": ["submitit", job.job_id],
                      "log": str(paths.stderr), "log_tail": tail, "error": f"{type(exc).__name__}: {exc}"}
        _report(result, run, print)
        results.append(result)
    return results
