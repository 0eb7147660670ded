//! What `augur export` and `--csv` write: CSV documents of trials and leaderboards.

use super::*;

/// A CSV document (RFC 4180, by the `csv` crate: fields quoted when they hold a
/// comma, quote or line break).
fn csv(header: &[String], rows: &[Vec<String>]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in std::iter::once(header).chain(rows.iter().map(|r| r.as_slice())) {
        // Writing to memory cannot fail; a row that could not be written is left out.
        let _ = w.write_record(row);
    }
    w.into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Parameter names (the study's, then any others a trial has) and metric names seen.
fn columns<'a>(
    study: &augur_model::Study,
    params: impl Iterator<Item = &'a augur_model::Params>,
    metrics: impl Iterator<Item = &'a std::collections::BTreeMap<String, f64>>,
) -> (Vec<String>, Vec<String>) {
    let mut p: Vec<String> = study.params.keys().cloned().collect();
    for ps in params {
        for k in ps.keys() {
            if !p.contains(k) {
                p.push(k.clone());
            }
        }
    }
    let m: std::collections::BTreeSet<String> = metrics.flat_map(|m| m.keys().cloned()).collect();
    (p, m.into_iter().collect())
}

fn opt_time(t: Option<i64>) -> String {
    t.map(rfc3339).unwrap_or_default()
}

/// Each ranked trial's point's Pareto rank and feasibility, by trial id (a trial
/// not on the leaderboard has none).
pub fn pareto_ranks(study: &augur_model::Study, trials: &[Trial]) -> BTreeMap<u64, Ranked> {
    augur_model::leaderboard(study, trials)
        .into_iter()
        .flat_map(|r| {
            let ranked = Ranked {
                rank: r.rank,
                feasible: r.feasible,
            };
            r.trials
                .iter()
                .map(move |&id| (id, ranked))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A trial's point's place in the study: its Pareto rank (1: the front) and whether
/// it meets the constraints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranked {
    pub rank: usize,
    pub feasible: bool,
}

/// The trials as CSV: one row per trial, a column per parameter and per metric, what
/// it ran on and cost, and its point's Pareto rank and feasibility (empty for a
/// point not ranked).
pub fn trials_csv(study: &augur_model::Study, trials: &[Trial]) -> String {
    let (pcols, mcols) = columns(
        study,
        trials.iter().map(|t| &t.params),
        trials.iter().map(|t| &t.metrics),
    );
    let ranked = pareto_ranks(study, trials);
    let text = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut header = text(&[
        "id",
        "state",
        "attempt",
        "runs",
        "replicate",
        "point",
        "dataset",
    ]);
    header.extend(pcols.iter().map(|p| format!("param.{p}")));
    header.extend(mcols.iter().map(|m| format!("metric.{m}")));
    header.extend(text(&[
        "exit_code",
        "error",
        "status",
        "machine",
        "created",
        "started",
        "finished",
        "elapsed_ms",
        "machine_seconds",
        "cost_usd",
        "instance_type",
        "lifecycle",
        "usd_per_hour",
        "pareto_rank",
        "feasible",
    ]));
    let now = now_ms();
    let rows: Vec<Vec<String>> = trials
        .iter()
        .map(|t| {
            let mut r = vec![
                t.id.to_string(),
                t.state.to_string(),
                t.attempt.to_string(),
                t.runs.to_string(),
                t.replicate.to_string(),
                t.point.to_string(),
                t.dataset.clone().unwrap_or_default(),
            ];
            let cell = |v: Option<String>| v.unwrap_or_default();
            r.extend(
                pcols
                    .iter()
                    .map(|p| cell(t.params.get(p).map(|v| v.to_string()))),
            );
            r.extend(
                mcols
                    .iter()
                    .map(|m| cell(t.metrics.get(m).map(|v| v.to_string()))),
            );
            r.extend(run_cells(t, now));
            let rank = ranked.get(&t.id);
            r.push(cell(rank.map(|r| r.rank.to_string())));
            r.push(cell(rank.map(|r| r.feasible.to_string())));
            r
        })
        .collect();
    csv(&header, &rows)
}

/// A trial's cells from `exit_code` to `usd_per_hour`: how it ran, on what, and cost.
fn run_cells(t: &Trial, now: augur_model::Millis) -> Vec<String> {
    let b = t.billing.as_ref();
    vec![
        t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        t.error.clone().unwrap_or_default(),
        t.status.clone().unwrap_or_default(),
        t.machine.clone().unwrap_or_default(),
        rfc3339(t.created_ms),
        opt_time(t.started_ms),
        opt_time(t.finished_ms),
        t.started_ms
            .zip(t.finished_ms)
            .map(|(s, f)| (f - s).to_string())
            .unwrap_or_default(),
        (t.machine_ms(now) as f64 / 1000.0).to_string(),
        cost::round(t.cost_usd(now)).to_string(),
        b.map(|b| b.instance_type.clone()).unwrap_or_default(),
        b.map(|b| if b.spot { "spot" } else { "on-demand" }.to_string())
            .unwrap_or_default(),
        b.and_then(|b| b.usd_per_hour)
            .map(|p| p.to_string())
            .unwrap_or_default(),
    ]
}

/// The leaderboard as CSV: rank, value, whether pruned, the point's trials, its cost,
/// Pareto rank and feasibility, then a column per parameter and per (mean) metric.
pub fn leaderboard_csv(
    study: &augur_model::Study,
    rows: &[LeaderboardRow],
    trials: &[Trial],
) -> String {
    let (pcols, mcols) = columns(
        study,
        rows.iter().map(|r| &r.params),
        rows.iter().map(|r| &r.metrics),
    );
    let mut header: Vec<String> = [
        "rank",
        "value",
        "pruned",
        "point",
        "trials",
        "replicates",
        "cost_usd",
        "pareto_rank",
        "feasible",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(pcols.iter().map(|p| format!("param.{p}")));
    header.extend(mcols.iter().map(|m| format!("metric.{m}")));
    let body: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let join = |v: Vec<String>| v.join(" ");
            let mut out = vec![
                (i + 1).to_string(),
                r.value.to_string(),
                r.pruned.to_string(),
                r.point.to_string(),
                join(r.trials.iter().map(|t| t.to_string()).collect()),
                join(r.replicates.iter().map(|t| t.to_string()).collect()),
                cost::round(row_cost(r, trials)).to_string(),
                r.rank.to_string(),
                r.feasible.to_string(),
            ];
            out.extend(
                pcols
                    .iter()
                    .map(|p| r.params.get(p).map(|v| v.to_string()).unwrap_or_default()),
            );
            out.extend(
                mcols
                    .iter()
                    .map(|m| r.metrics.get(m).map(|v| v.to_string()).unwrap_or_default()),
            );
            out
        })
        .collect();
    csv(&header, &body)
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        let row = |f: &str| csv(&[f.to_string()], &[]);
        assert_eq!(row("plain"), "plain\n");
        assert_eq!(row("a,b"), "\"a,b\"\n");
        assert_eq!(row("say \"hi\""), "\"say \"\"hi\"\"\"\n");
        assert_eq!(row("two\nlines"), "\"two\nlines\"\n");
    }
}
