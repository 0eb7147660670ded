//! The status pages in a real browser: Debian's chromium (installed by
//! scripts/browser.sh, passed in AUGUR_TEST_CHROMIUM) renders the pages of a finished
//! study, runs their script (the trial page loads its log with fetch), and saves
//! screenshots to $AUGUR_SCREENSHOTS (default: the target directory's screenshots/).
//! Every page passes axe-core's WCAG 2 A and AA rules (axe-core from the npm registry,
//! by scripts/axe.sh, evaluated in the page through Chromium's DevTools protocol), and
//! no request a page makes fails.

use augur_tests::browser::Browser;
use augur_tests::{bin_dir, ok, server_addr, text, Sandbox, FAST};
use std::path::PathBuf;
use std::process::Command;

fn chromium() -> String {
    std::env::var("AUGUR_TEST_CHROMIUM").unwrap_or_else(|_| {
        let found = Command::new("sh")
            .args(["-c", "command -v chromium"])
            .output()
            .map(|o| text(&o.stdout).trim().to_string())
            .unwrap_or_default();
        assert!(
            !found.is_empty(),
            "no chromium: run scripts/browser.sh (scripts/test.sh does)"
        );
        found
    })
}

/// axe-core's script (scripts/axe.sh installs it; AUGUR_TEST_AXE names it).
fn axe() -> String {
    let path = std::env::var("AUGUR_TEST_AXE").unwrap_or_else(|_| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/axe.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .expect("run scripts/axe.sh");
        assert!(
            out.status.success(),
            "scripts/axe.sh: {}",
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    });
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("axe-core at {path}: {e}"))
}

/// The WCAG 2 A and AA rules, by axe-core's tags.
const WCAG_AA: &str = "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']";

/// Opens `url`, waits until `ready` holds in the page (its script has drawn what it
/// fetched), runs axe-core there, and asserts it finds no violation and that no
/// request of the page failed.
fn accessible(browser: &mut Browser, axe: &str, url: &str, ready: &str) {
    browser.open(url);
    browser.wait_for(ready);
    browser.eval(axe);
    let found = browser.eval(&format!(
        "axe.run(document, {{ runOnly: {{ type: 'tag', values: {WCAG_AA} }}, resultTypes: ['violations'] }}).then((r) => r.violations.map((v) => ({{ rule: v.id, impact: v.impact, help: v.help, at: v.nodes.slice(0, 4).map((n) => n.target.join(' ') + ': ' + n.failureSummary) }})))"
    ));
    assert_eq!(
        found.as_array().map(Vec::len),
        Some(0),
        "{url}: axe-core finds WCAG 2 A/AA violations: {found:#}"
    );
    assert!(
        browser.failed.is_empty(),
        "{url}: requests failed: {:?}",
        browser.failed
    );
    eprintln!("axe-core: {url}: no violation, no failed request");
}

/// Chromium, headless, on `url`, with time for the page's script to run.
fn browse(args: &[&str], url: &str) -> std::process::Output {
    browse_for(3_000, args, url)
}

/// [`browse`] with `ms` of the page's (virtual) time.
fn browse_for(ms: u32, args: &[&str], url: &str) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--virtual-time-budget={ms}"),
        ])
        .args(args)
        .arg(url)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run chromium")
}

/// `augur run FILE` with the fast test settings.
fn args_for(file: &str) -> Vec<&str> {
    let mut args = vec!["run", file];
    args.extend_from_slice(&FAST);
    args
}

