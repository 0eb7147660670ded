//! What the simulation prints: the runs' table, their DynamoDB capacity units, and
//! the cost of a 10,000-trial study at published on-demand prices, with the
//! arithmetic written out.

use crate::{mean, pct, Options, Report, HEARTBEAT_MS, TICK_MS};
use std::sync::atomic::Ordering;

/// On-demand prices in us-east-1 (<https://aws.amazon.com/dynamodb/pricing/on-demand/>,
/// <https://aws.amazon.com/lambda/pricing/>, <https://aws.amazon.com/cloudwatch/pricing/>):
/// US dollars per million write and read request units, per GB-second and per
/// million requests of an x86 Lambda, per GB of logs ingested.
const USD_PER_M_WRITES: f64 = 0.625;
const USD_PER_M_READS: f64 = 0.125;
const USD_PER_GB_S: f64 = 0.000_016_666_7;
const USD_PER_M_INVOCATIONS: f64 = 0.20;
const USD_PER_LOG_GB: f64 = 0.50;
/// What the bill assumes a trial logs, and how long a call to AWS takes.
const LOG_BYTES_PER_TRIAL: f64 = 100_000.0;
const MS_PER_CALL: f64 = 10.0;
/// The tick Lambda's memory (infra/augur.yaml).
const LAMBDA_MB: f64 = 512.0;

