//! `augur-sim`: augur's reconciler at scale, on a virtual clock.
//!
//! The real `decide()` and the real runner (`Runner::tick`, the serverless driver's
//! loop) against the real SQLite store, with a simulated cloud in place of EC2:
//! instances that take 20–90 s to boot, 1 % that never boot, 3 % reclaimed (spot)
//! while they run, scripts of 3–12 minutes of which 2 % fail, and 5 % of API calls
//! throttled once (the SDK's retry, counted as another call). Simulated agents
//! heartbeat every 20 s and write their results as the real agent does.
//!
//! For each size it prints the CPU time of a reconcile tick (process CPU, the store
//! included, the pricing below not) and the calls made per trial, and checks the
//! run: every trial final, no attempt launched twice, nothing lost. A tick is every
//! 5 virtual seconds: the passes of one long-lived `Driver` per study (as in `augur
//! run`) until it has nothing to do. Every store call is priced in the DynamoDB
//! capacity units it would consume (`counted`); a second table gives them per tick
//! and per trial, and the bill of a 10,000-trial study follows, its arithmetic
//! written out.
//!
//! `augur-sim [TRIALS...] [--parallel N] [--seed S] [--serverless] [--studies N]
//! [--run-minutes M] [--old-beats | --compare] [--scrape STUDIESxTRIALS]`
//! (default: 1000 10000, parallel 500):
//! - `--serverless` drives with `Runner::tick_cached`, a tick per 5 s that starts from
//!   the cache the last tick left, as an augur-lambda environment AWS reuses does, and
//!   measures the caches' heap (a counting allocator) once three quarters have succeeded;
//! - `--studies N` drives N studies of TRIALS each side by side;
//! - `--run-minutes M` makes every script run M minutes (else 3 to 12);
//! - `--old-beats` writes heartbeats to the record, as before issue 17, and
//!   `--compare` runs each size both ways;
//! - `--scrape 100x1000` measures what `/metrics` reads at 100 studies of 1,000
//!   trials, cold and warm (`scrape`).

mod cloud;
mod counted;
mod report;
mod scrape;

use augur::{Mode, Next, Runner, Scope, TickEnd};
use augur_model::{Millis, Study, TrialState};
use augur_store::{SqliteStore, TrialStore};
use cloud::SimCloud;
use counted::{Calls, Counted, Shared};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TICK_MS: Millis = 5_000;
pub(crate) const HEARTBEAT_MS: Millis = 20_000;
pub(crate) const THROTTLED: f64 = 0.05;

/// Process CPU time in microseconds.
fn cpu_micros() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The heap, counted: what the tick caches hold is the heap their drop frees.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The most heap live at once.
static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only sizes are counted.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let live = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        std::alloc::System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, size: usize) -> *mut u8 {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        std::alloc::System.realloc(p, l, size)
    }
}

#[global_allocator]
static HEAP: Counting = Counting;

/// The peak resident memory of this process, in MB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// How a run is played.
#[derive(Clone)]
struct Options {
    parallel: u32,
    seed: u64,
    serverless: bool,
    /// Heartbeats written to the record, as before issue 17.
    old_beats: bool,
    /// Every script runs this long (else 3 to 12 minutes).
    run_ms: Option<Millis>,
    /// Studies driven side by side, each of the run's size.
    studies: u64,
    /// The last study is driven in the foreground, then abandoned (`--abandon`).
    abandon: bool,
}

/// When the foreground driver of `--abandon`'s study dies: five virtual minutes in,
/// with its first trials running and the rest to come.
const ABANDON_AFTER_MS: Millis = 300_000;

/// What `--abandon` measured: the abandoned study's live machines when its driver
/// died, how long after that the wind-down ended the last, and the other studies'
/// trials that succeeded meanwhile.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Abandoned {
    pub machines: usize,
    pub wound_down_ms: Millis,
    pub others_succeeded: u64,
    /// How its machines ended.
    pub ends: cloud::Ends,
}

/// What one simulated study measured.
struct Report {
    old_beats: bool,
    studies: u64,
    peak_rss_mb: f64,
    /// The most heap live at once, MB.
    peak_heap_mb: f64,
    /// Serverless: the tick caches' heap (bytes) and their trials, measured once
    /// three quarters of the trials had succeeded.
    tick_caches: Option<(usize, usize)>,
    trials: u64,
    parallel: u32,
    ticks: u64,
    passes: u64,
    cpu_ms: Vec<f64>,
    /// CPU per tick over the last fifth of the run, when the study is at its size.
    cpu_late_ms: Vec<f64>,
    ec2: Arc<Calls>,
    orch: Arc<Counted>,
    agents: Arc<Counted>,
    virtual_h: f64,
    wall_s: f64,
    succeeded: usize,
    failed: usize,
    lost: usize,
    preemptions: u64,
    retried: u64,
    duplicates: usize,
    abandoned: Option<Abandoned>,
}

