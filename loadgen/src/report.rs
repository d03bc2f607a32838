//! `loadgen report FILE`: Markdown tables from the JSON lines of a benchmark run: loadgen's
//! (`"kind": "loadgen"`) and the pgbench ceilings scripts/bench-send records
//! (`{"kind": "pgbench", "participants", "concurrency", "tps", "latency_ms"}`).

use std::path::Path;

use serde_json::Value;

use crate::setup::BoxError;

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn fixed(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// The same chats and senders in the same deployment (a run and its pgbench ceiling).
fn same_setup(a: &Value, b: &Value) -> bool {
    a.get("participants") == b.get("participants")
        && a.get("concurrency") == b.get("concurrency")
        && a.get("deployment") == b.get("deployment")
}

/// The same set-up at the same pace (runs to pair).
fn same_shape(a: &Value, b: &Value) -> bool {
    same_setup(a, b) && paced_at(a) == paced_at(b)
}

/// The rate a paced run (`loadgen --rate`) started its sends at; None for a closed-loop run
/// (and for pgbench's lines).
fn paced_at(run: &Value) -> Option<f64> {
    f(run, "rate")
}

/// The load column: the senders, and the pace if there was one (`16 at 700/s`).
fn load(run: &Value) -> String {
    match paced_at(run) {
        Some(rate) => format!("{} at {rate}/s", run["concurrency"]),
        None => run["concurrency"].to_string(),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:+.0}%"))
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    })
}

/// The gateway's CPU time per message of a run through it, in µs: a steadier figure than the
/// latencies, which move with whatever else the machine's two cores are doing.
fn gateway_cpu_per_send_us(run: &Value) -> Option<f64> {
    let cpu_percent = run["processes"]
        .as_array()?
        .iter()
        .find(|p| s(p, "name") == "api-gateway")
        .and_then(|p| f(p, "cpu_percent"))?;
    let rate = f(run, "msgs_per_s").filter(|r| *r > 0.0)?;
    Some(cpu_percent / 100.0 * 1e6 / rate)
}

