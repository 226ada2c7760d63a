"""Markdown tables and target verdicts from the driver's results."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from typing import Any

OWN_RATIO_TARGET = 4.0  # the performance budget: own time ≤ 4× the ceilings at 10k and 50k pods
OWN_RATIO_SIZES = (10_000, 50_000)
RSS_GROWTH_TARGET = 1.20
WALL_RATIO_TARGET = 1.20  # a period's wall time ≤ its slowest Sysdig query + 20 %
RSS_TARGET_MIB = 512  # peak RSS of the worker at any fleet size (the fleet-scale issue)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def _median(runs: Sequence[dict[str, Any]], key: str, index: int | None = None) -> float:
    values = [r[key] if index is None else r[key][index] for r in runs]
    return float(statistics.median(values))


def _verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def _measured(sizes: Sequence[dict[str, Any]], part: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each fleet size that has the optional measurement `part`, with that measurement."""
    for size in sizes:
        found = size.get(part)
        if found:
            yield size, found


def summary(size: dict[str, Any]) -> dict[str, float]:
    """Per-period medians of one fleet size, and its ratio to the ceilings: the median of each
    period's own time over the JSON ceiling measured right after it plus the produce ceiling."""
    runs = size["runs"]
    produce = size["ceiling_produce"]
    ratios = [r["own"] / (r["ceiling_json"][0] + produce[0]) for r in runs]
    ratios_cpu = [r["total"][1] / (r["ceiling_json"][1] + produce[1]) for r in runs]
    return {
        "own": _median(runs, "own"), "own_cpu": _median(runs, "total", 1),
        "ceiling": size["ceiling_json"][0] + produce[0],
        "ceiling_cpu": size["ceiling_json"][1] + produce[1],
        "ratio": statistics.median(ratios), "ratio_cpu": statistics.median(ratios_cpu),
        "total": _median(runs, "total", 0),
        "records": _median(runs, "records"),
        "records_per_s": _median(runs, "records") / _median(runs, "total", 0),
    }


def fleets_table(sizes: Sequence[dict[str, Any]]) -> str:
    rows = []
    for s in sizes:
        r = s["runs"][-1]
        rows.append((f"{s['target_pods']:,}", f"{s['pods']:,}", f"{s['workloads']:,}",
                     f"{s['pod_steps']:,}", f"{s['simulator_seconds']:.1f}", r["requests"],
                     f"{r['bytes_fetched']:,}", f"{r['bytes_fetched'] / s['workloads']:.0f}",
                     f"{r['bytes_fetched'] / s['pod_steps']:.2f}"))
    return _table(("fleet", "pods/h", "workloads", "pod-steps (pods × 1 m samples)",
                   "simulator s/period", "requests", "bytes/period", "bytes/workload",
                   "bytes/pod-step"), rows)


def shapes_table(shapes: Sequence[dict[str, Any]]) -> str:
    rows = []
    for s in shapes:
        rows.append((f"{s['spec']['max_replicas']}", f"{s['step']} s", f"{s['workloads']:,}",
                     f"{s['pods']:,}", f"{s['pod_steps']:,}", f"{s['total_bytes']:,}",
                     f"{s['total_bytes'] / s['workloads']:.0f}",
                     f"{s['total_bytes'] / s['pod_steps']:.2f}"))
    return _table(("max replicas", "step", "workloads", "pods/h", "pod-steps", "bytes/period",
                   "bytes/workload", "bytes/pod-step"), rows)


def phases_table(sizes: Sequence[dict[str, Any]]) -> str:
    rows = []
    for s in sizes:
        runs = s["runs"]

        def cell(key: str, runs: Sequence[dict[str, Any]] = runs) -> str:
            return f"{_ms(_median(runs, key, 0))} / {_ms(_median(runs, key, 1))}"

        sm = summary(s)
        rows.append((f"{s['target_pods']:,}", cell("http"), cell("parse"), cell("json"),
                     cell("series"), cell("compute"), cell("encode"), cell("produce"),
                     cell("total"), _ms(sm["own"]), f"{sm['records']:,.0f}",
                     f"{sm['records_per_s']:,.0f}", f"{s['peak_rss_mib']:,.0f}"))
    return _table(("fleet", "fetch: HTTP", "parse", "of which JSON", "of which series",
                   "compute", "encode", "produce+commit", "total", "own", "records",
                   "records/s", "peak RSS MiB"), rows)