/// What a run plays on: the store (counted twice: the orchestrator's calls and the
/// agents'), the cloud, and the runner.
struct World {
    db: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
    now: Arc<AtomicI64>,
    orch: Arc<Counted>,
    agents: Arc<Counted>,
    ec2: Arc<Calls>,
    cloud: Arc<SimCloud>,
    runner: Runner,
}

fn world(o: &Options) -> Result<World, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Inline, as `augur run` opens it: a driver waits for each call anyway.
    let db = SqliteStore::open(&dir.path().join("sim.db")).map_err(|e| e.to_string())?;
    let db = Arc::new(db.inline());
    let now = Arc::new(AtomicI64::new(1_000_000));
    let shared = Arc::new(Shared {
        now: now.clone(),
        old_beats: o.old_beats,
        ..Default::default()
    });
    let counted = |calls: Arc<Calls>| Arc::new(Counted::new(db.clone(), calls, shared.clone()));
    let orch = counted(Arc::new(Calls::seeded(o.seed ^ 1)));
    let agents = counted(Arc::new(Calls::seeded(o.seed ^ 2)));
    let ec2 = Arc::new(Calls::seeded(o.seed ^ 3));
    let cloud = Arc::new(SimCloud {
        now: now.clone(),
        insts: Mutex::new(BTreeMap::new()),
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(o.seed)),
        calls: ec2.clone(),
        next: AtomicU64::new(1),
        launches: Mutex::new(HashMap::new()),
        run_ms: o.run_ms,
        succeeded: Mutex::new(HashMap::new()),
        listed: Mutex::new(HashMap::new()),
        by_attempt: Mutex::new(HashMap::new()),
        asked: Mutex::new(HashMap::new()),
    });
    let clock = now.clone();
    let config = augur::RunnerConfig {
        clock: Arc::new(move || clock.load(Ordering::Relaxed)),
        drive: augur_model::DriveSettings {
            heartbeat_ms: HEARTBEAT_MS,
            heartbeat_timeout_ms: 90_000,
            boot_timeout_ms: 600_000,
            ..Default::default()
        },
        lease: Some(augur::LeaseSpec {
            holder: "sim".into(),
            ttl: Duration::from_secs(60),
        }),
        ..Default::default()
    };
    let runner = Runner::with_config(orch.clone(), cloud.clone(), config);
    Ok(World {
        db,
        _dir: dir,
        now,
        orch,
        agents,
        ec2,
        cloud,
        runner,
    })
}

/// Study `k` of `o.studies`, of `trials` trials.
fn study(k: u64, trials: u64, o: &Options) -> Result<Study, String> {
    let name = if o.studies == 1 {
        "sim".to_string()
    } else {
        format!("sim-{k:03}")
    };
    Study::parse(
        &format!(
            "name='{name}'\nobjective={{metric='v'}}\noracle='random'\ntrials={trials}\nparallel={}\nseed={}\n[params]\nx={{range=[0.0,1.0]}}\n[run]\nscript='true'\nmax_attempts=3\n",
            o.parallel,
            o.seed + k
        ),
        "sim.toml",
        std::path::Path::new("."),
    )
    .map_err(|e| e.to_string())
}

