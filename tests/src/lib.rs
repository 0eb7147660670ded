//! Helpers for augur's end-to-end tests: a sandbox directory, the real binaries, and
//! polling with deadlines (never a bare sleep to wait for something).

pub mod browser;
pub mod cloud;
pub mod deployed;
pub mod emulator;
pub mod faults;
pub mod iam;
pub mod lambda;
pub mod standin;
pub mod table;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The table ARN `infra/iam_eval.py` evaluates requests on (its stand-in account's).
pub const EVAL_TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/augur-table";

/// Asserts that every request (`{"action", "resource", "context"}`) is allowed to
/// `role` by `infra/augur.yaml`'s policies, as `infra/iam_eval.py` evaluates them
/// (with the cfn-lint virtualenv's Python, installed by `scripts/pytool.sh`).
pub fn iam_allows(role: &str, requests: &[Value]) {
    let python = cfn_python();
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), serde_json::to_vec(requests).expect("json")).expect("write");
    let out = Command::new(python)
        .arg(repo().join("infra/iam_eval.py"))
        .arg(repo().join("infra/augur.yaml"))
        .arg(role)
        .arg(file.path())
        .output()
        .expect("iam_eval.py");
    assert!(
        out.status.success(),
        "{role} refuses calls augur made:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The SHA-256 of a file, as `sha256sum` prints it.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pin of this build's `augur-agent` (what `augur init --agent` uploads in the
/// AWS tests), computed once.
pub fn agent_sha256() -> &'static str {
    static PIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PIN.get_or_init(|| sha256_of(&bin_dir().join("augur-agent")))
}

/// The agent built for EC2 instances of `arch` (`x86_64` or `aarch64`) by
/// scripts/instance-binaries.sh: `AUGUR_INSTANCE_AGENT` names the x86_64 one
/// (scripts/test.sh sets it), and the aarch64 one is at the same path under its
/// target's directory.
pub fn instance_agent(arch: &str) -> PathBuf {
    let agent = std::env::var("AUGUR_INSTANCE_AGENT").unwrap_or_default();
    assert!(
        !agent.is_empty() && Path::new(&agent).is_file(),
        "AUGUR_INSTANCE_AGENT must name the agent built by scripts/instance-binaries.sh (scripts/test.sh does this); got `{agent}`"
    );
    PathBuf::from(agent.replace(
        "/x86_64-unknown-linux-gnu/",
        &format!("/{arch}-unknown-linux-gnu/"),
    ))
}

/// Where Debian's arm64 C library is (`libc6-arm64-cross`, scripts/arm64.sh): qemu
/// finds an aarch64 program's loader there (`QEMU_LD_PREFIX`).
pub const ARM64_LIBC: &str = "/usr/aarch64-linux-gnu";

