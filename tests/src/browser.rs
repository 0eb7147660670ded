//! Chromium driven through its DevTools protocol over a pipe
//! (`--remote-debugging-pipe`: commands on the browser's fd 3, replies and events on
//! its fd 4, each a JSON text ended by a NUL byte), so a test opens a page, waits for
//! what its script draws, evaluates code in it and sees every request that failed,
//! with no port and no client library.
//!
//! Protocol: <https://chromedevtools.github.io/devtools-protocol/> (Target,
//! Page, Runtime and Network domains).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// How long one reply may take: a cap for a hung browser, far above what a busy
/// machine needs (a reply is awaited as an event, not slept for).
const REPLY: Duration = Duration::from_secs(180);

/// A headless Chromium with one page open.
pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next: u64,
    session: String,
    /// Requests that failed (an HTTP status of 400 or more, or no answer), as
    /// "STATUS URL", since the last [`Browser::open`].
    pub failed: Vec<String>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two new descriptors into the array, owned from here on.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile, and opens a blank page.
    pub fn start(chromium: &str) -> Browser {
        use std::os::fd::AsRawFd;
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        let profile = tempfile::tempdir().expect("profile dir");
        let (r, w) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1280,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .env("HOME", std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        // Both ends are first moved above 10, so placing them on 3 and 4 cannot
        // overwrite one with the other; dup2 leaves the copies open across exec.
        unsafe {
            command.pre_exec(move || {
                let hr = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let hw = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if hr < 0 || hw < 0 || libc::dup2(hr, 3) < 0 || libc::dup2(hw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop((cmd_read, out_write));
        let (tx, from) = channel();
        let reader = std::fs::File::from(out_read);
        std::thread::spawn(move || {
            let _profile = profile;
            let mut lines = BufReader::new(reader);
            let mut buf = Vec::new();
            while matches!(lines.read_until(0, &mut buf), Ok(n) if n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(cmd_write),
            from,
            next: 0,
            session: String::new(),
            failed: Vec::new(),
        };
        let target = b.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = b.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        b.call("Page.enable", json!({}));
        b.call("Network.enable", json!({}));
        b
    }

    /// Sends a command (to the page once attached) and returns its result, noting
    /// the events that arrive meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let v = self.event();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// The next message from the browser, with failed requests noted.
    fn event(&mut self) -> Value {
        let v = self
            .from
            .recv_timeout(REPLY)
            .expect("chromium answers (or it ended)");
        match v["method"].as_str() {
            Some("Network.responseReceived") => {
                let r = &v["params"]["response"];
                if r["status"].as_u64().is_some_and(|s| s >= 400) {
                    self.failed.push(format!("{} {}", r["status"], r["url"]));
                }
            }
            Some("Network.loadingFailed") => {
                let p = &v["params"];
                self.failed
                    .push(format!("{} request {}", p["errorText"], p["requestId"]));
            }
            _ => {}
        }
        v
    }

    /// Opens `url` and waits for its load event.
    pub fn open(&mut self, url: &str) {
        self.failed.clear();
        self.call("Page.navigate", json!({ "url": url }));
        while self.event()["method"] != "Page.loadEventFired" {}
    }

    /// Evaluates `expression` in the page (a promise is awaited), returning its value.
    /// DevTools evaluation is not bound by the page's Content-Security-Policy.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "evaluating in the page: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `condition` (an expression) is true in the page, checking it at
    /// each animation frame: the page's own events (a fetch answered, a chart drawn).
    pub fn wait_for(&mut self, condition: &str) {
        self.eval(&format!(
            "new Promise((done) => {{ const f = () => ({condition}) ? done(true) : setTimeout(f, 50); f(); }})"
        ));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