async fn simulate(trials: u64, o: &Options) -> Result<Report, String> {
    let w = world(o)?;
    let studies = (0..o.studies)
        .map(|k| study(k, trials, o))
        .collect::<Result<Vec<_>, _>>()?;
    let mut created = Vec::new();
    for s in &studies {
        let rec = w.runner.register(s, &Default::default()).await;
        created.push(rec.map_err(|e| e.to_string())?.created_ms);
    }
    let runner = &w.runner;
    let caches = augur::TickCaches::default();
    let mut tick_caches = None;
    let started = Instant::now();
    let mut cpu_ms = Vec::new();
    // `AUGUR_SIM_TICKS=FILE`: each tick's virtual second and CPU ms, for a plot.
    let mut tick_log =
        std::env::var_os("AUGUR_SIM_TICKS").and_then(|p| std::fs::File::create(p).ok());
    let mut t: Millis = 1_000_000;
    let limit = t + 48 * 3_600_000;
    // `--abandon`: the last study's foreground driver, a runner of its own (an
    // `augur run` in another process), until it dies.
    let foreground = foreground_runner(&w);
    let mut drivers: Vec<_> = studies
        .iter()
        .enumerate()
        .map(|(k, s)| match o.abandon && k + 1 == studies.len() {
            true => foreground.driver(s, Scope::Budget(s.trials)),
            false => runner.driver(s, Scope::Budget(s.trials)),
        })
        .collect();
    let mut done = vec![false; studies.len()];
    let total = trials * o.studies;
    let (start, mut abandoned, mut left_at) = (t, Abandoned::default(), None);
    while done.iter().any(|d| !d) {
        t += TICK_MS;
        if t > limit {
            return Err("the studies did not finish within 48 virtual hours".into());
        }
        w.cloud.advance(t, w.agents.as_ref()).await;
        w.now.store(t, Ordering::Relaxed);
        let before = cpu_micros();
        let priced = counted::PRICING_US.load(Ordering::Relaxed);
        for (k, s) in studies.iter().enumerate() {
            if done[k] {
                continue;
            }
            let left = o.abandon && k + 1 == studies.len() && t >= start + ABANDON_AFTER_MS;
            done[k] = if left {
                // Its driver died: the scheduled tick's second part winds down the
                // machines it left, beside the other studies.
                let since = *left_at.get_or_insert_with(|| {
                    abandoned.machines = w.cloud.live_trials(&s.name).len();
                    abandoned.others_succeeded = w.cloud.succeeded_besides(&s.name);
                    t
                });
                let live = w.cloud.live_trials(&s.name);
                if live.is_empty() {
                    abandoned.wound_down_ms = t - since;
                    let boot_timeout = runner.config().drive.boot_timeout_ms;
                    abandoned.ends = w.cloud.ends_since(&s.name, since, boot_timeout);
                    abandoned.others_succeeded =
                        w.cloud.succeeded_besides(&s.name) - abandoned.others_succeeded;
                    true
                } else {
                    let deadline = Instant::now() + Duration::from_secs(600);
                    runner
                        .wind_down(s, live, deadline)
                        .await
                        .map_err(|e| e.to_string())?;
                    false
                }
            } else if o.serverless && !(o.abandon && k + 1 == studies.len()) {
                // A serverless tick, as an augur-lambda environment AWS reuses runs it: the cache its
                // last tick in this process left.
                let deadline = Instant::now() + Duration::from_secs(600);
                let end = runner.tick_cached(s, created[k], deadline, &caches).await;
                match end.map_err(|e| e.to_string())? {
                    TickEnd::Finished(_) => true,
                    TickEnd::Held(l) => return Err(format!("lease held by {}", l.holder)),
                    TickEnd::Waiting | TickEnd::Deadline => false,
                }
            } else {
                // `augur run`: one long-lived driver, its cache read incrementally.
                loop {
                    match drivers[k]
                        .pass(Mode::Run)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        Next::Again => continue,
                        Next::Wait(_) => break false,
                        Next::Finished(_) => break true,
                    }
                }
            };
        }
        let priced = counted::PRICING_US.load(Ordering::Relaxed) - priced;
        cpu_ms.push((cpu_micros() - before).saturating_sub(priced) as f64 / 1000.0);
        if let Some(f) = &mut tick_log {
            let _ = writeln!(f, "{} {:.3}", (t - start) / 1000, cpu_ms[cpu_ms.len() - 1]);
        }
        if o.serverless && tick_caches.is_none() && runner.counters().succeeded * 4 >= total * 3 {
            let (live, cached) = (LIVE.load(Ordering::Relaxed), caches.trials());
            caches.clear();
            tick_caches = Some((live.saturating_sub(LIVE.load(Ordering::Relaxed)), cached));
        }
    }
    for d in drivers {
        d.release().await;
    }
    let ran = Ran {
        total,
        cpu_ms,
        virtual_ms: t - 1_000_000,
        wall_s: started.elapsed().as_secs_f64(),
        tick_caches,
        abandoned: left_at.map(|_| abandoned),
    };
    tally(&w, &studies, o, ran).await
}

/// What the tick loop measured.
struct Ran {
    total: u64,
    cpu_ms: Vec<f64>,
    virtual_ms: Millis,
    wall_s: f64,
    tick_caches: Option<(usize, usize)>,
    abandoned: Option<Abandoned>,
}

/// The runner of `--abandon`'s foreground driver: the simulation's own store, cloud,
/// clock and timings, its own lease holder.
fn foreground_runner(w: &World) -> Runner {
    let config = augur::RunnerConfig {
        lease: Some(augur::LeaseSpec {
            holder: "foreground".into(),
            ttl: Duration::from_secs(60),
        }),
        ..w.runner.config().clone()
    };
    Runner::with_config(w.orch.clone(), w.cloud.clone(), config)
}

