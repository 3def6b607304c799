"""Vmapped JAX EM for M candidate GMMs against a loop of scikit-learn fits.

Both sides fit M diagonal Gaussian mixtures with J components to the same
data [N, d], each for exactly ``--iters`` EM iterations from a k-means++
seeding:

  jax:     ``hcjax.clustering.fit_gmms(x, keys[M], J, iters, init="kmeans++")``
           (one jitted, vmapped program for all M fits);
  sklearn: ``GaussianMixture(n_components=J, covariance_type="diag",
           max_iter=iters, tol=0, n_init=1, init_params="k-means++",
           reg_covar=...)`` fitted M times in a Python loop (``tol=0`` makes
           every fit run all iterations).

For each M the two are timed interleaved (median of ``--repeats``); JAX's
first call (trace + compile + run) is reported separately from its steady
call time. The mean per-sample log-likelihood of the fits on both sides is
recorded as a sanity check that both do the same work.

    python benchmarks/em_clustering.py            # M in 1,16,64
    python benchmarks/em_clustering.py --quick    # smoke test

Outputs: ``benchmarks/results/em_clustering.json`` and ``em_clustering.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fits", default="1,16,64", help="comma list of M (number of GMMs)")
    ap.add_argument("--num-points", type=int, default=4096, help="N")
    ap.add_argument("--dim", type=int, default=8, help="d")
    ap.add_argument("--components", type=int, default=8, help="J")
    ap.add_argument("--iters", type=int, default=100, help="EM iterations per fit")
    ap.add_argument("--reg-covar", type=float, default=1e-6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--wait-load", type=float, default=1.5)
    ap.add_argument("--max-wait", type=float, default=1200.0)
    ap.add_argument("--name", default="em_clustering")
    ap.add_argument("--quick", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.quick:
        args.fits, args.repeats, args.iters, args.name = "1,4", 2, 20, args.name + "_quick"
    import jax
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from hcjax import clustering, data as data_lib

    _common.disable_persistent_cache()
    gate = _common.wait_for_quiet(args.wait_load, args.max_wait) if not args.quick else {"skipped": True}
    events = _common.CompileEvents()
    x, _, _ = data_lib.clustered(args.num_points, data_dim=args.dim, num_clusters=args.components, seed=0,
                                 separation=3.0)
    x = np.asarray(x, np.float32)
    xj = jax.device_put(x)
    payload = {"benchmark": "em_clustering", "machine": _common.machine_info(), "load_gate": gate,
               "load_before": _common.load(),
               "shape": {"N": args.num_points, "d": args.dim, "J": args.components, "iters": args.iters,
                         "reg_covar": args.reg_covar, "data": "hcjax.data.clustered(separation=3.0), float32"},
               "command": "python benchmarks/em_clustering.py " + " ".join(argv or sys.argv[1:])}
    rows, results = [], []
    for m in [int(v) for v in args.fits.split(",")]:
        keys = jax.random.split(jax.random.key(0), m)

        def run_jax():
            fit = clustering.fit_gmms(xj, keys, args.components, args.iters, reg_covar=args.reg_covar,
                                      init="kmeans++", tol=0.0)
            return jax.block_until_ready(fit)

        def run_sklearn():
            lls = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for i in range(m):
                    g = GaussianMixture(n_components=args.components, covariance_type="diag", max_iter=args.iters,
                                        tol=0.0, n_init=1, init_params="k-means++", reg_covar=args.reg_covar,
                                        random_state=i).fit(x)
                    lls.append(g.score(x))
            return lls

        c0, s0 = events.snapshot()
        t = time.perf_counter()
        fit = run_jax()
        first = time.perf_counter() - t
        c1, s1 = events.snapshot()
        raw = {"jax": [], "sklearn": []}
        sk_ll = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            fit = run_jax()
            raw["jax"].append(time.perf_counter() - t)
            t = time.perf_counter()
            sk_ll = run_sklearn()
            raw["sklearn"].append(time.perf_counter() - t)
        later_compiles = events.snapshot()[0] - c1
        med = {k: _common.median(v) for k, v in raw.items()}
        res = {"M": m, "raw_seconds": raw, "seconds": med, "ratio_sklearn_over_jax": med["sklearn"] / med["jax"],
               "jax_first_call_seconds": first, "jax_compile_events_first_call": c1 - c0,
               "jax_backend_compile_seconds": s1 - s0, "jax_compile_events_later_calls": later_compiles,
               "mean_log_likelihood": {"jax": float(np.mean(np.asarray(fit.log_likelihood))),
                                       "sklearn": float(np.mean(sk_ll))},
               "iterations_run": {"jax": args.iters, "sklearn": args.iters}}
        results.append(res)
        print(f"M={m:3d}: jax {med['jax'] * 1e3:9.2f} ms  sklearn {med['sklearn'] * 1e3:9.2f} ms  "
              f"sklearn/jax = {res['ratio_sklearn_over_jax']:.2f}  (jax compile {s1 - s0:.2f}s, first call "
              f"{first:.2f}s; mean loglik jax {res['mean_log_likelihood']['jax']:.4f} sklearn "
              f"{res['mean_log_likelihood']['sklearn']:.4f})", flush=True)
        for name in ("jax", "sklearn"):
            rows.append({"M": m, "implementation": name, "seconds": med[name], "fits_per_second": m / med[name],
                         "ratio_sklearn_over_jax": res["ratio_sklearn_over_jax"],
                         "compile_seconds": res["jax_backend_compile_seconds"] if name == "jax" else ""})
    payload["results"] = results
    payload["load_after"] = _common.load()
    jpath, cpath = _common.write_outputs(args.name, payload, rows)
    print(f"wrote {jpath} and {cpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
