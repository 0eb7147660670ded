//! IAM enforced by the stand-in: each request that reaches it is evaluated against
//! the policies of the identity it would run under in the deployed stack, read from
//! `infra/augur.yaml`, and a denied one is answered as the service answers it.
//!
//! Who calls is told by its credentials: the instance role's carry the stand-in's
//! session token (the fake hypervisor's metadata service hands them out), the tick
//! calls with [`TICK_KEY`], the CLI with [`CLI_KEY`] (a person holding the stack's
//! `CliPolicy`), and the deployer ([`DEPLOYER_KEY`], an administrator) is not
//! limited.

use super::requests::{authorizations, Account};
use super::{decide, Authorization, Statement, Verdict};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// The tick's access key (the stack's `TickRole`).
pub const TICK_KEY: &str = "augur-tick";
/// A person's access key, with the stack's `CliPolicy`.
pub const CLI_KEY: &str = "test";
/// The deployer's access key: an administrator, not limited here.
pub const DEPLOYER_KEY: &str = "deployer";
/// The IAM user a person's key belongs to (`aws:username`).
pub const CLI_USER: &str = "augur-user";
/// The session token of the instance role's credentials (`WorkerRole`).
pub const WORKER_SESSION: &str = "standin-session";

/// One request refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Denial {
    /// The identity in the template (`WorkerRole`, `TickRole`, `CliPolicy`).
    pub identity: String,
    pub action: String,
    pub resource: String,
    pub explicit: bool,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.explicit {
            "explicitly denied"
        } else {
            "not allowed"
        };
        write!(
            f,
            "{}: {} on {} {how}",
            self.identity, self.action, self.resource
        )
    }
}

/// The names a deployment gives the template's resources.
#[derive(Clone, Debug, Default)]
pub struct Deployment {
    pub table: String,
    pub bucket: String,
    /// `WorkerSecurityGroup.GroupId`, `WorkerLaunchTemplate`, `WorkerRole.Arn` as
    /// made, and parameters given (`NAME=VALUE` to `iam_eval.py --policies`).
    pub names: Vec<(String, String)>,
    /// Instance profile name -> the role it holds (for `iam:PassRole`).
    pub profiles: Vec<(String, String)>,
}

/// The stack's identities and what the stand-in has seen of its account.
pub struct Enforcer {
    /// Each identity's statements as the template has them.
    template: BTreeMap<String, Vec<Statement>>,
    /// As enforced now (a test may take a grant away: [`Enforcer::without`]).
    identities: Mutex<BTreeMap<String, Vec<Statement>>>,
    account: Mutex<Account>,
    denied: Mutex<Vec<Denial>>,
    /// Every request allowed: who, the call, the authorizations it needed.
    allowed: Mutex<Vec<(String, String, Vec<Authorization>)>>,
    /// The stack's roles by ARN -> their identity (for the policy simulator).
    roles: BTreeMap<String, String>,
}