/// The report of a run: its measures and how its trials ended.
async fn tally(w: &World, studies: &[Study], o: &Options, ran: Ran) -> Result<Report, String> {
    let mut all = Vec::new();
    // An abandoned study's trials that did not finish are resumable, not lost.
    let kept = match ran.abandoned {
        Some(_) => &studies[..studies.len() - 1],
        None => studies,
    };
    for s in kept {
        all.extend(w.db.list_trials(&s.name).await.map_err(|e| e.to_string())?);
    }
    let count = |s: TrialState| all.iter().filter(|x| x.state == s).count();
    let duplicates = w
        .cloud
        .launches
        .lock()
        .map(|l| l.values().filter(|n| **n > 1).count())
        .unwrap_or(usize::MAX);
    let late = ran.cpu_ms.len() * 4 / 5;
    let c = w.runner.counters();
    Ok(Report {
        old_beats: o.old_beats,
        studies: o.studies,
        peak_rss_mb: peak_rss_mb(),
        peak_heap_mb: PEAK.load(Ordering::Relaxed) as f64 / 1e6,
        tick_caches: ran.tick_caches,
        trials: ran.total,
        parallel: o.parallel,
        ticks: ran.cpu_ms.len() as u64,
        passes: c.passes,
        cpu_late_ms: ran.cpu_ms[late..].to_vec(),
        cpu_ms: ran.cpu_ms,
        ec2: w.ec2.clone(),
        orch: w.orch.clone(),
        agents: w.agents.clone(),
        virtual_h: ran.virtual_ms as f64 / 3_600_000.0,
        wall_s: ran.wall_s,
        succeeded: count(TrialState::Succeeded),
        failed: count(TrialState::Failed),
        lost: count(TrialState::Lost)
            + count(TrialState::Pending)
            + count(TrialState::Starting)
            + count(TrialState::Running),
        preemptions: all.iter().map(|x| x.preemptions as u64).sum(),
        retried: c.retried,
        duplicates,
        abandoned: ran.abandoned,
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn usage() -> std::process::ExitCode {
    eprintln!(
        "usage: augur-sim [TRIALS...] [--parallel N] [--seed S] [--serverless] [--studies N] [--run-minutes M] [--old-beats | --compare] [--scrape STUDIESxTRIALS]"
    );
    std::process::ExitCode::from(2)
}

fn main() -> std::process::ExitCode {
    let mut sizes: Vec<u64> = Vec::new();
    let mut o = Options {
        parallel: 500,
        seed: 7,
        serverless: false,
        old_beats: false,
        run_ms: None,
        studies: 1,
        abandon: false,
    };
    let (mut compare, mut scrapes) = (false, Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "--parallel" => o.parallel = value().unwrap_or(500) as u32,
            "--seed" => o.seed = value().unwrap_or(7),
            "--run-minutes" => o.run_ms = value().map(|m| m as Millis * 60_000),
            "--studies" => o.studies = value().unwrap_or(1).max(1),
            "--abandon" => o.abandon = true,
            "--serverless" => o.serverless = true,
            "--old-beats" => o.old_beats = true,
            "--compare" => compare = true,
            "--scrape" => match args.next().as_deref().and_then(scrape::parse) {
                Some(s) => scrapes.push(s),
                None => return usage(),
            },
            n => match n.parse() {
                Ok(n) => sizes.push(n),
                Err(_) => return usage(),
            },
        }
    }
    if sizes.is_empty() && scrapes.is_empty() {
        sizes = vec![1_000, 10_000];
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("augur-sim: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    for (studies, trials) in scrapes {
        if let Err(e) = rt.block_on(scrape::measure(studies, trials)) {
            eprintln!("augur-sim: scrape {studies}x{trials}: {e}");
            return std::process::ExitCode::from(1);
        }
    }
    let mut reports = Vec::new();
    for n in sizes {
        let plays = if compare {
            vec![
                Options {
                    old_beats: true,
                    ..o.clone()
                },
                o.clone(),
            ]
        } else {
            vec![o.clone()]
        };
        for play in plays {
            match rt.block_on(simulate(n, &play)) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    eprintln!("augur-sim: {n} trials: {e}");
                    return std::process::ExitCode::from(1);
                }
            }
        }
    }
    if reports.is_empty() {
        return std::process::ExitCode::SUCCESS;
    }
    if report::print(&reports, &o) {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("augur-sim: a trial was lost or launched twice");
        std::process::ExitCode::from(1)
    }
}