/// The tables, as text.
pub fn render(lines: &[Value]) -> String {
    let runs: Vec<&Value> = lines.iter().filter(|l| s(l, "kind") == "loadgen").collect();
    let ceilings: Vec<&Value> = lines.iter().filter(|l| s(l, "kind") == "pgbench").collect();
    let mut out = String::new();

    out.push_str("| deployment | mode | participants | concurrency (pace) | msgs/s | p50 ms | p90 ms | p99 ms | max ms | errors | pgbench tps | msgs/s ÷ tps |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for run in &runs {
        let ceiling = ceilings
            .iter()
            .find(|c| same_setup(c, run))
            .and_then(|c| f(c, "tps"));
        let rate = f(run, "msgs_per_s");
        // A paced run sends what it was told to: its rate says nothing of the ceiling.
        let ratio = match (rate, ceiling) {
            (Some(r), Some(c)) if c > 0.0 && paced_at(run).is_none() => Some(r / c),
            _ => None,
        };
        let errors = match run.get("errors_by_kind").and_then(Value::as_object) {
            Some(kinds) if !kinds.is_empty() => kinds
                .iter()
                .map(|(k, n)| format!("{n} × {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "0".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s(run, "deployment"),
            s(run, "mode"),
            run["participants"],
            load(run),
            fixed(rate, 0),
            fixed(f(run, "p50_ms"), 2),
            fixed(f(run, "p90_ms"), 2),
            fixed(f(run, "p99_ms"), 2),
            fixed(f(run, "max_ms"), 1),
            errors,
            fixed(ceiling, 0),
            fixed(ratio, 2),
        ));
    }

    if !ceilings.is_empty() {
        out.push_str("\n| pgbench ceiling: participants | concurrency | tps | mean latency ms |\n");
        out.push_str("|---|---|---|---|\n");
        for c in &ceilings {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c["participants"],
                c["concurrency"],
                fixed(f(c, "tps"), 0),
                fixed(f(c, "latency_ms"), 2),
            ));
        }
    }

    // What the gateway adds: the same sends through it and to message-manager directly. The
    // n-th direct run of a shape pairs with the n-th run through the gateway of that shape.
    // With several pairs of a shape (bench-send --rounds), their medians follow: one pair
    // swings by tens of percent on a shared machine.
    let mut overhead = String::new();
    let direct: Vec<&&Value> = runs.iter().filter(|r| s(r, "mode") == "grpc").collect();
    let mut pairs: Vec<(&Value, [Option<f64>; 4])> = Vec::new();
    for (i, grpc) in direct.iter().enumerate() {
        let nth = direct[..i].iter().filter(|r| same_shape(r, grpc)).count();
        let Some(gw) = runs
            .iter()
            .filter(|r| s(r, "mode") == "chatmessages" && same_shape(r, grpc))
            .nth(nth)
        else {
            continue;
        };
        let added = |key: &str| match (f(gw, key), f(grpc, key)) {
            (Some(a), Some(b)) if b > 0.0 => Some(100.0 * (a - b) / b),
            _ => None,
        };
        let figures = [
            added("mean_ms"),
            added("p50_ms"),
            added("p99_ms"),
            gateway_cpu_per_send_us(gw),
        ];
        pairs.push((grpc, figures));
        overhead.push_str(&format!(
            "| {} | {} | {} | {} / {} | {} / {} | {} / {} | {} | {} | {} | {} |\n",
            s(grpc, "deployment"),
            grpc["participants"],
            load(grpc),
            fixed(f(gw, "msgs_per_s"), 0),
            fixed(f(grpc, "msgs_per_s"), 0),
            fixed(f(gw, "p50_ms"), 2),
            fixed(f(grpc, "p50_ms"), 2),
            fixed(f(gw, "p99_ms"), 2),
            fixed(f(grpc, "p99_ms"), 2),
            pct(figures[0]),
            pct(figures[1]),
            pct(figures[2]),
            fixed(figures[3], 0),
        ));
    }
    let mut shapes: Vec<&Value> = Vec::new();
    for (shape, _) in &pairs {
        if !shapes.iter().any(|s| same_shape(s, shape)) {
            shapes.push(shape);
        }
    }
    for shape in shapes {
        let of_shape: Vec<&[Option<f64>; 4]> = pairs
            .iter()
            .filter(|(s, _)| same_shape(s, shape))
            .map(|(_, figures)| figures)
            .collect();
        if of_shape.len() < 2 {
            continue;
        }
        let med = |i: usize| median(of_shape.iter().filter_map(|figures| figures[i]).collect());
        overhead.push_str(&format!(
            "| {} | {} | {} | median of {} pairs | | | {} | {} | {} | {} |\n",
            s(shape, "deployment"),
            shape["participants"],
            load(shape),
            of_shape.len(),
            pct(med(0)),
            pct(med(1)),
            pct(med(2)),
            fixed(med(3), 0),
        ));
    }
    if !overhead.is_empty() {
        out.push_str("\n| gateway vs gRPC direct: deployment | participants | concurrency (pace) | msgs/s (gateway / direct) | p50 ms | p99 ms | added mean latency | added p50 | added p99 | gateway CPU µs per send |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        out.push_str(&overhead);
    }

    out.push_str(&events_table(&runs));
    out.push_str(&cpu_per_send_table(lines));

    let with_processes: Vec<&&Value> = runs
        .iter()
        .filter(|r| r["processes"].as_array().is_some_and(|p| !p.is_empty()))
        .collect();
    if !with_processes.is_empty() {
        out.push_str("\n| deployment | mode | participants | process | peak RSS MiB (VmHWM) | CPU % of a core in the window |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for run in with_processes {
            for p in run["processes"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    s(run, "deployment"),
                    s(run, "mode"),
                    run["participants"],
                    s(p, "name"),
                    fixed(f(p, "peak_rss_bytes").map(|b| b / 1048576.0), 1),
                    fixed(f(p, "cpu_percent"), 0),
                ));
            }
            out.push_str(&format!(
                "| {} | {} | {} | loadgen | | {} |\n",
                s(run, "deployment"),
                s(run, "mode"),
                run["participants"],
                fixed(f(run, "loadgen_cpu_percent"), 0),
            ));
            if let Some(busy) = f(run, "machine_busy_percent") {
                out.push_str(&format!(
                    "| {} | {} | {} | whole machine ({} CPUs) | | {busy:.0}% of all CPUs busy |\n",
                    s(run, "deployment"),
                    s(run, "mode"),
                    run["participants"],
                    run["machine_cpus"],
                ));
            }
        }
    }
    out
}

