//! EC2 as AWS documents it, where the emulator is kinder: played by the fault proxy
//! on the EC2 calls that pass through it.
//!
//! - **ClientToken idempotency.** "If you repeat a request with the same client token
//!   and the same parameters, the API returns the same result"; with other
//!   parameters it answers `IdempotentParameterMismatch`; a token stays in force after
//!   the instance it launched has terminated
//!   (<https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html>).
//!   moto launches a new instance for every call.
//! - **State reasons.** An instance ended by a spot reclaim reports
//!   `Server.SpotInstanceTermination`, one that powered itself off
//!   `Client.InstanceInitiatedShutdown`, one ended by `TerminateInstances`
//!   `Client.UserInitiatedShutdown`
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StateReason.html>).
//!   moto gives every ended instance the last one; the fake hypervisor tells the
//!   proxy how each instance it ended did end (`POST /__standin/ended`), and the
//!   proxy writes that reason into `DescribeInstances` answers.
//! - **Capacity.** `InsufficientInstanceCapacity` (HTTP 500) for an instance type
//!   and/or subnet during a window
//!   (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/troubleshooting-launch.html#troubleshooting-launch-capacity>).
//! - **Prices.** `DescribeSpotPriceHistory` answers the price a test set for an
//!   instance type (moto answers $0.00001 for every type), and the Price List API's
//!   `GetProducts` (which moto lacks) a product document with the on-demand price
//!   set, in the shape AWS documents
//!   (<https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_pricing_GetProducts.html>),
//!   or no product when none was set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A capacity drought: RunInstances for this type and/or subnet (`None`: any)
/// answers `InsufficientInstanceCapacity` until `until`.
#[derive(Clone, Debug)]
pub struct Drought {
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub until: Instant,
}

impl Drought {
    /// Every launch, for `d` from now.
    pub fn everywhere(d: Duration) -> Drought {
        Drought {
            instance_type: None,
            subnet: None,
            until: Instant::now() + d,
        }
    }

    /// Launches of one instance type, for `d` from now.
    pub fn of_type(ty: &str, d: Duration) -> Drought {
        Drought {
            instance_type: Some(ty.into()),
            ..Drought::everywhere(d)
        }
    }

    fn covers(&self, ty: Option<&str>, subnet: Option<&str>) -> bool {
        self.until > Instant::now()
            && self.instance_type.as_deref().is_none_or(|t| Some(t) == ty)
            && self.subnet.as_deref().is_none_or(|s| Some(s) == subnet)
    }
}

/// What the stand-in remembers.
#[derive(Default)]
pub struct Ec2Standin {
    /// ClientToken → (the call's other parameters, the first answer).
    tokens: Mutex<HashMap<String, (String, Vec<u8>)>>,
    /// Instance id → (state-reason code, message), as the hypervisor reported.
    reasons: Mutex<HashMap<String, (String, String)>>,
    droughts: Mutex<Vec<Drought>>,
    /// The parameters of each RunInstances call that launched, as EC2 got them.
    launches: Mutex<Vec<Vec<(String, String)>>>,
    /// RunInstances calls are answered one at a time (a token's first answer is
    /// recorded before a repeat of it is looked at).
    launching: Mutex<()>,
    /// Instance type → (spot, on-demand) USD per hour, as a test set them.
    prices: Mutex<HashMap<String, Price>>,
}

/// (spot, on-demand) USD per hour; `None`: not set.
type Price = (Option<f64>, Option<f64>);

/// DynamoDB as its API documents it where the emulator is kinder: a
/// `TransactWriteItems` repeated with the `ClientRequestToken` of one already
/// applied succeeds again without applying twice (another call under the same token
/// is `IdempotentParameterMismatchException`),
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html>.
/// The SDK sends a token with each call and keeps it across its retries.
///
/// And a conditional write is checked and applied as one step: two writers
/// conditioned on the same version cannot both succeed (optimistic locking,
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/WorkingWithItems.html#WorkingWithItems.ConditionalUpdate>).
/// moto 5.2.5 checks and writes apart: 8 threads each making 50 conditional
/// increments of one item got 400 successes and a count of 398. So the stand-in
/// lets one item write through at a time ([`DynamoStandin::write`]).
#[derive(Default)]
pub struct DynamoStandin {
    /// ClientRequestToken → the call's body and its first answer.
    applied: Mutex<HashMap<String, Applied>>,
    /// Transactions are answered one at a time.
    one: Mutex<()>,
}

