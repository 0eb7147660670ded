//! A fault-injecting HTTP proxy between an AWS SDK client and the emulator, for retry
//! tests: deterministic rules ("the first 3 RunInstances answer throttling", "every
//! 5th DynamoDB call answers 500", "drop the connection after the request was
//! applied", "add 2 s of latency"), and a record of every call for cost figures.
//!
//! One request per client connection (the proxy answers `Connection: close`), which
//! the SDK handles by reconnecting.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::standin::Ec2Standin;

/// What to do to a matching call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Answer the service's throttling error (nothing reaches the emulator).
    Throttle,
    /// Answer HTTP 500 (nothing reaches the emulator).
    ServerError,
    /// Forward the call (it is applied), then close the connection without an answer.
    DropAfterApply,
    /// Forward the call after a delay.
    Latency(Duration),
    /// Close the connection without forwarding (the service is unreachable).
    Refuse,
    /// Forward the call (it is applied), then answer HTTP 500: the caller retries
    /// something that was done (EC2 and DynamoDB document both as possible).
    ServerErrorAfterApply,
    /// Forward the call (it is applied), then hold the answer this long: a caller
    /// killed meanwhile never learns what it did.
    HoldAfterApply(Duration),
    /// DynamoDB `TransactWriteItems`: cancel the transaction (nothing reaches the
    /// emulator) with this reason for its last item and `None` for the others
    /// ([`crate::standin::cancelled`]).
    Cancel(&'static str),
    /// DynamoDB `BatchGetItem` / `BatchWriteItem`: process nothing and answer every
    /// item unprocessed, as DynamoDB does when it throttles a batch's items
    /// ([`crate::standin::unprocessed`]).
    Unprocessed,
}

/// Which calls a rule applies to, and how many times.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `dynamodb`, `ec2`, `logs`, `s3`, or `*`.
    pub service: String,
    /// Operation name (`PutItem`, `RunInstances`), or `*`.
    pub operation: String,
    pub fault: Fault,
    /// Apply to every `every`-th matching call (1: all of them)...
    pub every: u32,
    /// ...at most this many times.
    pub times: u32,
    /// Only calls whose request body holds each of these.
    pub body_holds: Vec<String>,
    /// Only calls whose request path (URL, path-style S3: `/bucket/key`) holds each
    /// of these.
    pub path_holds: Vec<String>,
    /// Only calls of agents on instances (`Some(true)`: their role's session token)
    /// or only the others (`Some(false)`).
    pub workers: Option<bool>,
    seen: u32,
}

impl Rule {
    pub fn new(service: &str, operation: &str, fault: Fault) -> Rule {
        Rule {
            service: service.into(),
            operation: operation.into(),
            fault,
            every: 1,
            times: u32::MAX,
            body_holds: Vec::new(),
            path_holds: Vec::new(),
            workers: None,
            seen: 0,
        }
    }
    /// Only calls whose request body holds `text` (with the rules' other
    /// conditions; several: all of them).
    pub fn when(mut self, text: &str) -> Rule {
        self.body_holds.push(text.to_string());
        self
    }
    /// Only calls whose request path holds `text` (an S3 key's prefix, say).
    pub fn on_path(mut self, text: &str) -> Rule {
        self.path_holds.push(text.to_string());
        self
    }
    /// Only the calls of agents on instances (`true`), or only the others.
    pub fn workers(mut self, only: bool) -> Rule {
        self.workers = Some(only);
        self
    }
    /// Only the first `n` matching calls.
    pub fn first(mut self, n: u32) -> Rule {
        self.times = n;
        self
    }
    /// Every `n`-th matching call.
    pub fn every(mut self, n: u32) -> Rule {
        self.every = n.max(1);
        self
    }
}

/// One call through the proxy.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub service: String,
    pub operation: String,
    pub fault: Option<Fault>,
    /// The caller's session token: role credentials carry one (the stand-in's
    /// instance role: `standin-session`), augur's static test keys none.
    pub session: Option<String>,
    /// DynamoDB: the partition keys the call names (`dynamodb:LeadingKeys`).
    pub partitions: Vec<String>,
    /// Refused by IAM, when the proxy enforces it ([`FaultProxy::enforce`]).
    pub denied: Option<crate::iam::enforce::Denial>,
}

