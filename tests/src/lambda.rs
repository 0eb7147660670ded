//! A local stand-in for the AWS Lambda Runtime API (the HTTP interface a custom runtime
//! such as `augur-lambda` polls for invocations), so that the real function binary
//! runs as it would on Lambda: it asks for the next event, gets a request id and a
//! deadline, and posts a response or an error. Invocations are queued by the test; any
//! number of function processes may poll at once (concurrent Lambda instances).

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct Inner {
    queue: Mutex<VecDeque<(String, Value, u64)>>,
    queued: Condvar,
    results: Mutex<HashMap<String, Result<Value, String>>>,
    answered: Condvar,
    next_id: AtomicU64,
}

/// The runtime API on 127.0.0.1; its address goes in `AWS_LAMBDA_RUNTIME_API`.
pub struct RuntimeApi {
    pub addr: String,
    inner: Arc<Inner>,
}

impl Default for RuntimeApi {
    fn default() -> Self {
        Self::start()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RuntimeApi {
    pub fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind runtime api");
        let addr = listener.local_addr().expect("addr").to_string();
        let inner = Arc::new(Inner::default());
        let shared = inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let inner = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &inner);
                });
            }
        });
        RuntimeApi { addr, inner }
    }

    /// Queues an invocation with `timeout` to run; returns its request id.
    pub fn invoke_async(&self, event: Value, timeout: Duration) -> String {
        let id = format!(
            "req-{}",
            self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1
        );
        let deadline = now_ms() + timeout.as_millis() as u64;
        let mut q = self.inner.queue.lock().expect("queue");
        q.push_back((id.clone(), event, deadline));
        self.inner.queued.notify_all();
        id
    }

    /// Waits for an invocation's answer: the response, or the function's error.
    /// Panics after `limit`.
    pub fn wait(&self, id: &str, limit: Duration) -> Result<Value, String> {
        let start = Instant::now();
        let mut results = self.inner.results.lock().expect("results");
        loop {
            if let Some(r) = results.remove(id) {
                return r;
            }
            let left = limit.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "invocation {id} unanswered after {limit:?}"
            );
            results = self
                .inner
                .answered
                .wait_timeout(results, left)
                .expect("results")
                .0;
        }
    }

    /// One invocation, to its answer.
    pub fn invoke(&self, event: Value, timeout: Duration) -> Result<Value, String> {
        let id = self.invoke_async(event, timeout);
        self.wait(&id, timeout + Duration::from_secs(30))
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = v.parse().unwrap_or(0);
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(Request { method, path, body }))
}

fn respond(
    w: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn serve(conn: TcpStream, inner: &Inner) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r)? {
        let path = req.path.trim_start_matches("/2018-06-01/runtime");
        if req.method == "GET" && path == "/invocation/next" {
            let (id, event, deadline) = {
                let mut q = inner.queue.lock().expect("queue");
                loop {
                    if let Some(e) = q.pop_front() {
                        break e;
                    }
                    q = inner.queued.wait(q).expect("queue");
                }
            };
            let body = serde_json::to_vec(&event).unwrap_or_default();
            respond(
                &mut w,
                "200 OK",
                &[
                    ("content-type", "application/json".into()),
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:augur-tick".into(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000".into(),
                    ),
                ],
                &body,
            )?;
            continue;
        }
        let answer = path
            .strip_prefix("/invocation/")
            .and_then(|p| p.rsplit_once('/'))
            .filter(|_| req.method == "POST");
        match answer {
            Some((id, kind @ ("response" | "error"))) => {
                let result = if kind == "response" {
                    serde_json::from_slice(&req.body)
                        .map_err(|e| format!("response is not JSON: {e}"))
                } else {
                    Err(String::from_utf8_lossy(&req.body).into_owned())
                };
                inner
                    .results
                    .lock()
                    .expect("results")
                    .insert(id.to_string(), result);
                inner.answered.notify_all();
                respond(&mut w, "202 Accepted", &[], b"{\"status\":\"OK\"}")?;
            }
            _ if req.method == "POST" && path == "/init/error" => {
                eprintln!(
                    "function init error: {}",
                    String::from_utf8_lossy(&req.body)
                );
                respond(&mut w, "202 Accepted", &[], b"{\"status\":\"OK\"}")?;
            }
            _ => respond(&mut w, "404 Not Found", &[], b"")?,
        }
    }
    Ok(())
}