/// A transaction applied: its body and the answer it got.
type Applied = (Vec<u8>, Vec<u8>);

impl DynamoStandin {
    /// A `PutItem`, `UpdateItem` or `DeleteItem`, applied while no other write is.
    pub fn write(
        &self,
        forward: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> std::io::Result<Vec<u8>> {
        let _one = self.one.lock();
        forward()
    }

    pub fn transact_write_items(
        &self,
        body: &[u8],
        forward: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> std::io::Result<Vec<u8>> {
        let _one = self.one.lock();
        let token = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["ClientRequestToken"].as_str().map(String::from));
        let Some(token) = token else {
            return forward();
        };
        if let Some((was, answer)) = self
            .applied
            .lock()
            .ok()
            .and_then(|m| m.get(&token).cloned())
        {
            if was == body {
                return Ok(answer);
            }
            let msg = r#"{"__type":"com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException","message":"The request uses the same client token as a previous, but non-identical request."}"#;
            return Ok(format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                msg.len()
            )
            .into_bytes());
        }
        let answer = forward()?;
        if answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200") {
            if let Ok(mut m) = self.applied.lock() {
                m.insert(token, (body.to_vec(), answer.clone()));
            }
        }
        Ok(answer)
    }
}

/// A DynamoDB JSON answer.
fn dynamo_answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nx-amzn-RequestId: standin\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `TransactWriteItems` cancelled as DynamoDB documents it
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html>):
/// HTTP 400, `TransactionCanceledException`, one `CancellationReasons` entry per
/// item of the request in its order, `reason` for the last and `None` for the
/// others, the reasons also listed in the message.
pub fn cancelled(body: &[u8], reason: &str) -> Vec<u8> {
    let n = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["TransactItems"].as_array().map(Vec::len))
        .unwrap_or(1)
        .max(1);
    let codes: Vec<&str> = (0..n)
        .map(|i| if i + 1 == n { reason } else { "None" })
        .collect();
    let reasons: Vec<serde_json::Value> = codes
        .iter()
        .map(|c| match *c {
            "None" => serde_json::json!({ "Code": "None" }),
            c => serde_json::json!({ "Code": c, "Message": format!("injected {c}") }),
        })
        .collect();
    let answer = serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        "CancellationReasons": reasons,
    });
    dynamo_answer("400 Bad Request", &answer.to_string())
}

/// A `BatchGetItem` or `BatchWriteItem` that processed nothing: every key or
/// request of the call is answered back unprocessed (`UnprocessedKeys`,
/// `UnprocessedItems`), which DynamoDB does when the table's items are throttled
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html>).
pub fn unprocessed(body: &[u8]) -> Vec<u8> {
    let asked = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|v| v["RequestItems"].clone())
        .unwrap_or_default();
    let reads = asked
        .as_object()
        .is_some_and(|o| o.values().any(|t| t.get("Keys").is_some()));
    let answer = if reads {
        let empty: serde_json::Map<String, serde_json::Value> = asked
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| (k.clone(), serde_json::json!([])))
            .collect();
        serde_json::json!({ "Responses": empty, "UnprocessedKeys": asked })
    } else {
        serde_json::json!({ "UnprocessedItems": asked })
    };
    dynamo_answer("200 OK", &answer.to_string())
}