struct Shared {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Call>>,
    upstream: String,
    stop: AtomicBool,
    ec2: Ec2Standin,
    dynamo: crate::standin::DynamoStandin,
    iam: std::sync::OnceLock<crate::iam::enforce::Enforcer>,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    pub endpoint: String,
    port: u16,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port, forwarding to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let shared = Arc::new(Shared {
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            upstream,
            stop: AtomicBool::new(false),
            ec2: Ec2Standin::default(),
            dynamo: Default::default(),
            iam: std::sync::OnceLock::new(),
        });
        let (s, stop) = (shared.clone(), shared.clone());
        accept_each(
            listener,
            move || stop.stop.load(Ordering::SeqCst),
            move |c| {
                let _ = serve(&s, c);
            },
        );
        FaultProxy {
            shared,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    pub fn add(&self, rule: Rule) {
        if let Ok(mut r) = self.shared.rules.lock() {
            r.push(rule);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut r) = self.shared.rules.lock() {
            r.clear();
        }
    }

    /// EC2 as AWS documents it: token memory, state reasons, capacity.
    pub fn ec2(&self) -> &Ec2Standin {
        &self.shared.ec2
    }

    /// From now on, every request is evaluated against the policies of the
    /// identity it runs under, and refused as AWS refuses it when they do not allow
    /// it ([`crate::iam::enforce`]).
    pub fn enforce(&self, e: crate::iam::enforce::Enforcer) {
        let _ = self.shared.iam.set(e);
    }

    /// IAM as enforced, if it is.
    pub fn iam(&self) -> Option<&crate::iam::enforce::Enforcer> {
        self.shared.iam.get()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Calls of one service (and operation, or `*`).
    pub fn count(&self, service: &str, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.service == service && (operation == "*" || c.operation == operation))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves each connection of `listener` on a thread of its own with `handle`, until
/// `stopped()` says so (it is asked at each connection: connect once to wake it).
pub fn accept_each<S, H>(listener: TcpListener, stopped: S, handle: H)
where
    S: Fn() -> bool + Send + 'static,
    H: Fn(TcpStream) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stopped() {
                break;
            }
            if let Ok(c) = conn {
                let h = handle.clone();
                std::thread::spawn(move || h(c));
            }
        }
    });
}