def ceilings_table(sizes: Sequence[dict[str, Any]]) -> str:
    rows = []
    for s in sizes:
        sm = summary(s)
        target = s["target_pods"] in OWN_RATIO_SIZES
        j, p = s["ceiling_json"], s["ceiling_produce"]
        g = s.get("json_without_gc", [0.0, 0.0])
        rows.append((f"{s['target_pods']:,}", f"{_ms(j[0])} / {_ms(j[1])}",
                     f"{_ms(g[0])} / {_ms(g[1])}",
                     f"{_ms(p[0])} / {_ms(p[1])}",
                     f"{_ms(sm['ceiling'])} / {_ms(sm['ceiling_cpu'])}",
                     f"{_ms(sm['own'])} / {_ms(sm['own_cpu'])}",
                     f"{sm['ratio']:.2f}× / {sm['ratio_cpu']:.2f}×",
                     (f"{_verdict(sm['ratio'] <= OWN_RATIO_TARGET)} / "
                      f"{_verdict(sm['ratio_cpu'] <= OWN_RATIO_TARGET)}") if target else "(no target)"))
    return _table(("fleet (wall / CPU ms)", "json.loads", "(json.loads, GC paused)",
                   "bare produce+commit", "ceiling sum",
                   "exporter own", "ratio", f"≤ {OWN_RATIO_TARGET:g}×"), rows)


def floor_table(sizes: Sequence[dict[str, Any]]) -> str:
    """`bench.floor` next to the exporter's own parse and compute, and the ratio the floor
    itself would score against the ceilings (with the bare producer's time added). Ratios are
    medians of each period's, paired as in `summary`."""
    rows = []
    for s, f in _measured(sizes, "floor"):
        runs = s["runs"]
        produce = s["ceiling_produce"][0]
        exporter = [r["parse"][1] + r["compute"][1] for r in runs]
        to_floor = [e / r["floor"][1] for e, r in zip(exporter, runs, strict=True)]
        floor_ratio = [(r["floor"][0] + produce) / (r["ceiling_json"][0] + produce) for r in runs]
        rows.append((f"{s['target_pods']:,}", f"{f['records']:,}",
                     f"{_ms(f['wall'])} / {_ms(f['cpu'])}", _ms(statistics.median(exporter)),
                     f"{statistics.median(to_floor):.2f}×", _ms(f["wall"] + produce),
                     _ms(s["ceiling_json"][0] + produce),
                     f"{statistics.median(floor_ratio):.2f}×",
                     "yes" if f["identical"] else "**no**"))
    return _table(("fleet", "records", "floor: JSON to bodies (wall / CPU ms)",
                   "exporter parse + compute (CPU ms)", "exporter / floor",
                   "floor + bare produce (ms)", "ceiling sum (ms)", "floor's own ratio",
                   "same bodies and hashes"), rows)


def avro_table(sizes: Sequence[dict[str, Any]]) -> str:
    rows = [(f"{s['target_pods']:,}", f"{a['records']:,.0f}",
             f"{a['generated_objects']:,.0f}", f"{a['generated_dicts']:,.0f}",
             f"{a['fastavro_naive']:,.0f}",
             f"{a['generated_objects'] / a['fastavro_naive']:.1f}×",
             f"{a.get('generated_objects_wall', 0):,.0f}", f"{a.get('decode', 0):,.0f}")
            for s, a in _measured(sizes, "avro")]
    return _table(("fleet", "records", "encoder (objects) rec/CPU-s", "encoder (dicts) rec/CPU-s",
                   "fastavro schemaless_writer rec/CPU-s", "ratio", "encoder rec/s (wall)",
                   "consumer decode rec/CPU-s"), rows)


def consumer_table(sizes: Sequence[dict[str, Any]]) -> str:
    rows = [(f"{s['target_pods']:,}", f"{c['messages']:,.0f}",
             f"{c['read_topic_per_s']:,.0f}", f"{c['bare_per_s']:,.0f}",
             f"{c['read_topic_per_s'] / c['bare_per_s']:.2f}" if c["bare_per_s"] else "-")
            for s, c in _measured(sizes, "consumer")]
    return _table(("fleet", "messages", "read_topic msg/s", "bare consume() msg/s",
                   "read_topic / bare"), rows)