/// The event pipeline under each run: the backlog (events committed but not yet published
/// or applied) each second of the window, how long after the last send it drained, and what
/// one send put on the broker.
fn events_table(runs: &[&Value]) -> String {
    let mut rows = String::new();
    for run in runs {
        let readings: Vec<u64> = run["backlog_each_second"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        if readings.is_empty() && run.get("broker_messages_per_send").is_none() {
            continue;
        }
        let third = |i: usize| {
            readings
                .get((readings.len() * i / 3).min(readings.len().saturating_sub(1)))
                .map_or("-".into(), u64::to_string)
        };
        rows.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} |\n",
            s(run, "deployment"),
            s(run, "mode"),
            run["participants"],
            load(run),
            fixed(f(run, "msgs_per_s"), 0),
            third(0),
            third(1),
            readings.last().map_or("-".into(), u64::to_string),
            readings.iter().max().map_or("-".into(), u64::to_string),
            fixed(f(run, "drained_after_s"), 2),
            match (
                f(run, "broker_messages_per_send"),
                f(run, "broker_bytes_per_send")
            ) {
                (Some(m), Some(b)) => format!("{m:.1} / {b:.0}"),
                _ => "-".into(),
            },
        ));
    }
    if rows.is_empty() {
        return rows;
    }
    let mut out = String::from(
        "\n| deployment | mode | participants | concurrency (pace) | msgs/s | event backlog at the window's start / middle / end | its max | drained after the last send (s) | broker messages / bytes per send |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    out.push_str(&rows);
    out
}

/// The machine's CPU per send (its CPUs' busy time, as measured for pgbench's transactions,
/// and the processes' own, by program) beside pgbench's CPU per transaction: on a saturated
/// machine, throughput is the cores over the CPU one send takes, so this says where the ratio
/// to the ceiling goes.
fn cpu_per_send_table(lines: &[Value]) -> String {
    let mut rows = String::new();
    for line in lines {
        let setup = format!(
            "| {} | {} | {} | {} |",
            s(line, "deployment"),
            s(line, "mode"),
            line["participants"],
            load(line)
        );
        if s(line, "kind") == "pgbench" {
            if let Some(us) = f(line, "cpu_us_per_tx") {
                rows.push_str(&format!(
                    "| {} | pgbench | {} | {} | {} | {us:.0} | | PostgreSQL and pgbench |\n",
                    s(line, "deployment"),
                    line["participants"],
                    load(line),
                    fixed(f(line, "tps"), 0),
                ));
            }
            continue;
        }
        let Some(programs) = line["cpu_us_per_send_by_program"].as_array() else {
            continue;
        };
        let named: Vec<(String, f64)> = programs
            .iter()
            .filter_map(|p| Some((s(p, "program").to_owned(), f(p, "us")?)))
            .collect();
        if named.is_empty() {
            continue;
        }
        // Every program's, not only the ones named (older lines: the ones named).
        let all = f(line, "cpu_us_per_send_all_programs")
            .unwrap_or_else(|| named.iter().map(|(_, us)| us).sum());
        let by: Vec<String> = named
            .iter()
            .filter(|(_, us)| *us >= 1.0)
            .map(|(name, us)| format!("{name} {us:.0}"))
            .collect();
        rows.push_str(&format!(
            "{setup} {} | {} | {all:.0} | {} |\n",
            fixed(f(line, "msgs_per_s"), 0),
            fixed(f(line, "machine_cpu_us_per_send"), 0),
            by.join(", ")
        ));
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\n| CPU per send: deployment | mode | participants | concurrency (pace) | msgs/s | the machine's busy time, µs | the programs', µs | by program (µs) |\n\
         |---|---|---|---|---|---|---|---|\n{rows}"
    )
}