impl Enforcer {
    /// The identities of `template` for deployment `d` (`infra/iam_eval.py
    /// --policies` resolves the template's intrinsic functions with cfn-lint's
    /// reader, the Python `python` runs).
    pub fn from_template(
        template: &Path,
        python: &Path,
        d: &Deployment,
    ) -> Result<Enforcer, String> {
        let out = std::process::Command::new(python)
            .arg(crate::repo().join("infra/iam_eval.py"))
            .args(["--policies"])
            .arg(template)
            .args([&d.table, &d.bucket])
            .args(d.names.iter().map(|(k, v)| format!("{k}={v}")))
            .output()
            .map_err(|e| format!("iam_eval.py: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let all: BTreeMap<String, Vec<serde_json::Value>> =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let mut identities = BTreeMap::new();
        for (name, statements) in all {
            let parsed = statements
                .iter()
                .map(Statement::parse)
                .collect::<Result<_, _>>()?;
            identities.insert(name, parsed);
        }
        Ok(Enforcer {
            template: identities.clone(),
            identities: Mutex::new(identities),
            allowed: Mutex::new(Vec::new()),
            roles: d
                .names
                .iter()
                .filter_map(|(k, v)| Some((v.clone(), k.strip_suffix(".Arn")?.to_string())))
                .filter(|(_, who)| who.ends_with("Role"))
                .collect(),
            account: Mutex::new(Account {
                id: "123456789012".into(),
                region: "us-east-1".into(),
                instance_tags: BTreeMap::new(),
                image_owners: BTreeMap::new(),
                profile_roles: d.profiles.iter().cloned().collect(),
                template_resources: BTreeMap::new(),
            }),
            denied: Mutex::new(Vec::new()),
        })
    }

    /// Who calls, by the request's credentials: `None` for the deployer.
    pub fn identity(head: &[String]) -> Option<&'static str> {
        let session = crate::faults::header(head, "x-amz-security-token");
        if session == Some(WORKER_SESSION) {
            return Some("WorkerRole");
        }
        let auth = crate::faults::header(head, "authorization").unwrap_or("");
        let key = auth
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .unwrap_or("");
        match key {
            DEPLOYER_KEY => None,
            TICK_KEY => Some("TickRole"),
            _ => Some("CliPolicy"),
        }
    }

    /// The first authorization of a request that its identity's policies refuse.
    pub fn check(
        &self,
        service: &str,
        op: &str,
        head: &[String],
        body: &[u8],
    ) -> Result<(), Denial> {
        let Some(identity) = Self::identity(head) else {
            return Ok(());
        };
        let needed = match self.account.lock() {
            Ok(acct) => authorizations(&acct, service, op, head, body),
            Err(_) => Err("account lock".into()),
        };
        let mut needed =
            needed.unwrap_or_else(|_| vec![Authorization::new(&format!("{service}:{op}"), "*")]);
        if identity == "CliPolicy" {
            for a in &mut needed {
                a.context
                    .insert("aws:username".into(), vec![CLI_USER.into()]);
            }
        }
        let statements = match self.identities.lock() {
            Ok(all) => all.get(identity).cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for a in &needed {
            let verdict = decide(&statements, a);
            if verdict != Verdict::Allow {
                let denial = Denial {
                    identity: identity.to_string(),
                    action: a.action.clone(),
                    resource: a.resource.clone(),
                    explicit: matches!(verdict, Verdict::ExplicitDeny(_)),
                };
                if let Ok(mut d) = self.denied.lock() {
                    d.push(denial.clone());
                }
                return Err(denial);
            }
        }
        if let Ok(mut all) = self.allowed.lock() {
            all.push((identity.to_string(), format!("{service}:{op}"), needed));
        }
        Ok(())
    }

    /// Takes the statement `sid` away from `identity` (as if the template lacked
    /// it), until [`Enforcer::restore`].
    pub fn without(&self, identity: &str, sid: &str) {
        if let Ok(mut all) = self.identities.lock() {
            if let Some(st) = all.get_mut(identity) {
                st.retain(|s| s.sid != sid);
            }
        }
    }

    /// The template's statements enforced again, whole.
    pub fn restore(&self) {
        if let Ok(mut all) = self.identities.lock() {
            *all = self.template.clone();
        }
    }

    /// Each identity's statements by `Sid`, as the template has them.
    pub fn statements(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .template
            .iter()
            .flat_map(|(who, st)| st.iter().map(move |s| (who.clone(), s.sid.clone())))
            .collect();
        out.dedup();
        out
    }

    /// The calls allowed so far that the template without `identity`'s statement
    /// `sid` would have refused (distinct `service:Operation` names, in order).
    pub fn needing(&self, identity: &str, sid: &str) -> Vec<String> {
        let Some(full) = self.template.get(identity) else {
            return Vec::new();
        };
        let rest: Vec<Statement> = full.iter().filter(|s| s.sid != sid).cloned().collect();
        let allowed = self.allowed.lock().map(|a| a.clone()).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for (_, call, needed) in allowed.iter().filter(|(w, _, _)| w == identity) {
            let refused = needed.iter().any(|a| decide(&rest, a) != Verdict::Allow);
            if refused && !out.contains(call) {
                out.push(call.clone());
            }
        }
        out
    }

    /// What a request that went through teaches: the tags of instances launched.
    pub fn learn(&self, op: &str, body: &[u8], answer: &[u8]) {
        if op != "RunInstances" {
            return;
        }
        let params = crate::standin::form(body);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut tags = Vec::new();
        for m in 1.. {
            let (Some(k), Some(v)) = (
                get(&format!("TagSpecification.1.Tag.{m}.Key")),
                get(&format!("TagSpecification.1.Tag.{m}.Value")),
            ) else {
                break;
            };
            tags.push((k, v));
        }
        let text = String::from_utf8_lossy(answer);
        let ids = text
            .split("<instanceId>")
            .skip(1)
            .filter_map(|s| s.split('<').next().map(String::from));
        if let Ok(mut acct) = self.account.lock() {
            for id in ids {
                acct.instance_tags.insert(id, tags.clone());
            }
        }
    }

    /// IAM's policy simulator (`SimulatePrincipalPolicy`) for the principal a
    /// request names, with the stack's policies as enforced now: each action on
    /// each resource with the context entries given, answered as IAM answers
    /// (<https://docs.aws.amazon.com/IAM/latest/APIReference/API_SimulatePrincipalPolicy.html>).
    pub fn simulate(&self, body: &[u8]) -> Vec<u8> {
        let params = crate::standin::form(body);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let list = |prefix: &str| -> Vec<String> {
            (1..)
                .map_while(|n| get(&format!("{prefix}.member.{n}")))
                .collect()
        };
        let source = get("PolicySourceArn").unwrap_or_default();
        let identity = match self.roles.get(&source) {
            Some(who) => who.clone(),
            None if source.contains(":user/") => "CliPolicy".to_string(),
            None => String::new(),
        };
        let mut context = BTreeMap::new();
        for n in 1.. {
            let Some(key) = get(&format!("ContextEntries.member.{n}.ContextKeyName")) else {
                break;
            };
            context.insert(
                key,
                list(&format!("ContextEntries.member.{n}.ContextKeyValues")),
            );
        }
        if let Some(user) = source.split(":user/").nth(1) {
            context.insert("aws:username".into(), vec![user.to_string()]);
        }
        let statements = match self.identities.lock() {
            Ok(all) => all.get(&identity).cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut results = String::new();
        for action in list("ActionNames") {
            for resource in list("ResourceArns") {
                let mut a = Authorization::new(&action, &resource);
                a.context = context.clone();
                let decision = match decide(&statements, &a) {
                    Verdict::Allow => "allowed",
                    Verdict::ExplicitDeny(_) => "explicitDeny",
                    Verdict::ImplicitDeny => "implicitDeny",
                };
                results.push_str(&format!("<member><EvalActionName>{}</EvalActionName><EvalResourceName>{}</EvalResourceName><EvalDecision>{decision}</EvalDecision><MatchedStatements/><MissingContextValues/></member>", xml(&action), xml(&resource)));
            }
        }
        let body = format!("<SimulatePrincipalPolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults>{results}</EvaluationResults></SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>");
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// What launch template `lt` names beyond a request (`key-pair/NAME`).
    pub fn template_uses(&self, lt: &str, resources: &[&str]) {
        if let Ok(mut acct) = self.account.lock() {
            let r = resources.iter().map(|s| s.to_string()).collect();
            acct.template_resources.insert(lt.into(), r);
        }
    }

    /// The owner of an image (its id), for `ec2:Owner`.
    pub fn image_owner(&self, image: &str, owner: &str) {
        if let Ok(mut acct) = self.account.lock() {
            acct.image_owners.insert(image.into(), owner.into());
        }
    }

    /// Every request refused so far.
    pub fn denied(&self) -> Vec<Denial> {
        self.denied.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

/// The ARN each identity calls as: the workers' and the tick's role sessions, a
/// person's IAM user.
fn principal_arn(identity: &str) -> String {
    match identity {
        "WorkerRole" => "arn:aws:sts::123456789012:assumed-role/augur-worker/i-standin".to_string(),
        "TickRole" => "arn:aws:sts::123456789012:assumed-role/augur-tick/augur-tick".to_string(),
        _ => format!("arn:aws:iam::123456789012:user/{CLI_USER}"),
    }
}

/// STS's `GetCallerIdentity` for the identity a request's credentials name, as AWS
/// answers it (an IAM user's ARN, or an assumed role's session); `None` for the
/// deployer (the emulator answers).
pub fn caller_answer(head: &[String]) -> Option<Vec<u8>> {
    let identity = Enforcer::identity(head)?;
    let body = format!("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>AIDASTANDIN</UserId><Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata></GetCallerIdentityResponse>", principal_arn(identity));
    Some(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// STS's answer to `DecodeAuthorizationMessage` for a message [`denied_answer`]
/// encoded: the JSON document it stands for
/// (<https://docs.aws.amazon.com/STS/latest/APIReference/API_DecodeAuthorizationMessage.html>).
pub fn decoded_answer(body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let params = crate::standin::form(body);
    let encoded = params
        .iter()
        .find(|(k, _)| k == "EncodedMessage")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let (status, xml) = match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(json) => {
            let text = String::from_utf8_lossy(&json)
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            (200, format!("<DecodeAuthorizationMessageResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><DecodeAuthorizationMessageResult><DecodedMessage>{text}</DecodedMessage></DecodeAuthorizationMessageResult><ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata></DecodeAuthorizationMessageResponse>"))
        }
        Err(_) => (400, "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAuthorizationMessageException</Code><Message>not a message this stand-in encoded</Message></Error><RequestId>standin</RequestId></ErrorResponse>".to_string()),
    };
    format!(
        "HTTP/1.1 {status} OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    )
    .into_bytes()
}

/// A denied request, answered as its service answers one
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html>):
/// EC2's `UnauthorizedOperation` with an encoded message, DynamoDB's, CloudWatch
/// Logs', SSM's, Secrets Manager's and the Price List's `AccessDeniedException`,
/// S3's, IAM's and STS's `AccessDenied`.
pub fn denied_answer(service: &str, d: &Denial) -> Vec<u8> {
    let who = principal_arn(&d.identity);
    let why = match d.explicit {
        true => "with an explicit deny in an identity-based policy".to_string(),
        false => format!(
            "because no identity-based policy allows the {} action",
            d.action
        ),
    };
    let message = format!(
        "User: {who} is not authorized to perform: {} on resource: {} {why}",
        d.action, d.resource
    );
    let (status, ctype, body) = match service {
        "ec2" => {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(
                serde_json::json!({"allowed": false, "explicitDeny": d.explicit,
                    "context": {"principal": {"arn": who}, "action": d.action, "resource": d.resource}})
                .to_string(),
            );
            (
                403,
                "text/xml",
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation. Encoded authorization failure message: {encoded}</Message></Error></Errors><RequestID>standin</RequestID></Response>"),
            )
        }
        // The Query protocol's error document (IAM and STS answer `AccessDenied`).
        "iam" | "sts" => (
            403,
            "text/xml",
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{}</Message></Error><RequestId>standin</RequestId></ErrorResponse>", xml(&message)),
        ),
        "s3" => (
            403,
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>{message}</Message><RequestId>standin</RequestId></Error>"),
        ),
        "dynamodb" => (
            400,
            "application/x-amz-json-1.0",
            serde_json::json!({"__type": "com.amazon.coral.service#AccessDeniedException", "Message": message}).to_string(),
        ),
        _ => (
            400,
            "application/x-amz-json-1.1",
            serde_json::json!({"__type": "AccessDeniedException", "message": message}).to_string(),
        ),
    };
    format!(
        "HTTP/1.1 {status} Denied\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nx-amzn-RequestId: standin\r\nx-amzn-ErrorType: AccessDeniedException\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