def backfill_table(one: dict[str, Any], many: dict[str, Any], target_pods: int) -> str:
    growth = many["peak_rss_mib"] / one["peak_rss_mib"]
    rss = many["rss_after_period_mib"]
    marks = sorted({0, min(len(rss) - 1, 23), len(rss) // 2, len(rss) - 1})
    curve = ", ".join(f"{i + 1}: {rss[i]:.0f}" for i in marks)
    rows = [(f"{target_pods:,}", f"{one['peak_rss_mib']:.0f}", many["periods"],
             f"{many['peak_rss_mib']:.0f}", f"{growth:.2f}×", curve,
             f"{many['seconds'] / many['periods']:.2f}",
             _verdict(growth <= RSS_GROWTH_TARGET))]
    return _table(("fleet", "peak RSS, 1 period (MiB)", "periods", "peak RSS, backfill (MiB)",
                   "growth", "RSS after period n (MiB)", "s/period",
                   f"≤ {RSS_GROWTH_TARGET:.2f}×"), rows)


def wall_table(sizes: Sequence[dict[str, Any]]) -> str:
    """Per fleet, the period's wall time against its slowest query under Sysdig's latency: the
    source's first period (its pre-count first) and the later ones (groups from the previous
    counts), apart."""
    rows = []
    for s, w in _measured(sizes, "wall"):
        for first, which in ((True, "first"), (False, "later")):
            runs = [r for r in w["runs"] if r.get("first", False) == first]
            if not runs:
                continue
            ratio = _median(runs, "ratio")
            rows.append((f"{s['target_pods']:,}", f"{which} ({len(runs)})",
                         f"{w['concurrency']} / {w['prefetch']}",
                         f"{_median(runs, 'queries'):.0f}", _ms(_median(runs, "slowest_query")),
                         _ms(_median(runs, "period_wall")),
                         _ms(_median(runs, "after_last_answer")), _ms(_median(runs, "cpu")),
                         f"{ratio:.2f}", _verdict(ratio <= WALL_RATIO_TARGET)))
    return _table(("fleet", "periods", "concurrency / groups ahead", "queries",
                   "slowest query (ms)", "period wall (ms)", "after the last answer (ms)",
                   "exporter CPU (ms)", "ratio", f"≤ {WALL_RATIO_TARGET:.2f}"), rows)


def scale_table(runs: Sequence[dict[str, Any]]) -> str:
    """Per fleet, the worker's path: median CPU and wall seconds per period, peak RSS, and how
    flat RSS stays from the first period to the last."""
    rows = []
    for r in runs:
        periods = r["runs"]
        rss = [p["rss_after_mib"] for p in periods]
        growth = max(rss) / rss[0] if rss else 0.0
        rows.append((f"{r['target_pods']:,}", f"{r['pods']:,}", r["clusters"], len(periods),
                     f"{r['records'] / len(periods):,.0f}",
                     f"{statistics.median(p['cpu'] for p in periods):.2f}",
                     f"{statistics.median(p['wall'] for p in periods):.2f}",
                     f"{r['peak_rss_mib']:.0f}", f"{rss[0]:.0f} / {rss[-1]:.0f}",
                     f"{growth:.2f}×",
                     _verdict(r["peak_rss_mib"] <= RSS_TARGET_MIB and growth <= RSS_GROWTH_TARGET)))
    return _table(("fleet", "pods/h", "clusters", "periods", "records/period", "CPU s/period",
                   "wall s/period", "peak RSS (MiB)", "RSS after first / last (MiB)",
                   "RSS growth", f"≤ {RSS_TARGET_MIB} MiB, ≤ {RSS_GROWTH_TARGET:.2f}×"), rows)


def render_scale(results: dict[str, Any]) -> str:
    """The `--scale` report as markdown."""
    return "\n".join([
        "## Machine\n",
        _table(("item", "value"), list(results["machine"].items())),
        "\n## Fleet scale: the worker's path (median per period)\n",
        scale_table(results["scale"]),
    ]) + "\n"


def render(results: dict[str, Any]) -> str:
    """The whole report as markdown."""
    if "scale" in results:
        return render_scale(results)
    m = results["machine"]
    sizes = results["sizes"]
    parts = [
        "## Machine\n",
        _table(("item", "value"), [(k, v) for k, v in m.items()]),
        "\n## Fleets and Sysdig bytes per period\n",
        fleets_table(sizes),
        "\nSame workloads, more pods or finer steps:\n",
        shapes_table(results.get("shapes", [])),
        "\n## Per-period phases (median; wall ms / CPU ms)\n",
        phases_table(sizes),
        "\n## Ceilings\n",
        ceilings_table(sizes),
        "\n## Floor: the same bodies from a plain loop without checks\n",
        floor_table(sizes),
        "\n## Avro encoding\n",
        avro_table(sizes),
        "\n## Consumer side\n",
        consumer_table(sizes),
        "\n## Wall time against the slowest query (Sysdig's latency model; median)\n",
        wall_table(sizes),
    ]
    bf = results.get("backfill")
    if bf:
        parts += ["\n## Backfill RSS\n", backfill_table(bf["one"], bf["many"], bf["target_pods"])]
    if results.get("profile"):
        parts += ["\n## Profile\n", "```", results["profile"].rstrip(), "```"]
    return "\n".join(parts) + "\n"
