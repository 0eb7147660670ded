//! Refusals by IAM read as what they are: a missing grant
//! ([`augur_store::Denied`]), told apart from outages by the service's error code,
//! and named with the identity of the stack that asked.
//!
//! EC2 does not say what it refused in plain text: its `UnauthorizedOperation`
//! carries an encoded message that STS's `DecodeAuthorizationMessage` turns into the
//! action, the resource and the principal
//! (<https://docs.aws.amazon.com/STS/latest/APIReference/API_DecodeAuthorizationMessage.html>).

use augur_store::Denied;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use std::sync::OnceLock;

/// The STS client refusals are decoded with.
pub type Sts = aws_sdk_sts::Client;

/// An STS client for `config`.
pub fn sts(config: &aws_config::SdkConfig) -> Sts {
    aws_sdk_sts::Client::new(config)
}

static IDENTITY: OnceLock<&'static str> = OnceLock::new();

/// Which of the stack's identities this process runs as (`CliPolicy`, `TickRole`,
/// `WorkerRole` in `infra/augur.yaml`): where a refused grant belongs.
pub fn act_as(identity: &'static str) {
    let _ = IDENTITY.set(identity);
}

/// The error codes AWS answers a refused request with: IAM's own, and credentials
/// the service does not accept (which waiting will not mend either).
const CODES: [&str; 6] = [
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
];

/// `e` as a refusal, if it is one: `call` names it (`DynamoDB Query`), `action` is
/// the IAM action when the message does not say (`dynamodb:Query`).
pub fn denied<E>(call: &str, action: &str, e: &SdkError<E>) -> Option<Denied>
where
    E: ProvideErrorMetadata,
{
    let se = e.as_service_error()?;
    if !CODES.contains(&se.code()?) {
        return None;
    }
    let mut d = Denied::from_message(call, action, se.message().unwrap_or(""));
    d.identity = IDENTITY.get().map(|s| s.to_string());
    Some(d)
}

/// EC2's encoded message in `d`'s source, decoded with STS where the caller may
/// (`sts:DecodeAuthorizationMessage`): the action, resource and principal it names.
pub async fn decode_ec2<E>(sts: &aws_sdk_sts::Client, mut d: Denied, e: &SdkError<E>) -> Denied
where
    E: ProvideErrorMetadata,
{
    let message = e.as_service_error().and_then(|s| s.message()).unwrap_or("");
    let Some(encoded) = message
        .split("Encoded authorization failure message: ")
        .nth(1)
    else {
        return d;
    };
    let decoded = sts
        .decode_authorization_message()
        .encoded_message(encoded.trim())
        .send()
        .await;
    let text = match decoded {
        Ok(out) => out.decoded_message().unwrap_or_default().to_string(),
        Err(e) => {
            tracing::warn!(error = %crate::error_text(&e), "cannot decode EC2's authorization failure message");
            return d;
        }
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return d;
    };
    let context = &v["context"];
    if let Some(a) = context["action"].as_str() {
        d.action = a.to_string();
    }
    d.resource = context["resource"]
        .as_str()
        .map(String::from)
        .or(d.resource);
    d.principal = context["principal"]["arn"]
        .as_str()
        .map(String::from)
        .or(d.principal);
    d.explicit = v["explicitDeny"].as_bool().unwrap_or(d.explicit);
    d
}