/// The directory holding the built `augur` and `augur-agent`: `AUGUR_BIN_DIR`, else the
/// cargo target directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AUGUR_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/e2e-<hash> → target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("augur").is_file() && dir.join("augur-agent").is_file(),
        "build the binaries first (`cargo build --bins`): nothing in {}",
        dir.display()
    );
    dir
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The AWS CLI (v1, from PyPI): `AUGUR_TEST_AWSCLI` (scripts/test.sh sets it), else
/// the one `scripts/awscli.sh` installs.
pub fn awscli() -> PathBuf {
    if let Some(p) = std::env::var_os("AUGUR_TEST_AWSCLI") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/awscli.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/awscli.sh");
    assert!(out.status.success(), "scripts/awscli.sh failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The Python of cfn-lint's virtualenv (`scripts/pytool.sh`, installed by
/// `scripts/infra-check.sh`), which reads CloudFormation templates.
pub fn cfn_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/pytool.sh"))
        .args(["cfn-lint", "1.58.0", "cfn-lint"])
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/pytool.sh");
    assert!(out.status.success(), "scripts/pytool.sh cfn-lint failed");
    let lint = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    lint.with_file_name("python")
}

/// A scratch directory where `augur` runs with its default `.augur/` state.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (relative to the sandbox) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    /// `augur ARGS` in the sandbox, without the variables a developer's shell may set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("augur"));
        c.args(args)
            .current_dir(self.path())
            .env_remove("AUGUR_HOME")
            .env_remove("AUGUR_AGENT")
            .env_remove("AUGUR_LOG")
            .env_remove("AUGUR_GPUS")
            .env_remove("CUDA_VISIBLE_DEVICES")
            // A developer's deployed config (infra/deploy.sh) must not leak in.
            .env("AUGUR_CONFIG", self.path().join("no-config.toml"))
            .stdin(Stdio::null());
        c
    }

    /// Runs `augur ARGS` to its end.
    pub fn augur(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run augur")
    }

    /// Starts `augur ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn augur")
    }

    /// `augur ARGS` (which must succeed) with its stdout read as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.augur(args);
        assert!(
            out.status.success(),
            "augur {args:?} failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// `augur trials STUDY --json`.
    pub fn trials(&self, study: &str) -> Vec<Value> {
        let out = self.augur(&["trials", study, "--json"]);
        assert!(
            out.status.success(),
            "augur trials failed: {}",
            text(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout).expect("trials json") {
            Value::Array(a) => a,
            other => panic!("not an array: {other}"),
        }
    }

    /// `augur trials STUDY --json`, or `None` while the study is not recorded yet.
    pub fn try_trials(&self, study: &str) -> Option<Vec<Value>> {
        let out = self.augur(&["trials", study, "--json"]);
        if !out.status.success() {
            return None;
        }
        match serde_json::from_slice(&out.stdout).ok()? {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Polls until `n` trials of `study` are running.
    pub fn wait_running(&self, study: &str, n: usize, limit: Duration) {
        wait_for(limit, &format!("{n} running trial(s) of {study}"), || {
            let t = self.try_trials(study)?;
            (t.iter().filter(|t| t["state"] == "running").count() >= n).then_some(())
        })
    }

    /// `augur show STUDY/ID --json`.
    pub fn show(&self, study: &str, id: u64) -> Value {
        let out = self.augur(&["show", &format!("{study}/{id}"), "--json"]);
        assert!(
            out.status.success(),
            "augur show failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("show json")
    }
}

/// Asserts that a command succeeded, showing its exit code and output otherwise.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Asserts that a command exited with `code`, showing its output otherwise.
pub fn exits(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child to exit, killing it and panicking after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal to a process.
/// Runs `cmd` to its end under GNU time: its output, and its peak resident memory
/// in KB, if `/usr/bin/time` is there. (`wait4`'s own figure will not do: a child's
/// high-water mark starts at its parent's size when it forked, and a test process
/// is large.)
pub fn output_and_peak(cmd: &Command) -> (Output, Option<u64>) {
    let time = Path::new("/usr/bin/time");
    let report = tempfile::NamedTempFile::new().expect("tmp");
    let mut timed = if time.is_file() {
        let mut t = Command::new(time);
        t.args(["-f", "%M", "-o"])
            .arg(report.path())
            .arg(cmd.get_program());
        t
    } else {
        Command::new(cmd.get_program())
    };
    timed.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        timed.current_dir(d);
    }
    let out = timed.stdin(Stdio::null()).output().expect("run");
    let kb = std::fs::read_to_string(report.path())
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()));
    (out, kb)
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain integers; no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The trials' states, in id order.
pub fn states(trials: &[Value]) -> Vec<String> {
    trials
        .iter()
        .map(|t| t["state"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Fast timing for tests: heartbeats and backoff in milliseconds.
pub const FAST: [&str; 6] = [
    "--heartbeat",
    "200ms",
    "--heartbeat-timeout",
    "3s",
    "--backoff-base",
    "50ms",
];

/// `GET path` over plain HTTP/1.1 (the status server), read to the end of the body:
/// (status, content type, body). Chunked bodies are decoded.
pub fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let (status, headers, body) = http_request(addr, path, &[("Host", addr)]);
    let ctype = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    (status, ctype, body)
}

/// `GET path` with these request headers (give `Host` yourself): (status, response
/// headers, body).
pub fn http_request(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the status server");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(s, "GET {path} HTTP/1.1\r\n{extra}Connection: close\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let got: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let header = |name: &str| {
        got.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n).unwrap_or(after));
            rest = after.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_string()
    };
    (status, got, body)
}

/// Reads a spawned `augur` command's stderr until a line names the status server's
/// address (`http://ADDR/...`), then keeps draining it so the child never blocks.
pub fn server_addr(child: &mut Child) -> String {
    server_url(child)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Like [`server_addr`], the whole URL after `http://` (`ADDR/path?query`).
pub fn server_url(child: &mut Child) -> String {
    use std::io::BufRead;
    let err = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(err).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("a line naming the address")
            .expect("read");
        if let Some(rest) = line.split("http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    url
}

/// Whether process `pid` has a child (its parent pid, the fourth field of
/// `/proc/PID/stat`, after the command's closing parenthesis).
pub fn has_child(pid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
            let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
            after.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
    })
}
