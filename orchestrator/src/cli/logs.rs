//! `augur logs STUDY/TRIAL [--follow] [--since] [--filter]`.

use super::backend::Ctx;
use super::{parse_target, Fail, Outcome};
use augur::reconcile::{settled, Timing};
use augur_model::duration;
use augur_store::logfile::{parse_line, parse_time};
use augur_store::now_ms;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// STUDY/TRIAL, for example quadratic/3.
    target: String,
    /// Keep printing new lines until the trial is final.
    #[arg(short, long)]
    follow: bool,
    /// Only lines from this long ago (10m, 2h) or since this UTC time (2026-11-24T10:00).
    #[arg(long)]
    since: Option<String>,
    /// Only lines containing this text.
    #[arg(long)]
    filter: Option<String>,
}

/// Which lines to print.
struct Keep<'a> {
    since: Option<i64>,
    filter: Option<&'a str>,
}

impl Keep<'_> {
    fn keeps(&self, line: &str) -> bool {
        let recent = match (self.since, parse_line(line)) {
            (Some(s), Some(l)) => l.t_ms >= s,
            _ => true,
        };
        recent && self.filter.is_none_or(|f| line.contains(f))
    }
}

/// Reads one attempt's log file incrementally.
struct Tail {
    offset: u64,
    partial: String,
}

impl Tail {
    /// Prints the complete lines added since the last call; whether anything was read.
    fn pump(
        &mut self,
        path: &std::path::Path,
        keep: &Keep,
        out: &mut impl Write,
    ) -> std::io::Result<bool> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Ok(false);
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Ok(false);
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches('\n');
            if keep.keeps(line) {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
        Ok(true)
    }
}

fn parse_since(s: &str) -> Result<i64, Fail> {
    if let Ok(d) = duration::parse(s) {
        return Ok(now_ms() - d.as_millis() as i64);
    }
    parse_time(s).ok_or_else(|| {
        Fail::input(format!(
            "--since `{s}` is neither a duration (10m, 2h) nor a UTC time (2026-11-24T10:00)"
        ))
    })
}

/// Where one attempt's lines come from.
enum Source {
    File(Tail),
    Cloud {
        client: aws_sdk_cloudwatchlogs::Client,
        group: String,
        token: Option<String>,
    },
}

impl Source {
    /// Prints the new lines of `attempt`; whether there were any.
    async fn pump(
        &mut self,
        ctx: &Ctx,
        (study, id, attempt): (&str, u64, u32),
        keep: &Keep<'_>,
        out: &mut impl Write,
    ) -> Result<bool, Fail> {
        match self {
            Source::File(tail) => {
                let path = ctx.layout.log_file(study, id, attempt);
                tail.pump(&path, keep, out)
                    .map_err(|e| Fail::unavailable(format!("reading {}: {e}", path.display())))
            }
            Source::Cloud {
                client,
                group,
                token,
            } => {
                let stream = augur_aws::cwlogs::stream(id, attempt);
                let (lines, next) = augur_aws::cwlogs::read(client, group, &stream, token.take())
                    .await
                    .map_err(|e| Fail::unavailable(e.to_string()))?;
                *token = next;
                for line in &lines {
                    if keep.keeps(line) {
                        writeln!(out, "{line}").map_err(|e| Fail::unavailable(e.to_string()))?;
                    }
                }
                Ok(!lines.is_empty())
            }
        }
    }
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Outcome {
    let (study, id) = parse_target(&args.target)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let no = || Fail::input(format!("no study named `{study}` (see `augur studies`)"));
    let store = ctx.existing_store().await?.ok_or_else(no)?;
    let rec = store.get_study(&study).await?.ok_or_else(no)?;
    let timing = Timing::default();
    let keep = Keep {
        since,
        filter: args.filter.as_deref(),
    };
    let fresh = |ctx: &Ctx, client: &Option<aws_sdk_cloudwatchlogs::Client>| match client {
        Some(c) => Source::Cloud {
            client: c.clone(),
            group: augur_aws::cwlogs::group(&ctx.aws.log_group_prefix, &study),
            token: None,
        },
        None => Source::File(Tail {
            offset: 0,
            partial: String::new(),
        }),
    };
    let client = if ctx.is_aws() {
        Some(aws_sdk_cloudwatchlogs::Client::new(ctx.sdk().await))
    } else {
        None
    };
    let mut attempt = 1;
    let mut source = fresh(ctx, &client);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let t = store
            .get_trial(&study, id)
            .await?
            .ok_or_else(|| Fail::input(format!("study `{study}` has no trial {id}")))?;
        let mut read = false;
        loop {
            read |= source
                .pump(ctx, (&study, id, attempt), &keep, &mut out)
                .await?;
            if attempt < t.attempt {
                attempt += 1;
                source = fresh(ctx, &client);
                continue;
            }
            break;
        }
        if !args.follow || (settled(&rec.spec, &timing, &t) && !read) {
            break;
        }
        if !read {
            tokio::time::sleep(Duration::from_millis(if ctx.is_aws() { 1000 } else { 200 })).await;
        }
    }
    Ok(0)
}
