"""Run panoptica (BrainLesion/panoptica, Kofler et al. 2023) on label maps saved by segbalance; JSON out.

Runs in its own virtual environment (panoptica pins numpy<2.3 and cc3d<4, which segbalance's does not
allow): ``python -m venv benchmarks/.venv-panoptica && benchmarks/.venv-panoptica/bin/pip install panoptica``.
Called as a subprocess by ``benchmarks/evaluation.py --lesions`` and ``tests/test_evaluation_lesions.py``:

    python _panoptica_runner.py IN.npz OUT.json

``IN.npz`` holds ``pred``, ``gt`` (label maps), ``spacing``, ``labels``, ``repeats`` and ``metrics``
(panoptica instance metric names, e.g. ``["IOU"]``). Each label is evaluated as a binary semantic pair:
connected components (panoptica's default cc3d backend), ``NaiveThresholdMatching`` (IoU >= 0.5,
one-to-one).
"""

import json
import sys
import time

import numpy as np


def main(src: str, dst: str) -> None:
    import panoptica
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )
    from panoptica.metrics import Metric

    d = np.load(src)
    pred, gt, spacing = d["pred"], d["gt"], tuple(float(s) for s in d["spacing"])
    threshold = float(d["iou_threshold"]) if "iou_threshold" in d else 0.5
    metrics = [getattr(Metric, m) for m in d["metrics"]]
    ev = Panoptica_Evaluator(expected_input=InputType.SEMANTIC,
                             instance_approximator=ConnectedComponentsInstanceApproximator(),
                             instance_matcher=NaiveThresholdMatching(matching_threshold=threshold),
                             instance_metrics=metrics, global_metrics=[Metric.DSC])
    out = {"panoptica": getattr(panoptica, "__version__", None), "numpy": np.__version__, "labels": {}}
    try:
        from importlib.metadata import version

        out["panoptica"] = version("panoptica")
        out["cc3d"] = version("connected-components-3d")
    except Exception:
        pass
    for label in (int(v) for v in d["labels"]):
        p, g = (pred == label).astype(np.uint8), (gt == label).astype(np.uint8)
        times, res = [], None
        for _ in range(int(d["repeats"])):
            t0 = time.perf_counter()
            res = list(ev.evaluate(p, g, voxelspacing=spacing, verbose=False).values())[0]
            times.append(time.perf_counter() - t0)
        entry = {k: float(getattr(res, k)) for k in ("tp", "fp", "fn", "pq", "sq", "rq", "prec", "rec")}
        entry["n_ref"], entry["n_pred"] = int(res.n_ref_instances), int(res.n_pred_instances)
        entry["recall_by_volume"] = res.recall_by_volume([100.0, 1000.0])
        entry["seconds"] = times
        out["labels"][str(label)] = entry
    with open(dst, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # panoptica prints a citation banner
        main(sys.argv[1], sys.argv[2])
