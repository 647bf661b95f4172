"""
Import cost of the provider's modules, as a DAG file pays it at each parse.

For each module, N fresh Python processes each import ``airflow.sdk`` (timed: the baseline every
DAG file pays anyway) and then the module (timed: what the provider adds). Times are taken with
``time.perf_counter()`` inside the child, so process start-up is not counted. The modules take
turns, so that a change in machine load hits them alike. Reports the median of each, and of the
extra cost, against the 50 ms budget, with the load average (the figures grow with it).

Bytecode caches are used as in a deployment (an installed wheel has them), in a throw-away
``PYTHONPYCACHEPREFIX``: ``PYTHONDONTWRITEBYTECODE`` would add compiling our sources to each import.

Run: ``.venv/bin/python benchmarks/import_cost.py [--runs 15]`` (one to three minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

MODULES = (
    "airflow_provider_zuora_aqua.operators.aqua",
    "airflow_provider_zuora_aqua.sensors.aqua",
    "airflow_provider_zuora_aqua.triggers.aqua",
    "airflow_provider_zuora_aqua.hooks.aqua",
)
#: Most a provider module may add to ``import airflow.sdk``, in milliseconds.
BUDGET_MS = 50.0

CHILD = """
import importlib, json, sys, time
start = time.perf_counter()
import airflow.sdk
sdk_done = time.perf_counter()
importlib.import_module(sys.argv[1])
end = time.perf_counter()
print(json.dumps({"sdk_ms": (sdk_done - start) * 1000, "extra_ms": (end - sdk_done) * 1000}))
"""


def measure(module: str, env: dict[str, str]) -> dict[str, float]:
    """One fresh process: milliseconds for ``import airflow.sdk``, then for ``module``."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, module], env=env, check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per module (default 15)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aqua-import-cost-") as tmp:
        # A throw-away AIRFLOW_HOME: importing Airflow writes a default airflow.cfg there.
        env = {**os.environ, "AIRFLOW_HOME": tmp, "PYTHONPYCACHEPREFIX": os.path.join(tmp, "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for module in MODULES:  # warm-up: bytecode caches and airflow.cfg, not counted
            measure(module, env)
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict[str, float]]] = {module: [] for module in MODULES}
        for _ in range(args.runs):
            for module in MODULES:
                runs[module].append(measure(module, env))
        load_after = os.getloadavg()[0]
    results = {
        module: {
            "sdk_ms": statistics.median(r["sdk_ms"] for r in module_runs),
            "extra_ms": statistics.median(r["extra_ms"] for r in module_runs),
            "extra_max_ms": max(r["extra_ms"] for r in module_runs),
        }
        for module, module_runs in runs.items()
    }

    print(f"median of {args.runs} fresh processes per module; budget {BUDGET_MS:.0f} ms over `import airflow.sdk`")
    print(f"load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs")
    print(f"{'module':<45} {'airflow.sdk':>12} {'extra':>9} {'extra max':>10}  verdict")
    for module, r in results.items():
        verdict = "within budget" if r["extra_ms"] <= BUDGET_MS else "OVER budget"
        print(f"{module:<45} {r['sdk_ms']:>9.1f} ms {r['extra_ms']:>6.1f} ms {r['extra_max_ms']:>7.1f} ms  {verdict}")
    print(
        json.dumps({"runs": args.runs, "budget_ms": BUDGET_MS, "load": [load_before, load_after], "modules": results})
    )


if __name__ == "__main__":
    main()
