"""Run mutmut's mutants in long-lived pytest processes instead of one fresh process per mutant.

    python tests/mutation_in_process.py [--jobs N] [GLOB ...]      (after `mutmut run` made mutants/)

mutmut 3 (``make mutation``) checks every mutant in a new worker process. With JAX that costs a fresh import of
JAX, hcjax and the tests per mutant (about 6 s a mutant on this project's 2-core machine: 7 hours for the
whole set). This runner uses mutmut's own mutants, trampolines and per-function test selection, but keeps
``--jobs`` pytest processes alive and switches the active mutant between checks:

* the active mutant is chosen at call time by mutmut's trampoline (``set_mutant_under_test``), so switching it
  needs no re-import;
* JAX's traced programs are cleared between mutants (``jax.clear_caches()``, plus every ``functools`` cache in
  ``hcjax``), so a jitted caller re-traces the mutated code instead of reusing the previous mutant's trace;
* each selected test is run with ``nextitem=None``: every fixture, session fixtures included, is torn down and
  set up again, so no fixture value outlives a mutant;
* a mutant's tests stop at the first failure (killed); a mutant that exceeds its time limit (mutmut's rule:
  (clean time of its tests + ``timeout_constant``) x ``timeout_multiplier``) is a timeout; a worker that stops
  answering for longer than that is killed and restarted after the mutant it was on, which is a timeout;
* every ``--clean-every`` mutants the worker runs the tests of its last killed mutant with no
  mutant active: if they fail, some earlier mutant leaked state, and the worker stops with an error instead of
  reporting false kills.

What it cannot see that mutmut's fresh process does: a mutant that only acts at import time (a default argument
evaluated when a module is imported). So this runner's kills are kills, but its survivors should be re-checked
by mutmut itself: the runner writes them to ``mutants/in_process_survivors.txt`` and the command is
``mutmut run $(cat mutants/in_process_survivors.txt)``.

Results go into mutmut's own ``mutants/**/*.meta`` files (exit codes 1 killed, 0 survived, 36 timeout, 33 no
tests), each written atomically, so ``mutmut results`` and ``mutmut export-cicd-stats`` report them, and a
stopped run continues where it stopped. The raw per-mutant log (which test killed it, seconds) is
``mutants/in_process_log.jsonl``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

EXIT_CODE = {"killed": 1, "survived": 0, "timeout": 36, "no tests": 33}
ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"


def _atomic_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4))
    os.replace(tmp, path)


def _mangled(mutant_name: str) -> str:
    """``hcjax.m.x_f__mutmut_3`` -> ``hcjax.m.x_f`` (mutmut's key for the tests that call ``f``)."""
    return mutant_name.rpartition("__mutmut_")[0]


def _config() -> tuple[float, float]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return float(cfg.get("timeout_constant", 1.0)), float(cfg.get("timeout_multiplier", 15.0))


def _plan(globs: list[str], recheck: bool, test_files: list[str] | None = None, survivors: bool = False,
          sample: int | None = None) -> tuple[dict[Path, dict], list[tuple[str, list[str], float]]]:
    """Mutants to check: (name, its tests fastest first, wall-clock limit in s); meta files by path.

    With ``test_files``, every mutant runs all tests of those files instead of mutmut's selection. With
    ``sample``, each source file contributes a uniform random sample of that many of its mutants matching
    ``globs`` (drawn from all of them, checked or not, so the sample's kill rate estimates the file's; fixed
    seed, so reruns draw the same sample), recorded in ``mutants/in_process_sample.json``.
    """
    import random

    sampled: dict[str, list[str]] = {}
    stats_path = MUTANTS / "mutmut-stats.json"
    if not stats_path.exists():
        sys.exit(f"error: {stats_path} is missing: run `mutmut run` (or `make mutation`) once first")
    stats = json.loads(stats_path.read_text())
    tests_by, duration = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    constant, multiplier = _config()
    metas, todo = {}, []
    for meta_path in sorted(MUTANTS.rglob("*.py.meta")):
        meta = json.loads(meta_path.read_text())
        metas[meta_path] = meta
        names = [n for n in meta["exit_code_by_key"] if not globs or any(fnmatch.fnmatch(n, g) for g in globs)]
        if sample is not None and len(names) > sample:
            names = sorted(random.Random(f"hcjax-mutation-{meta_path.name}").sample(sorted(names), sample))
            sampled[str(meta_path.relative_to(MUTANTS))[: -len(".meta")]] = names
        for name in names:
            code = meta["exit_code_by_key"][name]
            if survivors and test_files and code not in (0, 33):
                continue  # new test files against the survivors only
            if code is not None and not recheck and not (survivors and code in (0, 33)):
                continue
            if test_files:
                tests, estimate = list(test_files), 60.0
            else:
                tests = sorted(tests_by.get(_mangled(name), []), key=lambda t: duration.get(t, 0.0))
                estimate = sum(duration.get(t, 0.0) for t in tests)
            todo.append((name, tests, (estimate + constant) * multiplier))
    if sampled:
        _atomic_json(MUTANTS / "in_process_sample.json", sampled)
    return metas, todo


def _record(metas: dict[Path, dict], results: dict[str, str]) -> None:
    """Write exit codes into mutmut's meta files (atomically)."""
    for meta_path, meta in metas.items():
        codes = meta["exit_code_by_key"]
        changed = False
        for name in codes:
            if name in results:
                codes[name] = EXIT_CODE[results[name]]
                changed = True
        if changed:
            _atomic_json(meta_path, meta)


def report() -> str:
    """Per source file: mutants, results, and the detected share (killed + timeout over checked) as a table.

    For a file checked by sample (``mutants/in_process_sample.json``), the share is over the sample's members.
    """
    sample_path = MUTANTS / "in_process_sample.json"
    sample = json.loads(sample_path.read_text()) if sample_path.exists() else {}
    status = {v: k for k, v in EXIT_CODE.items()}
    rows = ["| file | mutants | checked | killed | timeout | survived | no tests | detected |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for meta_path in sorted(MUTANTS.rglob("*.py.meta")):
        codes = json.loads(meta_path.read_text())["exit_code_by_key"]
        if not codes:
            continue
        path = str(meta_path.relative_to(MUTANTS))[: -len(".meta")]
        names = sample.get(path, list(codes))
        counts = {s: sum(1 for n in names if status.get(codes[n]) == s) for s in EXIT_CODE}
        checked = sum(counts.values())
        share = f"{(counts['killed'] + counts['timeout']) / checked:.1%}" if checked else "-"
        scope = f"{checked} (sample of {len(names)})" if path in sample else str(checked)
        rows.append(f"| {path} | {len(codes)} | {scope} | {counts['killed']} | {counts['timeout']} | "
                    f"{counts['survived']} | {counts['no tests']} | {share} |")
    return "\n".join(rows)


def _drive(args: argparse.Namespace) -> None:
    if args.tests:
        for path in args.tests:  # the files under test live in the repository; the workers run in mutants/
            if not (ROOT / path).is_file():
                sys.exit(f"error: argument --tests: {path!r} is not a test file under {ROOT}")
            (MUTANTS / path).parent.mkdir(parents=True, exist_ok=True)
            (MUTANTS / path).write_bytes((ROOT / path).read_bytes())
    metas, todo = _plan(args.globs, args.recheck or bool(args.tests and not args.survivors), args.tests,
                        args.survivors, args.sample)
    # runs may go side by side (a --tests check beside a full run, two runs over disjoint globs): own folders
    tag = f"_{os.getpid()}"
    log_path = MUTANTS / ("in_process_tests_log.jsonl" if args.tests else "in_process_log.jsonl")
    results = {name: "no tests" for name, tests, _ in todo if not tests}
    todo = [m for m in todo if m[1]]
    print(f"{len(todo)} mutants to check with {args.jobs} worker(s); {len(results)} have no tests", flush=True)
    todo.sort(key=lambda m: m[2])
    shards = [todo[k :: args.jobs] for k in range(args.jobs)]
    workdir = MUTANTS / f"in_process{tag}"
    workdir.mkdir(exist_ok=True)
    workers: dict[int, dict] = {}

    def start(k: int, remaining: list) -> None:
        spec = workdir / f"shard{k}.json"
        out = workdir / f"shard{k}.jsonl"
        _atomic_json(spec, {"mutants": remaining, "clean_every": args.clean_every})
        out.write_text("")
        env = dict(os.environ, MUTANT_UNDER_TEST="", PYTHONPATH=str(MUTANTS))
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec), str(out)],
            cwd=MUTANTS, env=env, stdout=open(workdir / f"shard{k}.out", "a"), stderr=subprocess.STDOUT,
        )
        workers[k] = {"proc": proc, "out": out, "remaining": list(remaining), "done": 0, "last": time.monotonic()}

    for k, shard in enumerate(shards):
        if shard:
            start(k, shard)
    t0, n_done, last_save = time.monotonic(), 0, time.monotonic()
    with open(log_path, "a") as log:
        while workers:
            time.sleep(1.0)
            for k in list(workers):
                w = workers[k]
                text = w["out"].read_text()
                lines = text.splitlines()
                if text and not text.endswith("\n"):
                    lines = lines[:-1]  # a line being written: read it next time
                for line in lines[w["done"]:]:
                    rec = json.loads(line)
                    if rec.get("error"):
                        for other in workers.values():
                            other["proc"].kill()
                        if not args.tests:
                            _record(metas, results)
                        sys.exit(f"worker {k} stopped: {rec['error']}")
                    results[rec["name"]] = rec["status"]
                    log.write(line + "\n")
                    n_done += 1
                    w["last"] = time.monotonic()
                w["done"] = len(lines)
                remaining = w["remaining"][w["done"]:]
                if w["proc"].poll() is not None:
                    del workers[k]
                    if remaining:  # died on a mutant (a crash, e.g. a segfault in XLA): that mutant is detected
                        name = remaining[0][0]
                        results[name] = "timeout"
                        log.write(json.dumps({"name": name, "status": "timeout", "why": "worker died"}) + "\n")
                        n_done += 1
                        if remaining[1:]:
                            start(k, remaining[1:])
                    continue
                if remaining and time.monotonic() - w["last"] > remaining[0][2] + args.grace:
                    w["proc"].kill()  # seen as dead on the next pass, after its last lines are read
                    w["proc"].wait()
            log.flush()
            if time.monotonic() - last_save > 30 and not args.tests:
                _record(metas, results)
                last_save = time.monotonic()
                rate = n_done / max(time.monotonic() - t0, 1e-9) * 60
                print(f"{n_done}/{len(todo)} checked, {rate:.1f} per minute", flush=True)
    if args.tests:  # not mutmut's test selection: report; record kills only if asked
        for name in sorted(results):
            print(f"{results[name]:9s} {name}")
        if args.record_kills:
            _record(metas, {n: s for n, s in results.items() if s in ("killed", "timeout")})
        return
    _record(metas, results)
    survivors = sorted(n for n, s in results.items() if s == "survived")
    (MUTANTS / "in_process_survivors.txt").write_text("".join(n + "\n" for n in survivors))
    counts = {s: sum(1 for v in results.values() if v == s) for s in EXIT_CODE}
    minutes = (time.monotonic() - t0) / 60
    print(f"done in {minutes:.1f} min: {counts}; survivors in mutants/in_process_survivors.txt", flush=True)


