//! A stand-in for one instance's metadata service (IMDSv2), on a port of its own:
//! what the SDKs and the AWS CLI read on an instance, reached through their standard
//! endpoint override (`AWS_EC2_METADATA_SERVICE_ENDPOINT`).
//!
//! As EC2 documents it (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html>):
//! a session token from `PUT /latest/api/token` is required (the instances are
//! launched with `HttpTokens=required`; a call without it gets 401); the
//! instance-id, the region, the instance role's credentials; and
//! `spot/instance-action`, 404 until a reclaim is announced, then
//! `{"action": "terminate", "time": ...}` two minutes (here: `--spot-notice-ms`)
//! before the instance goes (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html>).

use augur_tests::faults;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

const TOKEN: &str = "standin-imds-token";
/// The instance role's name, as an instance profile would give it.
const ROLE: &str = "augur-worker";

struct State {
    instance_id: String,
    region: String,
    /// The `spot/instance-action` document, once a reclaim is announced.
    notice: Mutex<Option<String>>,
    stop: AtomicBool,
}

/// One instance's metadata service; stops when dropped.
pub struct Imds {
    state: Arc<State>,
    pub endpoint: String,
    port: u16,
}

impl Imds {
    pub fn start(instance_id: &str, region: &str) -> std::io::Result<Imds> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            instance_id: instance_id.into(),
            region: region.into(),
            notice: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let (s, stop) = (state.clone(), state.clone());
        faults::accept_each(
            listener,
            move || stop.stop.load(Ordering::SeqCst),
            move |c| {
                let _ = serve(&s, c);
            },
        );
        Ok(Imds {
            state,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        })
    }

    /// Announces the reclaim: the instance goes at `at`.
    pub fn announce_reclaim(&self, at: SystemTime) {
        let doc = format!(
            "{{\"action\": \"terminate\", \"time\": \"{}\"}}",
            humantime::format_rfc3339_seconds(at)
        );
        if let Ok(mut n) = self.state.notice.lock() {
            *n = Some(doc);
        }
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(s: &State, conn: TcpStream) -> std::io::Result<()> {
    let (head, _) = faults::read_request(&mut BufReader::new(conn.try_clone()?))?;
    let mut words = head
        .first()
        .map(|l| l.split_whitespace())
        .into_iter()
        .flatten();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let token = faults::header(&head, "x-aws-ec2-metadata-token");
    let (status, body) = answer(s, method, path, token);
    // A token's answer says how long it lives (the SDKs require it).
    let ttl = if method == "PUT" {
        "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"
    } else {
        ""
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\n{ttl}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    )
}

fn answer(s: &State, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    if method == "PUT" && path == "/latest/api/token" {
        return (200, TOKEN.into());
    }
    if token != Some(TOKEN) {
        return (401, String::new());
    }
    let found = |v: String| (200, v);
    match path.trim_end_matches('/') {
        "/latest/meta-data/instance-id" => found(s.instance_id.clone()),
        "/latest/meta-data/placement/region" => found(s.region.clone()),
        "/latest/meta-data/placement/availability-zone" => found(format!("{}a", s.region)),
        "/latest/meta-data/iam/security-credentials" => found(ROLE.into()),
        p if p == format!("/latest/meta-data/iam/security-credentials/{ROLE}") => {
            found(credentials())
        }
        "/latest/meta-data/spot/instance-action" => {
            match s.notice.lock().ok().and_then(|n| n.clone()) {
                Some(doc) => found(doc),
                None => (404, String::new()),
            }
        }
        _ => (404, String::new()),
    }
}

/// The instance role's credentials (the emulator takes any).
fn credentials() -> String {
    let now = SystemTime::now();
    let later = now + std::time::Duration::from_secs(6 * 3600);
    format!(
        "{{\"Code\": \"Success\", \"LastUpdated\": \"{}\", \"Type\": \"AWS-HMAC\", \"AccessKeyId\": \"test\", \"SecretAccessKey\": \"test\", \"Token\": \"standin-session\", \"Expiration\": \"{}\"}}",
        humantime::format_rfc3339_seconds(now),
        humantime::format_rfc3339_seconds(later)
    )
}
