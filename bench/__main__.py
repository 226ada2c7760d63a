"""`python -m bench [--sizes 1000,10000,50000] [--periods N] [--quick]`: run the benchmark.

The driver starts a noida-db broker, and per fleet size: records the simulator's answers (one
subprocess), serves them (a replay subprocess) and measures (a fresh subprocess). Then a long
backfill and a profile at 10 000 pods. Results print as markdown; `--json FILE` keeps them.
Subcommands starting with `_` are the subprocess entry points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from chargeback_simulator.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 1200  # seconds; any one subprocess taking longer is a failure, not a hang


class BenchError(Exception):
    """A step of the benchmark failed; the message is one line."""


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes: expected comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 10 or s > 200_000 for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes: each size must be in 10..200000, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=_sizes, default=None,
                   help="fleet sizes in pods (default 1000,10000,50000; --quick: 1000,10000)")
    p.add_argument("--periods", type=_positive, default=None,
                   help="measured periods per size after one warm-up (default 3; --quick: 1)")
    p.add_argument("--backfill-periods", type=int, default=None,
                   help="periods of the RSS backfill (default 168; --quick: 12; 0 skips it)")
    p.add_argument("--backfill-size", type=_positive, default=10_000,
                   help="fleet size of the backfill and the profile (default 10000)")
    p.add_argument("--clusters", type=_positive, default=None,
                   help="clusters of every measured fleet (default: 2, 4, 10, or 50 above "
                        "100000 pods, by size)")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    p.add_argument("--avro-records", type=_positive, default=20_000,
                   help="records per Avro throughput sample, cycling the period's (default 20000)")
    p.add_argument("--quick", action="store_true", help="a run of about a minute")
    p.add_argument("--scale", action="store_true",
                   help="only the worker's path per fleet size, --periods periods each in one "
                        "process: CPU and wall time per period, peak RSS")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep recordings and logs here (default: a temporary directory)")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([1000, 10_000] if args.quick else [1000, 10_000, 50_000])
    args.periods = args.periods or (1 if args.quick else 3)
    if args.backfill_periods is None:
        args.backfill_periods = 12 if args.quick else 168
    if args.backfill_periods < 0:
        p.error("--backfill-periods must be >= 0")
    return args


def machine() -> dict[str, str]:
    import confluent_kafka

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    cpu = "-"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "-")
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "confluent-kafka / librdkafka": f"{version('confluent-kafka')} / {confluent_kafka.libversion()[0]}",
        "fastavro": version("fastavro"),
        "sdcclient": version("sdcclient"),
        "requests": version("requests"),
        "noida-db": version("noida-db"),
        "numpy": version("numpy"),
    }


# --- subprocesses ----------------------------------------------------------------------------

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SDC_TOKEN", "SDC_URL", "SDC_SSL_VERIFY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    return env


def _child(what: str, args: Sequence[str], out: Path) -> Any:
    """Run `python -m bench <args>` in a fresh process; return the JSON it wrote to `out`."""
    cmd = [sys.executable, "-m", "bench", *args, "--out", str(out)]
    try:
        proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=STEP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no result after {STEP_TIMEOUT}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"{what}: exit {proc.returncode}: {tail[:300]}")
    return json.loads(out.read_text(encoding="utf-8"))


@contextmanager
def replay_server(directory: Path, latency: bool = False) -> Iterator[str]:
    """The replay server for a recording, in its own process; yields its URL. With `latency`,
    answers take the time of the simulator's latency model."""
    proc = subprocess.Popen([sys.executable, "-m", "bench", "_replay", str(directory),
                             *(["--latency"] if latency else [])], env=_env(),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise BenchError(f"replay server for {directory.name} did not start")
        yield url
    finally:
        stop_process(proc, 10)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the benchmark; recordings, broker data and logs live in
    `--workdir`, or in a temporary directory removed at the end."""
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="chargeback-bench-") as tmp:
            return _run(args, Path(tmp))
    args.workdir.mkdir(parents=True, exist_ok=True)
    return _run(args, args.workdir)


def _scale(args: argparse.Namespace, work: Path, recording: Any, started: float,
           results: dict[str, Any]) -> dict[str, Any]:
    """The worker's path per fleet size, `--periods` periods in one fresh process each."""
    from bench.record import Recording
    from chargeback_simulator.localbroker import LocalBroker

    results["scale"] = []
    run_id = os.urandom(3).hex()
    with LocalBroker("noida", data_dir=work / "broker-scale",
                     log_path=work / "broker-scale.log") as broker:
        for size in args.sizes:
            directory = recording(size)
            rec = Recording.load(directory)
            with replay_server(directory) as url:
                _say(f"[{time.perf_counter() - started:6.0f}s] the worker's path, {size:,} pods, "
                     f"{args.periods} period(s)")
                out = _child(f"worker path, {size} pods",
                             ["_live", str(directory), url, broker.bootstrap,
                              f"l{size}-{run_id}", str(args.periods)], work / f"live-{size}.json")
            out.update(target_pods=size, pods=rec.pods, clusters=rec.spec["clusters"])
            results["scale"].append(out)
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    _say(f"[{results['seconds']:6.0f}s] done")
    return results


def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from chargeback_simulator.localbroker import LocalBroker

    results: dict[str, Any] = {"machine": machine(), "sizes": [],
                               "arguments": {"sizes": args.sizes, "periods": args.periods,
                                             "backfill_periods": args.backfill_periods}}
    started = time.perf_counter()
    recordings: dict[int, Path] = {}
    run_id = os.urandom(3).hex()  # topic names stay unique when --workdir is reused

    def recording(size: int) -> Path:
        from bench.record import existing

        if size not in recordings:
            directory = work / f"rec-{size}"
            if existing(size, directory, clusters=args.clusters) is not None:
                _say(f"[{time.perf_counter() - started:6.0f}s] reusing the recording for {size:,} pods")
                recordings[size] = directory
                return directory
            _say(f"[{time.perf_counter() - started:6.0f}s] recording the simulator for {size:,} pods")
            _child(f"recording {size} pods",
                   ["_record", str(size), str(directory),
                    *(["--clusters", str(args.clusters)] if args.clusters else [])],
                   work / f"record-{size}.json")
            recordings[size] = directory
        return recordings[size]

    if args.scale:
        return _scale(args, work, recording, started, results)

    with LocalBroker("noida", data_dir=work / "broker", log_path=work / "broker.log") as broker:
        for size in args.sizes:
            directory = recording(size)
            with replay_server(directory) as url:
                _say(f"[{time.perf_counter() - started:6.0f}s] measuring {size:,} pods, "
                     f"{args.periods} period(s)")
                results["sizes"].append(_child(
                    f"measuring {size} pods",
                    ["_measure", str(directory), url, broker.bootstrap, f"m{size}-{run_id}",
                     str(args.periods), "--avro-records", str(args.avro_records)],
                    work / f"measure-{size}.json"))
            with replay_server(directory, latency=True) as url:
                _say(f"[{time.perf_counter() - started:6.0f}s] wall time against the slowest "
                     f"query, {size:,} pods")
                results["sizes"][-1]["wall"] = _child(
                    f"wall time of {size} pods",
                    ["_wall", str(directory), url, broker.bootstrap, f"w{size}-{run_id}",
                     str(args.periods)], work / f"wall-{size}.json")
        results["shapes"] = shapes(min(args.sizes), work, started)
        if not args.no_profile:
            directory = recording(args.backfill_size)
            with replay_server(directory) as url:
                _say(f"[{time.perf_counter() - started:6.0f}s] profiling {args.backfill_size:,} pods")
                results["profile"] = _child(
                    "profile", ["_profile", str(directory), url, broker.bootstrap, f"prof-{run_id}"],
                    work / "profile.json")["text"]
    if args.backfill_periods:
        directory = recording(args.backfill_size)
        # A broker of its own: the backfill's data would slow the measurements' broker down.
        with LocalBroker("noida", data_dir=work / "broker-backfill",
                         log_path=work / "broker-backfill.log") as broker, \
                replay_server(directory) as url:
            _say(f"[{time.perf_counter() - started:6.0f}s] backfill RSS: 1 period, then "
                 f"{args.backfill_periods} periods of {args.backfill_size:,} pods")
            one = _child("backfill (1 period)",
                         ["_backfill", str(directory), url, broker.bootstrap, f"b1-{run_id}", "1"],
                         work / "backfill-1.json")
            many = _child(f"backfill ({args.backfill_periods} periods)",
                          ["_backfill", str(directory), url, broker.bootstrap, f"bn-{run_id}",
                           str(args.backfill_periods)], work / "backfill-n.json")
            results["backfill"] = {"target_pods": args.backfill_size, "one": one, "many": many}
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    _say(f"[{results['seconds']:6.0f}s] done")
    return results


SHAPES = ((1, 60), (4, 60), (1, 10))  # (max replicas, step seconds): more pods, finer samples


def shapes(size: int, work: Path, started: float) -> list[dict[str, Any]]:
    """Answer size of the same workloads with more pods and with 6× the samples."""
    from bench.record import existing

    out = []
    for replicas, step in SHAPES:
        directory = work / f"shape-{size}-r{replicas}-s{step}"
        rec = existing(size, directory, max_replicas=replicas, step=step)
        if rec is None:
            _say(f"[{time.perf_counter() - started:6.0f}s] recording {size:,} pods' workloads with "
                 f"up to {replicas} replica(s) at {step}s")
            out.append(_child(f"recording shape r{replicas} s{step}",
                              ["_record", str(size), str(directory), "--replicas", str(replicas),
                               "--step", str(step)], work / f"shape-r{replicas}-s{step}.json"))
        else:
            from dataclasses import asdict

            out.append(asdict(rec))
    return out


# --- entry points ----------------------------------------------------------------------------

def _write(out: Path, value: Any) -> None:
    out.write_text(json.dumps(value), encoding="utf-8")


def _internal(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("_record")
    r.add_argument("size", type=int)
    r.add_argument("dir", type=Path)
    r.add_argument("--replicas", type=int, default=1)
    r.add_argument("--step", type=int, default=60)
    r.add_argument("--clusters", type=int, default=None)
    s = sub.add_parser("_replay")
    s.add_argument("dir", type=Path)
    s.add_argument("--latency", action="store_true")
    for name in ("_measure", "_backfill", "_profile", "_wall", "_live"):
        m = sub.add_parser(name)
        m.add_argument("dir", type=Path)
        m.add_argument("url")
        m.add_argument("bootstrap")
        m.add_argument("tag")
        if name != "_profile":
            m.add_argument("periods", type=int)
        if name == "_measure":
            m.add_argument("--avro-records", type=int, default=20_000)
    for q in sub.choices.values():
        if q.prog.split()[-1] != "_replay":
            q.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    from exporter.logs import setup

    setup("WARNING", "text")
    if a.cmd == "_record":
        from dataclasses import asdict

        from bench.record import record

        _write(a.out, asdict(record(a.size, a.dir, max_replicas=a.replicas, step=a.step,
                                         clusters=a.clusters)))
    elif a.cmd == "_replay":
        from bench.replay import serve
        from chargeback_simulator.server import Latency

        serve(a.dir, Latency() if a.latency else None)
    elif a.cmd == "_measure":
        from bench.measure import measure

        _write(a.out, measure(a.dir, a.url, a.bootstrap, a.tag, a.periods,
                              avro_records=a.avro_records))
    elif a.cmd == "_wall":
        from bench.wall import wall

        _write(a.out, wall(a.dir, a.url, a.bootstrap, a.tag, a.periods))
    elif a.cmd == "_live":
        from bench.live import live

        _write(a.out, live(a.dir, a.url, a.bootstrap, a.tag, a.periods))
    elif a.cmd == "_backfill":
        from bench.backfill import backfill

        _write(a.out, backfill(a.dir, a.url, a.bootstrap, a.tag, a.periods))
    else:
        from bench.profile import profile

        _write(a.out, {"text": profile(a.dir, a.url, a.bootstrap, a.tag)})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("SDC_TOKEN", "SDC_URL", "SDC_SSL_VERIFY"):
        os.environ.pop(name, None)  # sdcclient would let them override our URL and token
    if argv and argv[0].startswith("_"):
        return _internal(argv)
    args = parse_args(argv)
    from bench.report import render

    try:
        results = run(args)
    except BenchError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    sys.stdout.write(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