/// The form parameters of an EC2 query call, decoded.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An EC2 error answer.
pub fn ec2_error(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>standin</RequestID></Response>"
    );
    format!(
        "HTTP/1.1 {status} Error\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Ec2Standin {
    /// Records how an instance ended (the hypervisor's report).
    pub fn ended(&self, id: &str, code: &str) {
        let message = match code {
            "Server.SpotInstanceTermination" => "Spot instance termination",
            "Client.InstanceInitiatedShutdown" => "Instance initiated shutdown",
            "Client.UserInitiatedShutdown" => "User initiated shutdown",
            _ => "ended",
        };
        if let Ok(mut r) = self.reasons.lock() {
            r.insert(id.to_string(), (code.into(), format!("{code}: {message}")));
        }
    }

    /// The prices EC2 and the Price List answer for `instance_type`.
    pub fn set_price(&self, instance_type: &str, spot: Option<f64>, on_demand: Option<f64>) {
        if let Ok(mut p) = self.prices.lock() {
            p.insert(instance_type.to_string(), (spot, on_demand));
        }
    }

    fn price(&self, instance_type: &str) -> Price {
        self.prices
            .lock()
            .ok()
            .and_then(|p| p.get(instance_type).copied())
            .unwrap_or_default()
    }

    /// A `DescribeSpotPriceHistory` answer with the set price of the type asked, in
    /// the zone asked; `None` (ask the emulator) when no price was set.
    pub fn spot_price_history(&self, body: &[u8]) -> Option<Vec<u8>> {
        let params = form(body);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let ty = get("InstanceType.1")?;
        let price = self.price(ty).0?;
        let zone = get("AvailabilityZone").unwrap_or("us-east-1a");
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeSpotPriceHistoryResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>standin</requestId><spotPriceHistorySet><item><instanceType>{ty}</instanceType><productDescription>Linux/UNIX</productDescription><spotPrice>{price:.6}</spotPrice><timestamp>2026-01-01T00:00:00.000Z</timestamp><availabilityZone>{zone}</availabilityZone></item></spotPriceHistorySet><nextToken/></DescribeSpotPriceHistoryResponse>"
        );
        Some(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    /// A Price List `GetProducts` answer: the on-demand price set for the
    /// `instanceType` filter, as one product document (a JSON string).
    pub fn get_products(&self, body: &[u8]) -> Vec<u8> {
        let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let ty = req["Filters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["Field"] == "instanceType")
            .and_then(|f| f["Value"].as_str())
            .unwrap_or_default();
        let docs: Vec<String> = self
            .price(ty)
            .1
            .map(|usd| {
                serde_json::json!({
                    "product": {"productFamily": "Compute Instance", "attributes": {"instanceType": ty, "operatingSystem": "Linux"}},
                    "terms": {"OnDemand": {"SKU.JRTCKXETXF": {"priceDimensions": {"SKU.JRTCKXETXF.6YS6EN2CT7": {
                        "unit": "Hrs", "pricePerUnit": {"USD": format!("{usd:.10}")}}}}}}
                })
                .to_string()
            })
            .into_iter()
            .collect();
        let body = serde_json::json!({"FormatVersion": "aws_v1", "PriceList": docs}).to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nx-amzn-RequestId: standin\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    pub fn add_drought(&self, d: Drought) {
        if let Ok(mut v) = self.droughts.lock() {
            v.push(d);
        }
    }

    /// The parameters of each RunInstances call that launched.
    pub fn launches(&self) -> Vec<Vec<(String, String)>> {
        self.launches.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How many ClientTokens the stand-in remembers.
    pub fn tokens(&self) -> usize {
        self.tokens.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The answer to a RunInstances call: the remembered one for a repeated token,
    /// a mismatch for a token reused with other parameters, a capacity error in a
    /// drought, else `forward()`'s (remembered under its token when it launched).
    pub fn run_instances(
        &self,
        body: &[u8],
        forward: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> std::io::Result<Vec<u8>> {
        let _one = self.launching.lock();
        let params = form(body);
        let token = params
            .iter()
            .find(|(k, _)| k == "ClientToken")
            .map(|(_, v)| v.clone());
        let mut rest: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "ClientToken")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        rest.sort();
        let rest = rest.join("&");
        if let Some(t) = &token {
            if let Some((was, answer)) = self.tokens.lock().ok().and_then(|m| m.get(t).cloned()) {
                if was == rest {
                    return Ok(answer);
                }
                return Ok(ec2_error(
                    400,
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that is already deleted or has different parameters.",
                ));
            }
        }
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (ty, subnet) = (get("InstanceType"), get("SubnetId"));
        let dry = self
            .droughts
            .lock()
            .is_ok_and(|v| v.iter().any(|d| d.covers(ty, subnet)));
        if dry {
            return Ok(ec2_error(
                500,
                "InsufficientInstanceCapacity",
                &format!(
                    "We currently do not have sufficient {} capacity in the Availability Zone you requested.",
                    ty.unwrap_or("instance")
                ),
            ));
        }
        let answer = forward()?;
        if answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200") {
            if let Ok(mut l) = self.launches.lock() {
                l.push(params.clone());
            }
            if let (Some(t), Ok(mut m)) = (token, self.tokens.lock()) {
                m.insert(t, (rest, answer.clone()));
            }
        }
        Ok(answer)
    }

    /// A DescribeInstances answer with each reported instance's state reason.
    pub fn describe_instances(&self, answer: Vec<u8>) -> Vec<u8> {
        let reasons = match self.reasons.lock() {
            Ok(r) if !r.is_empty() => r.clone(),
            _ => return answer,
        };
        let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            return answer;
        };
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let body = String::from_utf8_lossy(&answer[split + 4..]).into_owned();
        let body = with_reasons(&body, &reasons);
        let head: Vec<String> = head
            .lines()
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("content-length:") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_string()
                }
            })
            .collect();
        format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
    }
}