class _Timeout(BaseException):
    pass


class _Plugin:
    """Replaces pytest's test loop: for each mutant, its selected tests with that mutant active."""

    def __init__(self, spec: dict, out_path: str) -> None:
        self.mutants = spec["mutants"]
        self.clean_every = spec["clean_every"]
        self.out = open(out_path, "a")
        self.timed_out = False

    def _emit(self, rec: dict) -> None:
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()

    def _run(self, items: dict, tests: list[str]) -> str | None:
        """Runs tests in order; returns the first failing test's id, or None."""
        from _pytest.runner import runtestprotocol

        for nodeid in tests:
            reports = runtestprotocol(items[nodeid], nextitem=None, log=False)
            if any(r.failed for r in reports):
                if os.environ.get("HCJAX_MUTATION_DEBUG"):
                    print(nodeid, [str(r.longrepr)[-2000:] for r in reports if r.failed], flush=True)
                return nodeid
        return None

    def pytest_runtestloop(self, session) -> bool:
        import jax
        from mutmut.mutation.trampoline import set_mutant_under_test

        import hcjax

        if not Path(hcjax.__file__).resolve().is_relative_to(MUTANTS):
            self._emit({"error": f"hcjax imported from {hcjax.__file__}, not from {MUTANTS}"})
            return True
        items = {item.nodeid: item for item in session.items}
        by_file: dict[str, list[str]] = {}
        for nodeid in items:
            by_file.setdefault(nodeid.split("::")[0], []).append(nodeid)
        self.mutants = [(name, [n for t in tests for n in (by_file.get(t, []) if "::" not in t else [t])] or tests,
                         limit) for name, tests, limit in self.mutants]

        def clear() -> None:
            jax.clear_caches()
            for name, module in list(sys.modules.items()):
                if name.startswith("hcjax") and module is not None:
                    for obj in list(vars(module).values()):
                        if callable(getattr(obj, "cache_clear", None)):
                            obj.cache_clear()

        def on_alarm(signum, frame):
            self.timed_out = True
            raise _Timeout()

        signal.signal(signal.SIGALRM, on_alarm)
        last_killed: list[str] | None = None
        for i, (name, tests, limit) in enumerate(self.mutants):
            missing = [t for t in tests if t not in items]
            if missing:
                self._emit({"error": f"{name}: tests not collected: {missing[:3]}"})
                return True
            if last_killed and i % self.clean_every == 0:
                set_mutant_under_test("")
                clear()
                failed = self._run(items, last_killed)
                if failed:
                    self._emit({"error": f"clean check failed ({failed}) before {name}: state leaked"})
                    return True
            set_mutant_under_test(name)
            clear()
            self.timed_out = False
            start = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                killer = self._run(items, tests)
            except _Timeout:
                killer = None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            status = "timeout" if self.timed_out else ("killed" if killer else "survived")
            if status == "killed":
                last_killed = [killer]
            self._emit({"name": name, "status": status, "by": killer, "s": round(time.monotonic() - start, 2)})
        set_mutant_under_test("")
        return True


