//! The local AWS emulator for tests: moto's server on 127.0.0.1, started and stopped
//! by the test itself, through `tests/emulator/moto_server.py` (which applies an
//! `AWS::S3::Bucket`'s versioning and lifecycle rules, as CloudFormation does and
//! moto does not). With `AUGUR_TEST_AWS_ENDPOINT` set, tests use that endpoint
//! instead (a LocalStack container, or real AWS) and nothing is started.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable that points the tests at an existing endpoint.
pub const ENDPOINT_VAR: &str = "AUGUR_TEST_AWS_ENDPOINT";

/// A running emulator (or an external endpoint).
pub struct Emulator {
    child: Option<Child>,
    pub endpoint: String,
}

fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("AUGUR_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    let cache = std::env::var_os("AUGUR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/augur"));
    cache.join("moto-5.2.5/bin/moto_server")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal HTTP request to `127.0.0.1:port`; the status code.
pub fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

impl Emulator {
    /// Starts moto's server (installed by `scripts/emulator.sh`), or uses
    /// `AUGUR_TEST_AWS_ENDPOINT`.
    pub fn start() -> Emulator {
        if let Ok(e) = std::env::var(ENDPOINT_VAR) {
            if !e.is_empty() {
                return Emulator {
                    child: None,
                    endpoint: e,
                };
            }
        }
        let server = moto_server();
        assert!(
            server.is_file(),
            "the AWS emulator is not installed at {}: run scripts/emulator.sh (scripts/test.sh does), or set {ENDPOINT_VAR}",
            server.display()
        );
        let port = free_port();
        let mut cmd = match server.with_file_name("python3") {
            python if python.is_file() && std::env::var_os("AUGUR_MOTO_SERVER").is_none() => {
                let mut c = Command::new(python);
                c.arg(crate::repo().join("tests/emulator/moto_server.py"));
                c
            }
            _ => Command::new(&server),
        };
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut emu = Emulator {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while http(port, "GET", "/moto-api/") != Some(200) {
            if let Some(c) = &mut emu.child {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("moto_server exited at start: {status}");
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto_server did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        emu
    }

    /// The port of a local emulator.
    pub fn port(&self) -> Option<u16> {
        self.endpoint.rsplit(':').next()?.parse().ok()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