/// `body` with the `<stateReason>` of each instance in `reasons` replaced. In the
/// emulator's answers an instance's `<stateReason>` comes before its `<instanceId>`,
/// and each instance has one of each: the reason between two ids is the second's.
fn with_reasons(body: &str, reasons: &HashMap<String, (String, String)>) -> String {
    const ID: &str = "<instanceId>";
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(ID) {
        let (segment, tail) = rest.split_at(at);
        let id = tail[ID.len()..]
            .split('<')
            .next()
            .unwrap_or_default()
            .to_string();
        match reasons.get(&id) {
            Some((code, message)) => out.push_str(&replace_reason(segment, code, message)),
            None => out.push_str(segment),
        }
        out.push_str(ID);
        rest = &tail[ID.len()..];
    }
    out.push_str(rest);
    out
}

fn replace_reason(segment: &str, code: &str, message: &str) -> String {
    const OPEN: &str = "<stateReason>";
    const CLOSE: &str = "</stateReason>";
    let reason = format!("{OPEN}<code>{code}</code><message>{message}</message>{CLOSE}");
    match (segment.rfind(OPEN), segment.rfind(CLOSE)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{reason}{}", &segment[..a], &segment[b + CLOSE.len()..])
        }
        _ => format!("{segment}{reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_land_on_their_instance() {
        let body = "<item><stateReason><code>Client.UserInitiatedShutdown</code><message>x</message></stateReason><instanceId>i-1</instanceId></item>\
                    <item><stateReason><code/><message/></stateReason><instanceId>i-2</instanceId></item>";
        let mut r = HashMap::new();
        r.insert(
            "i-2".to_string(),
            (
                "Server.SpotInstanceTermination".to_string(),
                "m".to_string(),
            ),
        );
        let out = with_reasons(body, &r);
        assert!(out.contains("<code>Client.UserInitiatedShutdown</code><message>x</message></stateReason><instanceId>i-1"));
        assert!(out.contains("<code>Server.SpotInstanceTermination</code><message>m</message></stateReason><instanceId>i-2"));
    }

    #[test]
    fn a_repeated_token_gets_the_first_answer_and_other_parameters_a_mismatch() {
        let ec2 = Ec2Standin::default();
        let launch = b"Action=RunInstances&ClientToken=t1&InstanceType=t3.micro".as_slice();
        let first = ec2
            .run_instances(launch, || Ok(b"HTTP/1.1 200 OK\r\n\r\ni-1".to_vec()))
            .expect("first");
        let again = ec2
            .run_instances(launch, || panic!("a repeat must not launch again"))
            .expect("again");
        assert_eq!(again, first);
        let other = ec2
            .run_instances(
                b"Action=RunInstances&ClientToken=t1&InstanceType=t3.small",
                || panic!("a mismatch must not launch"),
            )
            .expect("other");
        assert!(String::from_utf8_lossy(&other).contains("IdempotentParameterMismatch"));
        // A failed launch is not remembered: the token may be used again.
        let failed = b"Action=RunInstances&ClientToken=t2".as_slice();
        ec2.run_instances(failed, || Ok(b"HTTP/1.1 500 Error\r\n\r\n".to_vec()))
            .expect("failed");
        let retried = ec2
            .run_instances(failed, || Ok(b"HTTP/1.1 200 OK\r\n\r\ni-2".to_vec()))
            .expect("retried");
        assert!(retried.ends_with(b"i-2"));
        assert_eq!(ec2.tokens(), 2);
    }

    #[test]
    fn forms_decode() {
        let f = form(b"Action=RunInstances&ClientToken=a%2Db&UserData=x+y%3D");
        assert_eq!(f[1], ("ClientToken".into(), "a-b".into()));
        assert_eq!(f[2], ("UserData".into(), "x y=".into()));
    }
}