pub fn print(file: &Path) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    print!("{}", render(&lines));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_per_send_by_program_is_set_beside_pgbench_per_transaction() {
        let lines = vec![
            json!({"kind": "loadgen", "deployment": "split", "mode": "chatmessages", "participants": 2,
                   "concurrency": 16, "msgs_per_s": 3000.0, "processes": [],
                   "machine_cpu_us_per_send": 352.0, "cpu_us_per_send_all_programs": 334.0,
                   "cpu_us_per_send_by_program": [
                       {"program": "postgres", "us": 170.0},
                       {"program": "message-manager", "us": 160.0},
                       {"program": "kdamond.0", "us": 0.4}]}),
            json!({"kind": "pgbench", "deployment": "split", "participants": 2, "concurrency": 16,
                   "tps": 11000.0, "latency_ms": 1.4, "cpu_us_per_tx": 171}),
            // Before the breakdown existed: no row.
            json!({"kind": "pgbench", "deployment": "split", "participants": 100, "concurrency": 16,
                   "tps": 9000.0, "latency_ms": 1.7}),
        ];
        let text = render(&lines);
        assert!(
            text.contains(
                "| split | chatmessages | 2 | 16 | 3000 | 352 | 334 | postgres 170, message-manager 160 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| split | pgbench | 2 | 16 | 11000 | 171 | | PostgreSQL and pgbench |"),
            "{text}"
        );
        assert!(!text.contains("| split | pgbench | 100 |"), "{text}");
    }

    #[test]
    fn ratio_and_overhead_are_computed_from_matching_runs() {
        let lines = vec![
            json!({"kind": "pgbench", "deployment": "split", "participants": 2, "concurrency": 16, "tps": 2000.0, "latency_ms": 8.0}),
            json!({"kind": "loadgen", "deployment": "embedded", "mode": "chatmessages", "participants": 2,
                   "concurrency": 16, "msgs_per_s": 700.0, "processes": []}),
            json!({"kind": "loadgen", "deployment": "split", "mode": "chatmessages", "participants": 2,
                   "concurrency": 16, "msgs_per_s": 500.0, "p50_ms": 11.0, "p90_ms": 20.0, "p99_ms": 40.0,
                   "max_ms": 90.0, "mean_ms": 12.0, "errors_by_kind": {"HTTP 503 unavailable": 2},
                   "processes": []}),
            json!({"kind": "loadgen", "deployment": "split", "mode": "grpc", "participants": 2,
                   "concurrency": 16, "msgs_per_s": 600.0, "p50_ms": 10.0, "p90_ms": 18.0, "p99_ms": 32.0,
                   "max_ms": 80.0, "mean_ms": 10.0, "errors_by_kind": {}, "processes": []}),
        ];
        let text = render(&lines);
        // 500 / 2000 = 0.25 of the ceiling; the direct run is 600 / 2000 = 0.30.
        assert!(text.contains("| split | chatmessages | 2 | 16 | 500 | 11.00 | 20.00 | 40.00 | 90.0 | 2 × HTTP 503 unavailable | 2000 | 0.25 |"), "{text}");
        assert!(
            text.contains("| 600 | 10.00 | 18.00 | 32.00 | 80.0 | 0 | 2000 | 0.30 |"),
            "{text}"
        );
        // The PostgreSQL ceiling is no reference for the embedded default (SQLite).
        assert!(
            text.contains("| embedded | chatmessages | 2 | 16 | 700 | - | - | - | - | 0 | - | - |"),
            "{text}"
        );
        // Gateway mean 12 vs 10 ms: +20%; p50 11 vs 10: +10%; p99 40 vs 32: +25%.
        assert!(text.contains("| split | 2 | 16 | 500 / 600 | 11.00 / 10.00 | 40.00 / 32.00 | +20% | +10% | +25% | - |"), "{text}");
        assert!(!text.contains("median"), "one pair: no median row");
    }

    /// Several rounds: a row per pair (in order), then the medians of the shape's pairs; the
    /// gateway's CPU per send from its process figures.
    #[test]
    fn rounds_are_paired_in_order_and_summarised_by_their_medians() {
        let run = |mode: &str, rate: f64, mean: f64, gateway_cpu: f64| {
            json!({"kind": "loadgen", "deployment": "split", "mode": mode, "participants": 2,
                   "concurrency": 16, "msgs_per_s": rate, "p50_ms": mean, "p99_ms": mean * 3.0,
                   "mean_ms": mean, "processes": [{"name": "api-gateway", "cpu_percent": gateway_cpu}]})
        };
        let lines = vec![
            run("chatmessages", 1000.0, 11.0, 30.0),
            run("grpc", 1200.0, 10.0, 0.0),
            run("chatmessages", 1000.0, 15.0, 20.0),
            run("grpc", 1200.0, 10.0, 0.0),
            run("chatmessages", 1000.0, 10.0, 25.0),
            run("grpc", 1200.0, 10.0, 0.0),
        ];
        let text = render(&lines);
        // Pair 1: +10%, 300 µs of gateway CPU per send (30% of a core at 1,000/s).
        assert!(text.contains("| split | 2 | 16 | 1000 / 1200 | 11.00 / 10.00 | 33.00 / 30.00 | +10% | +10% | +10% | 300 |"), "{text}");
        assert!(text.contains("| +50% | +50% | +50% | 200 |"), "{text}");
        assert!(text.contains("| +0% | +0% | +0% | 250 |"), "{text}");
        // Medians of +10, +50, +0 and of 300, 200, 250.
        assert!(
            text.contains("| split | 2 | 16 | median of 3 pairs | | | +10% | +10% | +10% | 250 |"),
            "{text}"
        );
    }

    /// Paced runs pair only with paced runs of the same rate, show their pace, and have no
    /// ratio to the ceiling (they send what they are told to).
    #[test]
    fn paced_runs_pair_by_their_rate_and_have_no_ceiling_ratio() {
        let run = |mode: &str, rate: Option<f64>, mean: f64| {
            json!({"kind": "loadgen", "deployment": "split", "mode": mode, "participants": 2,
                   "concurrency": 16, "rate": rate, "msgs_per_s": 700.0, "p50_ms": mean,
                   "p99_ms": mean * 2.0, "mean_ms": mean, "processes": []})
        };
        let lines = vec![
            json!({"kind": "pgbench", "deployment": "split", "participants": 2, "concurrency": 16, "tps": 2000.0, "latency_ms": 8.0}),
            run("chatmessages", None, 20.0),
            run("chatmessages", Some(700.0), 3.3),
            run("grpc", Some(700.0), 3.0),
            run("grpc", None, 10.0),
        ];
        let text = render(&lines);
        assert!(
            text.contains(
                "| split | chatmessages | 2 | 16 | 700 | 20.00 | - | 40.00 | - | 0 | 2000 | 0.35 |"
            ),
            "{text}"
        );
        assert!(text.contains("| split | chatmessages | 2 | 16 at 700/s | 700 | 3.30 | - | 6.60 | - | 0 | 2000 | - |"), "{text}");
        // The paced pair: +10%; the closed-loop pair: +100%.
        assert!(text.contains("| split | 2 | 16 at 700/s | 700 / 700 | 3.30 / 3.00 | 6.60 / 6.00 | +10% | +10% | +10% | - |"), "{text}");
        assert!(text.contains("| split | 2 | 16 | 700 / 700 | 20.00 / 10.00 | 40.00 / 20.00 | +100% | +100% | +100% | - |"), "{text}");
    }
}