/// Prints the tables; whether every run ended with every trial final, none
/// launched twice.
pub(crate) fn print(reports: &[Report], o: &Options) -> bool {
    println!(
        "| trials | parallel | virtual h | ticks | passes | CPU/tick mean ms | p99 ms | max ms | at size: mean ms | EC2 calls/trial | store calls/trial (orchestrator + agents) | trials read/pass | DynamoDB items read/trial: index + beats (whole study each pass) | succeeded | failed | lost | preemptions | retried | duplicate launches | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ok = true;
    for r in reports {
        let n = r.trials as f64;
        let ec2 = r.ec2.total() as f64 / n;
        println!(
            "| {} | {} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} (run {:.2}, describe {:.2}, terminate {:.2}) | {:.2} + {:.2} | {:.1} | {:.0} + {:.0} ({:.0}) | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.trials,
            r.parallel,
            r.virtual_h,
            r.ticks,
            r.passes,
            mean(&r.cpu_ms),
            pct(&r.cpu_ms, 0.99),
            pct(&r.cpu_ms, 1.0),
            mean(&r.cpu_late_ms),
            ec2,
            r.ec2.get("RunInstances") as f64 / n,
            r.ec2.get("DescribeInstances") as f64 / n,
            r.ec2.get("TerminateInstances") as f64 / n,
            r.orch.calls.total() as f64 / n,
            r.agents.calls.total() as f64 / n,
            r.orch.changed_read.load(Ordering::Relaxed) as f64 / r.passes.max(1) as f64,
            r.orch.index_read.load(Ordering::Relaxed) as f64 / n,
            r.orch.beats_read.load(Ordering::Relaxed) as f64 / n,
            r.orch.whole_study_read.load(Ordering::Relaxed) as f64 / n,
            r.succeeded,
            r.failed,
            r.lost,
            r.preemptions,
            r.retried,
            r.duplicates,
            r.wall_s,
        );
        // An abandoned study's trials are not counted: what did not finish resumes.
        let abandoned = r.abandoned.map_or(0, |_| r.trials / r.studies.max(1)) as usize;
        if r.lost > 0 || r.duplicates > 0 || r.succeeded + r.failed + abandoned != r.trials as usize
        {
            ok = false;
        }
    }
    for (r, a) in reports.iter().filter_map(|r| Some((r, r.abandoned?))) {
        println!(
            "\nabandoned: the last of {} studies lost its foreground driver {} virtual minutes in, with {} machines live; the ticks' wind-down ended the last of them {:.1} virtual minutes later (target: 5), while the other studies' trials went on ({} succeeded meanwhile)",
            r.studies,
            crate::ABANDON_AFTER_MS / 60_000,
            a.machines,
            a.wound_down_ms as f64 / 60_000.0,
            a.others_succeeded
        );
        println!(
            "  {} ended on their own (scripts done, attempts gone, reclaimed; the last {:.1} virtual minutes in: running trials are let finish), {} by the ticks' TerminateInstances, at most {:.1} virtual s after their rule allowed it (a machine that never booted: its 10-minute boot timeout)",
            a.ends.on_their_own,
            a.ends.last_own_ms as f64 / 60_000.0,
            a.ends.by_ticks,
            a.ends.lag_ms as f64 / 1000.0
        );
    }
    if let [first, .., last] = reports {
        let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 0.0 };
        println!(
            "\n{}x the trials: CPU per tick x{:.2} (at size x{:.2}); EC2 calls per trial x{:.2}; orchestrator store calls per trial x{:.2}; DynamoDB items read per trial x{:.2} (whole study each pass: x{:.2})",
            last.trials / first.trials.max(1),
            ratio(mean(&first.cpu_ms), mean(&last.cpu_ms)),
            ratio(mean(&first.cpu_late_ms), mean(&last.cpu_late_ms)),
            ratio(
                first.ec2.total() as f64 / first.trials as f64,
                last.ec2.total() as f64 / last.trials as f64
            ),
            ratio(
                first.orch.calls.total() as f64 / first.trials as f64,
                last.orch.calls.total() as f64 / last.trials as f64
            ),
            ratio(
                first.orch.index_read.load(Ordering::Relaxed) as f64 / first.trials as f64,
                last.orch.index_read.load(Ordering::Relaxed) as f64 / last.trials as f64
            ),
            ratio(
                first.orch.whole_study_read.load(Ordering::Relaxed) as f64 / first.trials as f64,
                last.orch.whole_study_read.load(Ordering::Relaxed) as f64 / last.trials as f64
            ),
        );
    }
    if let Some(big) = reports.iter().max_by_key(|r| r.trials) {
        let p99 = pct(&big.cpu_ms, 0.99);
        println!(
            "target: CPU per tick <= 50 ms at {} trials: p99 {:.2} ms, mean {:.2} ms: {} ({} build)",
            big.trials,
            p99,
            mean(&big.cpu_ms),
            if p99 <= 50.0 { "met" } else { "NOT met" },
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
    }
    units(reports);
    if let Some(r) = reports
        .iter()
        .filter(|r| !r.old_beats && r.studies == 1)
        .max_by_key(|r| r.trials)
    {
        bill(r, o);
    }
    ok
}

/// The DynamoDB capacity units of each run (see `counted`).
fn units(reports: &[Report]) {
    println!(
        "\n| studies x trials | heartbeats | per tick ({} s): read units | write units | EC2 calls | per trial: write units (agents + orchestrator) | read units | process peak RSS MB (heap) |",
        TICK_MS / 1000
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in reports {
        let (ticks, n) = (r.ticks.max(1) as f64, r.trials as f64);
        println!(
            "| {} x {} | {} | {:.1} | {:.1} | {:.2} | {:.1} ({:.1} + {:.1}) | {:.1} | {:.0} ({:.0}) |",
            r.studies,
            r.trials / r.studies.max(1),
            if r.old_beats {
                "in the record (before)"
            } else {
                "beat items"
            },
            r.orch.units.reads() / ticks,
            r.orch.units.writes() / ticks,
            r.ec2.total() as f64 / ticks,
            (r.agents.units.writes() + r.orch.units.writes()) / n,
            r.agents.units.writes() / n,
            r.orch.units.writes() / n,
            (r.agents.units.reads() + r.orch.units.reads()) / n,
            r.peak_rss_mb,
            r.peak_heap_mb,
        );
    }
    for r in reports {
        if let Some((bytes, trials)) = r.tick_caches {
            println!(
                "tick caches at {} trials: {trials} trials cached in {:.1} MB of heap, {:.2} KB a trial",
                r.trials,
                bytes as f64 / 1e6,
                bytes as f64 / 1e3 / trials.max(1) as f64
            );
        }
    }
    if let [old, new, ..] = reports {
        if old.old_beats && !new.old_beats && old.trials == new.trials {
            let per =
                |r: &Report| (r.agents.units.writes() + r.orch.units.writes()) / r.trials as f64;
            println!(
                "write units per trial: {:.1} before, {:.1} with beat items: x{:.2} fewer",
                per(old),
                per(new),
                per(old) / per(new).max(f64::MIN_POSITIVE)
            );
        }
    }
}

/// The bill of a 10,000-trial study like `r`, if run once a month.
fn bill(r: &Report, o: &Options) {
    let scale = 10_000.0 / r.trials as f64;
    let writes = (r.agents.units.writes() + r.orch.units.writes()) * scale;
    let reads = (r.agents.units.reads() + r.orch.units.reads()) * scale;
    let dynamo = writes / 1e6 * USD_PER_M_WRITES + reads / 1e6 * USD_PER_M_READS;
    // A tick a minute, doing the work of a minute of the simulation's ticks.
    let minutes = r.virtual_h * 60.0 * scale;
    let per_minute = 60_000.0 / TICK_MS as f64;
    let calls = (r.orch.calls.total() + r.ec2.total()) as f64 * scale / minutes.max(1.0);
    let ms = mean(&r.cpu_ms) * per_minute + calls * MS_PER_CALL;
    let gb_s = minutes * ms / 1000.0 * LAMBDA_MB / 1024.0;
    let lambda = gb_s * USD_PER_GB_S + minutes / 1e6 * USD_PER_M_INVOCATIONS;
    let log_gb = 10_000.0 * LOG_BYTES_PER_TRIAL / 1e9;
    let logs = log_gb * USD_PER_LOG_GB;
    let heartbeat = format!("heartbeat {} s", HEARTBEAT_MS / 1000);
    let run = o.run_ms.map_or("scripts of 3-12 min".to_string(), |m| {
        format!("scripts of {} min", m / 60_000)
    });
    println!(
        "\nA 10,000-trial study like this one ({run}, {heartbeat}, parallel {}), run once a month, at on-demand prices in us-east-1:",
        r.parallel
    );
    println!(
        "  DynamoDB: {writes:.0} write units x ${USD_PER_M_WRITES}/M + {reads:.0} read units x ${USD_PER_M_READS}/M = ${dynamo:.2}"
    );
    println!(
        "  Lambda: {minutes:.0} ticks (one a minute for {:.1} h) x ({:.1} ms CPU + {calls:.0} calls x {MS_PER_CALL} ms) x {LAMBDA_MB} MB = {gb_s:.0} GB-s x ${USD_PER_GB_S}/GB-s + {minutes:.0} invocations x ${USD_PER_M_INVOCATIONS}/M = ${lambda:.2}",
        minutes / 60.0,
        mean(&r.cpu_ms) * per_minute
    );
    println!(
        "  CloudWatch Logs: 10,000 trials x {:.0} KB (assumed) = {log_gb:.1} GB x ${USD_PER_LOG_GB}/GB = ${logs:.2}",
        LOG_BYTES_PER_TRIAL / 1000.0
    );
    println!("  total: ${:.2} a month", dynamo + lambda + logs);
}