#[test]
fn the_pages_of_a_finished_study_render_in_chromium() {
    let sb = Sandbox::new();
    // A TPE + ASHA study: log-scale, integer and categorical parameters, curves that
    // ASHA cuts at its rungs.
    sb.write(
        "s.toml",
        r#"
name = "shown"
objective = { metric = "loss" }
oracle = "tpe"
trials = 14
parallel = 3
seed = 5
[params]
x = { range = [1.0, 5.0] }
lr = { range = [1e-4, 1e-1], scale = "log" }
act = { values = ["relu", "tanh"] }
[run]
script = 'for s in $(seq 1 9); do echo "METRICS: step=$s, loss=$(awk "BEGIN { print $AUGUR_PARAM_X + (\"$AUGUR_PARAM_ACT\" == \"relu\" ? 0 : 0.5) + 1 / $s }")"; sleep 0.05; done; echo "<b>not markup</b>"'
[prune]
rule = "asha"
min_step = 1
reduction = 3
"#,
    );
    ok(&sb.augur(&args_for("s.toml")));
    sb.write(
        "other.toml",
        "name = \"other\"\nobjective = { metric = \"loss\" }\ntrials = 6\n[params]\nx = { range = [1.0, 5.0] }\n[run]\nscript = 'echo \"METRICS: loss=$AUGUR_PARAM_X\"'\n",
    );
    ok(&sb.augur(&["run", "other.toml"]));
    // Three objectives and a constraint: a front, ranks, infeasible points.
    sb.write(
        "front.toml",
        r#"
name = "front"
objectives = [{ metric = "f1" }, { metric = "f2" }, { metric = "total" }]
constraints = ["f1 <= 4"]
oracle = "tpe"
trials = 18
parallel = 3
seed = 2
[params]
x = { range = [-2.0, 4.0] }
w = { range = [0.0, 1.0] }
[run]
script = 'awk "BEGIN { x = $AUGUR_PARAM_X; w = $AUGUR_PARAM_W; f1 = x * x + w; f2 = (x - 2) * (x - 2) + w; printf \"METRICS: f1=%g, f2=%g, total=%g\\n\", f1, f2, f1 + f2 }"'
"#,
    );
    ok(&sb.augur(&args_for("front.toml")));
    // A trial that ran to its end (ASHA decides which by timing).
    let done = sb
        .trials("shown")
        .iter()
        .find(|t| t["state"] == "succeeded")
        .and_then(|t| t["id"].as_u64())
        .expect("a succeeded trial");
    let done_page = format!("/trials/shown/{done}");
    let mut server = sb.spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let addr = server_addr(&mut server);
    let shots = std::env::var("AUGUR_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| bin_dir().join("screenshots"));
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    for (name, path, wants) in [
        (
            "studies",
            "/",
            vec!["Studies", "shown", "compare the ticked studies"],
        ),
        (
            "study",
            "/studies/shown",
            vec![
                // Each chart's title is drawn (ECharts' SVG renderer) only by a
                // browser running the page's scripts on the analysis it fetched.
                "loss per trial",
                "intermediate values (pruned in purple, ASHA rungs dashed)",
                "rung 3",
                "parallel coordinates",
                "parameter importance",
                "permutation importance",
                "loss vs lr (log scale)",
                "loss vs act",
                "empirical distribution of loss",
                "loss over ",
                "14 of 14 trials shown",
                // The study's spend, kept current by the page's script.
                "machine-hours (local machines are free)",
                "Leaderboard",
                "pruned",
            ],
        ),
        (
            "study-filtered",
            "/studies/shown?act=relu&state=succeeded,pruned",
            vec![
                "trials shown (filtered: this page's address keeps the filter)",
                "relu",
            ],
        ),
        (
            "front",
            "/studies/front",
            vec![
                "Pareto front: minimize f1 × minimize f2",
                "front 1",
                "infeasible",
                "front of these two",
                "hypervolume of the front, trial by trial",
                "reference point f1 = ",
                "Pareto chart of",
                "The charts below the front show",
                "f1 per trial",
                // Fronts in their colours: the first's in the chart and the table.
                "fill=\"#b2182b\"",
                "color:#b2182b",
            ],
        ),
        (
            "compare",
            "/compare?studies=shown,other",
            vec!["best so far, trial by trial", "shown", "other"],
        ),
        (
            "trial",
            done_page.as_str(),
            // The log arrives by fetch: only a browser running the script shows it.
            vec!["METRICS: step=1,", "&lt;b&gt;not markup&lt;/b&gt;", "step"],
        ),
    ] {
        let url = format!("http://{addr}{path}");
        let dom = browse(&["--dump-dom"], &url);
        assert!(dom.status.success(), "{}", text(&dom.stderr));
        let dom = text(&dom.stdout);
        for w in wants {
            assert!(dom.contains(w), "{name} page lacks {w:?}: {dom}");
        }
        assert!(
            !dom.contains("<b>not markup</b>"),
            "script output is escaped"
        );
        let file = shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&file);
        let shot = browse(
            &[
                // The study page is long: every chart and the trial table.
                if name.starts_with("study") || name == "front" {
                    "--window-size=1280,4200"
                } else {
                    "--window-size=1280,1400"
                },
                &format!("--screenshot={}", file.display()),
            ],
            &url,
        );
        assert!(shot.status.success(), "{}", text(&shot.stderr));
        let png = std::fs::read(&file).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
        assert!(
            png.len() > 10_000,
            "{} has content ({} bytes)",
            file.display(),
            png.len()
        );
        eprintln!("screenshot: {} ({} bytes)", file.display(), png.len());
    }
    // Every page passes axe-core's WCAG 2 A and AA rules once its script has drawn.
    let axe = axe();
    let mut browser = Browser::start(&chromium());
    let drawn = "Number(document.getElementById('analysis').dataset.loads) >= 1";
    let front_trial = format!(
        "/trials/front/{}",
        sb.trials("front")
            .iter()
            .find(|t| t["state"] == "succeeded")
            .and_then(|t| t["id"].as_u64())
            .expect("a succeeded trial")
    );
    for (path, ready) in [
        ("/", "document.readyState === 'complete'"),
        ("/studies/shown", drawn),
        ("/studies/shown?act=relu&state=succeeded,pruned", drawn),
        ("/studies/front", drawn),
        (
            "/compare?studies=shown,other,front",
            "document.querySelector('#compare ul') !== null",
        ),
        (
            done_page.as_str(),
            "document.getElementById('log').dataset.done === '1'",
        ),
        (
            front_trial.as_str(),
            "document.getElementById('log').dataset.done === '1'",
        ),
    ] {
        accessible(&mut browser, &axe, &format!("http://{addr}{path}"), ready);
    }
    // The check sees a request that fails: a study that is not there.
    browser.open(&format!("http://{addr}/studies/no-such-study"));
    assert!(
        browser.failed.iter().any(|f| f.starts_with("404 ")),
        "{:?}",
        browser.failed
    );
    drop(browser);
    let _ = server.kill();
    let _ = server.wait();

    // Beyond loopback, with a token: the page opened once with ?token= sets the
    // cookie its own script's fetch of the log then carries; without it, refused.
    let mut wide = sb.spawn(&["serve", "--addr", "0.0.0.0:0", "--token", "t0k3n-for-test"]);
    let port = server_addr(&mut wide)
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let url = format!("http://127.0.0.1:{port}{done_page}");
    let dom = text(&browse(&["--dump-dom"], &format!("{url}?token=t0k3n-for-test")).stdout);
    assert!(
        dom.contains("METRICS: step=1,"),
        "the log arrives with the cookie: {dom}"
    );
    let file = shots.join("trial-with-token.png");
    let _ = std::fs::remove_file(&file);
    let shot = browse(
        &[
            "--window-size=1280,1400",
            &format!("--screenshot={}", file.display()),
        ],
        &format!("{url}?token=t0k3n-for-test"),
    );
    assert!(shot.status.success(), "{}", text(&shot.stderr));
    let dom = text(&browse(&["--dump-dom"], &url).stdout);
    assert!(dom.contains("a token is required"), "{dom}");
    assert!(!dom.contains("METRICS"), "{dom}");
    let _ = wide.kill();
    let _ = wide.wait();
}