def _work(spec_path: str, out_path: str) -> int:
    import pytest

    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, str(MUTANTS))
    nodeids = sorted({t for _, tests, _ in spec["mutants"] for t in tests})
    args = ["--rootdir=.", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--tb=no", *nodeids]
    return int(pytest.main(args, plugins=[_Plugin(spec, out_path)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("globs", nargs="*", help="mutant name patterns (fnmatch), e.g. 'hcjax.theory.*'")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--recheck", action="store_true", help="also check mutants that already have a result")
    parser.add_argument("--survivors", action="store_true",
                        help="also re-check mutants that survived or had no tests (after new tests were added)")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="check a fixed random sample of N mutants per source file (for files too slow to run whole)")
    parser.add_argument("--clean-every", type=int, default=40, help="clean check interval in mutants (default 40)")
    parser.add_argument("--grace", type=float, default=120.0, help="extra seconds before a silent worker is killed")
    parser.add_argument("--tests", action="append", metavar="FILE",
                        help="run this test file (repeatable) for every mutant instead of mutmut's selection; "
                             "report, record nothing")
    parser.add_argument("--record-kills", action="store_true",
                        help="with --tests: record the mutants these files kill as killed (survivors keep their result)")
    parser.add_argument("--report", action="store_true", help="print the per-file results table and exit")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.exit(_work(*args.worker))
    if args.report:
        print(report())
        return
    if args.jobs < 1:
        parser.error(f"argument --jobs: expected a positive integer, got {args.jobs}")
    if args.record_kills and not args.tests:
        parser.error("argument --record-kills: only with --tests")
    if args.sample is not None and args.sample < 1:
        parser.error(f"argument --sample: expected a positive integer, got {args.sample}")
    if args.clean_every < 1:
        parser.error(f"argument --clean-every: expected a positive integer, got {args.clean_every}")
    _drive(args)


if __name__ == "__main__":
    main()