/// Reads one HTTP request: head lines and body (Content-Length).
pub fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let len = head
        .iter()
        .find_map(|h| {
            h.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((head, body))
}

/// A header's value, by its name in any case.
pub fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().find_map(|h| {
        h.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

/// The partition keys (`pk`) a DynamoDB request names: its key or item, a query's
/// `:pk`, each item of a batch or a transaction.
fn partitions(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut items: Vec<&serde_json::Value> = vec![&v["Key"], &v["Item"]];
    items.push(&v["ExpressionAttributeValues"][":pk"]);
    for t in v["TransactItems"].as_array().into_iter().flatten() {
        for kind in ["Put", "Update", "Delete", "ConditionCheck"] {
            items.push(&t[kind]["Item"]);
            items.push(&t[kind]["Key"]);
        }
    }
    for reqs in v["RequestItems"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
    {
        for r in reqs.as_array().into_iter().flatten() {
            items.push(&r["PutRequest"]["Item"]);
            items.push(&r["DeleteRequest"]["Key"]);
        }
    }
    items
        .into_iter()
        .filter_map(|i| i["pk"]["S"].as_str().or_else(|| i["S"].as_str()))
        .map(String::from)
        .collect()
}

/// (service, operation) of a request.
fn classify(head: &[String], body: &[u8]) -> (String, String) {
    if let Some(t) = header(head, "x-amz-target") {
        let (prefix, op) = t.split_once('.').unwrap_or((t, ""));
        let service = if prefix.starts_with("DynamoDB") {
            "dynamodb"
        } else if prefix.starts_with("Logs") {
            "logs"
        } else {
            prefix
        };
        return (service.to_string(), op.to_string());
    }
    let text = String::from_utf8_lossy(body);
    if let Some(action) = text.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
        // The Query protocol's services (EC2, STS) by the signature's scope.
        let scope = header(head, "authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("ec2");
        let service = match scope {
            "sts" | "iam" => scope,
            _ => "ec2",
        };
        return (service.to_string(), action.to_string());
    }
    let method = head
        .first()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?");
    ("s3".to_string(), method.to_string())
}

fn pick(
    s: &Shared,
    (service, operation): (&str, &str),
    head: &[String],
    body: &[u8],
) -> Option<Fault> {
    let path = head
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    let worker = header(head, "x-amz-security-token").is_some();
    let mut rules = s.rules.lock().ok()?;
    let text = String::from_utf8_lossy(body);
    for r in rules.iter_mut() {
        if (r.service == "*" || r.service == service)
            && (r.operation == "*" || r.operation == operation)
            && r.times > 0
            && r.body_holds.iter().all(|h| text.contains(h.as_str()))
            && r.path_holds.iter().all(|p| path.contains(p.as_str()))
            && r.workers.is_none_or(|w| w == worker)
        {
            r.seen += 1;
            if r.seen.is_multiple_of(r.every) {
                r.times -= 1;
                return Some(r.fault);
            }
        }
    }
    None
}

fn error_response(service: &str, fault: Fault) -> Vec<u8> {
    let (status, ctype, body) = match (service, fault) {
        ("ec2", Fault::Throttle) => (503, "text/xml", "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>".to_string()),
        ("ec2", _) => (500, "text/xml", "<Response><Errors><Error><Code>InternalError</Code><Message>injected</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>".to_string()),
        (_, Fault::Throttle) => (400, "application/x-amz-json-1.0", r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#.to_string()),
        _ => (500, "application/x-amz-json-1.0", r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}"#.to_string()),
    };
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nx-amzn-RequestId: fault-proxy\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn forward(s: &Shared, head: &[String], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(&s.upstream)?;
    let mut req = Vec::new();
    for (i, h) in head.iter().enumerate() {
        if i > 0
            && h.split_once(':')
                .is_some_and(|(k, _)| k.eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        req.extend_from_slice(h.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    req.extend_from_slice(body);
    up.write_all(&req)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    Ok(resp)
}

/// The answer to a call that reaches the emulator, whatever becomes of it on the way
/// back (a delay, a dropped connection, a caller killed meanwhile): what it applied
/// is learned by IAM's stand-in (the tags of the instances it launched).
fn answer(s: &Shared, op: (&str, &str), head: &[String], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let answered = reply(s, op, head, body)?;
    if let Some(iam) = s.iam.get() {
        iam.learn(op.1, body, &answered);
    }
    Ok(answered)
}

/// EC2's launches and listings through the stand-in, the rest as the emulator gives
/// it.
fn reply(s: &Shared, op: (&str, &str), head: &[String], body: &[u8]) -> std::io::Result<Vec<u8>> {
    match op {
        ("ec2", "RunInstances") => s.ec2.run_instances(body, || forward(s, head, body)),
        ("ec2", "DescribeInstances") => Ok(s.ec2.describe_instances(forward(s, head, body)?)),
        ("ec2", "DescribeSpotPriceHistory") => match s.ec2.spot_price_history(body) {
            Some(answer) => Ok(answer),
            None => forward(s, head, body),
        },
        ("AWSPriceListService", "GetProducts") => Ok(s.ec2.get_products(body)),
        ("sts", "DecodeAuthorizationMessage") => Ok(crate::iam::enforce::decoded_answer(body)),
        ("sts", "GetCallerIdentity") => {
            match s.iam.get().and(crate::iam::enforce::caller_answer(head)) {
                Some(answer) => Ok(answer),
                None => forward(s, head, body),
            }
        }
        ("iam", "SimulatePrincipalPolicy") => match s.iam.get() {
            Some(iam) => Ok(iam.simulate(body)),
            None => forward(s, head, body),
        },
        ("dynamodb", "TransactWriteItems") => s
            .dynamo
            .transact_write_items(body, || forward(s, head, body)),
        ("dynamodb", "PutItem" | "UpdateItem" | "DeleteItem") => {
            s.dynamo.write(|| forward(s, head, body))
        }
        _ => forward(s, head, body),
    }
}

/// `POST /__standin/ended?id=ID&code=CODE`: the hypervisor reports how an instance
/// ended.
fn control(s: &Shared, path: &str) -> Vec<u8> {
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params = crate::standin::form(query.as_bytes());
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let (Some(id), Some(code)) = (get("id"), get("code")) {
        s.ec2.ended(id, code);
    }
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
}

fn serve(s: &Shared, conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let (head, body) = read_request(&mut reader)?;
    let path = head
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if path.starts_with("/__standin/") {
        return out.write_all(&control(s, path));
    }
    let (service, operation) = classify(&head, &body);
    let denied = match s.iam.get() {
        Some(iam) => iam.check(&service, &operation, &head, &body).err(),
        None => None,
    };
    let fault = match denied {
        Some(_) => None,
        None => pick(s, (&service, &operation), &head, &body),
    };
    if let Ok(mut c) = s.calls.lock() {
        c.push(Call {
            at: Instant::now(),
            service: service.clone(),
            operation: operation.clone(),
            fault,
            session: header(&head, "x-amz-security-token").map(String::from),
            partitions: if service == "dynamodb" {
                partitions(&body)
            } else {
                Vec::new()
            },
            denied: denied.clone(),
        });
    }
    if let Some(d) = denied {
        return out.write_all(&crate::iam::enforce::denied_answer(&service, &d));
    }
    let op = (service.as_str(), operation.as_str());
    match fault {
        Some(f @ (Fault::Throttle | Fault::ServerError)) => {
            out.write_all(&error_response(&service, f))
        }
        Some(Fault::DropAfterApply) => {
            answer(s, op, &head, &body)?;
            out.shutdown(std::net::Shutdown::Both)
        }
        Some(Fault::Refuse) => out.shutdown(std::net::Shutdown::Both),
        Some(Fault::ServerErrorAfterApply) => {
            answer(s, op, &head, &body)?;
            out.write_all(&error_response(&service, Fault::ServerError))
        }
        Some(Fault::HoldAfterApply(d)) => {
            let answered = answer(s, op, &head, &body)?;
            std::thread::sleep(d);
            out.write_all(&answered)
        }
        Some(Fault::Cancel(reason)) => out.write_all(&crate::standin::cancelled(&body, reason)),
        Some(Fault::Unprocessed) => out.write_all(&crate::standin::unprocessed(&body)),
        Some(Fault::Latency(d)) => {
            std::thread::sleep(d);
            out.write_all(&answer(s, op, &head, &body)?)
        }
        None => out.write_all(&answer(s, op, &head, &body)?),
    }
}