/// The study page of a study that is still running fetches its analysis again every
/// 5 s (of the page's virtual time), and says it is live; a finished one does not.
#[test]
fn an_active_study_page_refreshes_itself() {
    let sb = Sandbox::new();
    sb.write(
        "live.toml",
        "name = \"live\"\nobjective = { metric = \"loss\" }\ntrials = 1\n[run]\nscript = 'sleep 60; echo METRICS: loss=1'\ngrace = \"200ms\"\n",
    );
    let mut args = vec!["run", "live.toml", "--serve", "127.0.0.1:0"];
    args.extend_from_slice(&FAST);
    let mut run = sb.spawn(&args);
    let addr = server_addr(&mut run);
    sb.wait_running("live", 1, std::time::Duration::from_secs(30));
    let dom = text(
        &browse_for(
            16_000,
            &["--dump-dom"],
            &format!("http://{addr}/studies/live"),
        )
        .stdout,
    );
    let loads: u32 = dom
        .split("data-loads=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        loads >= 3,
        "16 s of page time: the analysis fetched every 5 s ({loads} loads): {dom}"
    );
    assert!(dom.contains("live: refreshed every 5 s"), "{dom}");
    ok(&sb.augur(&["stop", "live"]));
    let _ = augur_tests::wait_exit(&mut run, std::time::Duration::from_secs(30));
}

/// Record text is hostile: a parameter value, a metric's name and a script's output
/// written as markup that would run if spliced into a page. The pages show them as
/// text, and send a Content-Security-Policy under which no inline script or handler
/// runs anyway.
#[test]
fn record_text_never_runs_in_the_pages() {
    let sb = Sandbox::new();
    let attack = r#"<img src=x onerror="document.body.dataset.pwned=1">"#;
    sb.write(
        "x.toml",
        &format!(
            "name = \"hostile\"\nobjective = {{ metric = \"loss\" }}\noracle = \"grid\"\n[params]\nv = {{ values = ['{attack}', 'plain'] }}\n[run]\nscript = '''\necho \"METRICS: loss=1\"\necho '<script>document.body.dataset.pwned=2</script>'\n'''\n"
        ),
    );
    let mut args = vec!["run", "x.toml"];
    args.extend_from_slice(&FAST);
    ok(&sb.augur(&args));
    let mut server = sb.spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let addr = server_addr(&mut server);
    let (status, head, _) =
        augur_tests::http_request(&addr, "/studies/hostile", &[("Host", addr.as_str())]);
    assert_eq!(status, 200);
    let csp = head
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-security-policy"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let scripts = csp.split(';').find(|d| d.trim().starts_with("script-src"));
    assert_eq!(
        scripts.map(str::trim),
        Some("script-src 'self'"),
        "{head:?}"
    );
    for path in [
        "/",
        "/studies/hostile",
        "/trials/hostile/1",
        "/trials/hostile/2",
        "/compare?studies=hostile",
    ] {
        let url = format!("http://{addr}{path}");
        let dom = browse(&["--dump-dom"], &url);
        assert!(dom.status.success(), "{}", text(&dom.stderr));
        let dom = text(&dom.stdout);
        assert!(
            !dom.contains("data-pwned"),
            "{path}: record text ran: {dom}"
        );
        assert!(
            !dom.contains("<img src=\"x\""),
            "{path}: record text became markup: {dom}"
        );
    }
    let shown = text(&browse(&["--dump-dom"], &format!("http://{addr}/studies/hostile")).stdout);
    assert!(
        shown.contains("&lt;img src=x"),
        "the value is shown as text: {shown}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
