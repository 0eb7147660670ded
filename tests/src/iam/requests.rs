//! What each request the stand-in sees must be authorized for: its action on every
//! resource the action names, with the condition keys of each, as the Service
//! Authorization Reference lists them
//! (<https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html>):
//! DynamoDB's (`dynamodb:LeadingKeys`, `dynamodb:Attributes`; a transaction's items
//! each as its own action), EC2's `RunInstances` (the instance, image, volume,
//! network interface, security group, subnet, launch template, key pair and, for
//! spot, the spot instances request; `CreateTags` on the instance and volume with
//! `ec2:CreateAction`; `iam:PassRole` for its instance profile; `ssm:GetParameters`
//! for a `resolve:ssm:` image), S3's objects and bucket (`s3:prefix`), CloudWatch
//! Logs' groups and streams, SSM parameters and Secrets Manager secrets.

use super::Authorization;
use serde_json::Value;
use std::collections::BTreeMap;

/// What the stand-in's account knows beside a request: where it is, the tags of
/// the instances launched through it, the owners of images, and the roles of
/// instance profiles.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub region: String,
    /// Instance id -> its tags.
    pub instance_tags: BTreeMap<String, Vec<(String, String)>>,
    /// Image id -> its owner (an account id, or `amazon`); images not listed are
    /// Amazon's.
    pub image_owners: BTreeMap<String, String>,
    /// Instance profile name -> the ARN of its role.
    pub profile_roles: BTreeMap<String, String>,
    /// Launch template id -> the resources its latest version names beyond what a
    /// request does (`key-pair/NAME`): RunInstances is authorized against those too
    /// (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/use-launch-template-permissions.html>).
    pub template_resources: BTreeMap<String, Vec<String>>,
}

impl Account {
    fn arn(&self, service: &str, rest: &str) -> String {
        format!("arn:aws:{service}:{}:{}:{rest}", self.region, self.id)
    }
}

/// The authorizations a request needs; `Err` for one the stand-in cannot map (it
/// is refused, as an unknown call should be).
pub fn authorizations(
    acct: &Account,
    service: &str,
    op: &str,
    head: &[String],
    body: &[u8],
) -> Result<Vec<Authorization>, String> {
    match service {
        "dynamodb" => dynamodb(acct, op, body),
        "ec2" => ec2(acct, op, body),
        "s3" => s3(head, body),
        "logs" => logs(acct, op, body),
        "AmazonSSM" => ssm(acct, op, body),
        "secretsmanager" => secrets(acct, op, body),
        "AWSPriceListService" => Ok(vec![Authorization::new(&format!("pricing:{op}"), "*")]),
        // Anyone may ask who they are; decoding EC2's refusals is a grant of its own.
        "sts" if op == "GetCallerIdentity" => Ok(Vec::new()),
        "sts" => Ok(vec![Authorization::new(&format!("sts:{op}"), "*")]),
        // The policy simulator is authorized against the principal simulated.
        "iam" => {
            let params = form(body);
            let source = params
                .iter()
                .find(|(k, _)| k == "PolicySourceArn")
                .map_or("*", |(_, v)| v.as_str());
            Ok(vec![Authorization::new(&format!("iam:{op}"), source)])
        }
        other => Err(format!("no IAM mapping for {other}:{op}")),
    }
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// The partition key's value in a DynamoDB key or item (`pk`, augur's).
fn leading(key: &Value) -> Option<String> {
    key.get("pk")?.get("S")?.as_str().map(String::from)
}

/// The attribute names an expression names, `#name`s resolved.
fn expression_attributes(expr: &str, names: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let words = expr.split(|c: char| !(c.is_alphanumeric() || c == '#' || c == '_' || c == ':'));
    for w in words.filter(|w| !w.is_empty()) {
        if w.starts_with(':') {
            continue;
        }
        let name = match w.strip_prefix('#') {
            Some(_) => names
                .get(w)
                .and_then(Value::as_str)
                .unwrap_or(w)
                .to_string(),
            None => w.to_string(),
        };
        let keyword = matches!(
            name.to_ascii_uppercase().as_str(),
            "SET" | "REMOVE" | "ADD" | "DELETE" | "AND" | "OR" | "NOT" | "IN" | "BETWEEN"
        ) || name.starts_with("attribute_")
            || name.chars().all(|c| c.is_ascii_digit())
            || matches!(
                name.as_str(),
                "if_not_exists" | "list_append" | "begins_with" | "contains" | "size"
            );
        if !keyword && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// One item operation of DynamoDB: its action on the table, with the item's leading
/// key and the attributes it names.
fn item_op(acct: &Account, action: &str, req: &Value) -> Authorization {
    let table = req["TableName"].as_str().unwrap_or("?");
    let mut a = Authorization::new(action, &acct.arn("dynamodb", &format!("table/{table}")));
    let key = req
        .get("Key")
        .or_else(|| req.get("Item"))
        .cloned()
        .unwrap_or_default();
    if let Some(pk) = leading(&key) {
        a.context.insert("dynamodb:LeadingKeys".into(), vec![pk]);
    }
    let names = &req["ExpressionAttributeNames"];
    let mut attributes: Vec<String> = match req.get("Item").and_then(Value::as_object) {
        Some(item) => item.keys().cloned().collect(),
        None => key
            .as_object()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default(),
    };
    for field in ["UpdateExpression", "ProjectionExpression"] {
        if let Some(e) = req[field].as_str() {
            for n in expression_attributes(e, names) {
                if !attributes.contains(&n) {
                    attributes.push(n);
                }
            }
        }
    }
    a.context.insert("dynamodb:Attributes".into(), attributes);
    if let Some(r) = req["ReturnValues"].as_str() {
        a.context
            .insert("dynamodb:ReturnValues".into(), vec![r.into()]);
    }
    a
}

fn dynamodb(acct: &Account, op: &str, body: &[u8]) -> Result<Vec<Authorization>, String> {
    let req = json(body);
    let action = format!("dynamodb:{op}");
    let table_arn = |t: &str| acct.arn("dynamodb", &format!("table/{t}"));
    Ok(match op {
        "GetItem" | "PutItem" | "UpdateItem" | "DeleteItem" => vec![item_op(acct, &action, &req)],
        // Each item of a transaction needs its own action
        // (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html>).
        "TransactWriteItems" | "TransactGetItems" => req["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let (kind, inner) = i.as_object()?.iter().next()?;
                let action = match kind.as_str() {
                    "Put" => "dynamodb:PutItem",
                    "Update" => "dynamodb:UpdateItem",
                    "Delete" => "dynamodb:DeleteItem",
                    "ConditionCheck" => "dynamodb:ConditionCheckItem",
                    _ => "dynamodb:GetItem",
                };
                Some(item_op(acct, action, inner))
            })
            .collect(),
        "BatchGetItem" | "BatchWriteItem" => {
            let items = req["RequestItems"].as_object().cloned().unwrap_or_default();
            items
                .into_iter()
                .map(|(table, reqs)| {
                    let keys: Vec<String> = match &reqs["Keys"] {
                        Value::Array(k) => k.iter().filter_map(leading).collect(),
                        _ => reqs
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|w| {
                                leading(
                                    w.pointer("/PutRequest/Item")
                                        .or(w.pointer("/DeleteRequest/Key"))?,
                                )
                            })
                            .collect(),
                    };
                    let mut a = Authorization::new(&action, &table_arn(&table));
                    a.context.insert("dynamodb:LeadingKeys".into(), keys);
                    a
                })
                .collect()
        }
        "Query" => {
            let table = req["TableName"].as_str().unwrap_or("?");
            let resource = match req["IndexName"].as_str() {
                Some(i) => format!("{}/index/{i}", table_arn(table)),
                None => table_arn(table),
            };
            let mut a = Authorization::new(&action, &resource);
            // `pk = :v` (or `#pk = :v`): the partition the query reads.
            let expr = req["KeyConditionExpression"].as_str().unwrap_or("");
            let values = &req["ExpressionAttributeValues"];
            let names = &req["ExpressionAttributeNames"];
            let pk = expr.split(" AND ").find_map(|part| {
                let (lhs, rhs) = part.split_once('=')?;
                let lhs = lhs.trim();
                let name = names.get(lhs).and_then(Value::as_str).unwrap_or(lhs);
                (name == "pk").then(|| values.get(rhs.trim())?.get("S")?.as_str())?
            });
            if let Some(pk) = pk {
                a.context
                    .insert("dynamodb:LeadingKeys".into(), vec![pk.to_string()]);
            }
            if let Some(s) = req["Select"].as_str() {
                a.context.insert("dynamodb:Select".into(), vec![s.into()]);
            }
            vec![a]
        }
        "Scan"
        | "DescribeTable"
        | "CreateTable"
        | "DeleteTable"
        | "UpdateTable"
        | "DescribeTimeToLive"
        | "UpdateTimeToLive"
        | "DescribeContinuousBackups" => {
            vec![Authorization::new(
                &action,
                &table_arn(req["TableName"].as_str().unwrap_or("*")),
            )]
        }
        "ListTables" => vec![Authorization::new(&action, "*")],
        other => return Err(format!("no IAM mapping for dynamodb:{other}")),
    })
}

/// An EC2 query call's parameters.
fn form(body: &[u8]) -> Vec<(String, String)> {
    crate::standin::form(body)
}

fn ec2(acct: &Account, op: &str, body: &[u8]) -> Result<Vec<Authorization>, String> {
    let params = form(body);
    let action = format!("ec2:{op}");
    Ok(match op {
        "RunInstances" => run_instances(acct, &params),
        "TerminateInstances" | "StopInstances" | "RebootInstances" => params
            .iter()
            .filter(|(k, _)| k.starts_with("InstanceId."))
            .map(|(_, id)| {
                let mut a =
                    Authorization::new(&action, &acct.arn("ec2", &format!("instance/{id}")));
                for (k, v) in acct.instance_tags.get(id).into_iter().flatten() {
                    a.context
                        .insert(format!("aws:ResourceTag/{k}"), vec![v.clone()]);
                }
                a
            })
            .collect(),
        op if op.starts_with("Describe") => vec![Authorization::new(&action, "*")],
        other => return Err(format!("no IAM mapping for ec2:{other}")),
    })
}

/// `RunInstances`, authorized against each resource it makes or uses.
fn run_instances(acct: &Account, params: &[(String, String)]) -> Vec<Authorization> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let run = "ec2:RunInstances";
    let arn = |rest: &str| acct.arn("ec2", rest);
    // The tags requested for each resource type (TagSpecification.N).
    let mut tags: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for n in 1.. {
        let Some(ty) = get(&format!("TagSpecification.{n}.ResourceType")) else {
            break;
        };
        for m in 1.. {
            let key = get(&format!("TagSpecification.{n}.Tag.{m}.Key"));
            let value = get(&format!("TagSpecification.{n}.Tag.{m}.Value"));
            let (Some(k), Some(v)) = (key, value) else {
                break;
            };
            tags.entry(ty.into())
                .or_default()
                .push((k.into(), v.into()));
        }
    }
    let with_tags = |mut a: Authorization, ty: &str| {
        if let Some(t) = tags.get(ty) {
            for (k, v) in t {
                a.context
                    .insert(format!("aws:RequestTag/{k}"), vec![v.clone()]);
            }
            let keys: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
            a = a.with("aws:TagKeys", &keys);
        }
        a
    };
    let mut instance = Authorization::new(run, &arn("instance/*"));
    if let Some(t) = get("InstanceType") {
        instance = instance.with("ec2:InstanceType", &[t]);
    }
    for (param, key) in [
        ("MetadataOptions.HttpTokens", "ec2:MetadataHttpTokens"),
        (
            "MetadataOptions.HttpPutResponseHopLimit",
            "ec2:MetadataHttpPutResponseHopLimit",
        ),
        ("MetadataOptions.HttpEndpoint", "ec2:MetadataHttpEndpoint"),
    ] {
        if let Some(v) = get(param) {
            instance = instance.with(key, &[v]);
        }
    }
    let spot = get("InstanceMarketOptions.MarketType") == Some("spot");
    if spot {
        instance = instance.with("ec2:InstanceMarketType", &["spot"]);
    }
    let mut out = vec![with_tags(instance, "instance")];
    // The image: by id (its owner), or resolved from an SSM parameter, which the
    // caller must be allowed to read
    // (<https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/finding-an-ami-parameter-store.html>).
    let image = get("ImageId").unwrap_or("");
    match image.strip_prefix("resolve:ssm:") {
        Some(name) => {
            let public = name.starts_with("/aws/service/");
            let param = match public {
                true => format!("arn:aws:ssm:{}::parameter{name}", acct.region),
                false => acct.arn("ssm", &format!("parameter{name}")),
            };
            out.push(Authorization::new("ssm:GetParameters", &param));
            out.push(
                Authorization::new(run, &format!("arn:aws:ec2:{}::image/*", acct.region))
                    .with("ec2:Owner", &["amazon"]),
            );
        }
        None => {
            let owner = acct
                .image_owners
                .get(image)
                .map_or("amazon", String::as_str);
            out.push(
                Authorization::new(run, &format!("arn:aws:ec2:{}::image/{image}", acct.region))
                    .with("ec2:Owner", &[owner]),
            );
        }
    }
    out.push(with_tags(
        Authorization::new(run, &arn("volume/*")),
        "volume",
    ));
    out.push(Authorization::new(run, &arn("network-interface/*")));
    let subnet = get("SubnetId").unwrap_or("*");
    out.push(Authorization::new(run, &arn(&format!("subnet/{subnet}"))));
    let groups: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k.starts_with("SecurityGroupId."))
        .map(|(_, v)| v.as_str())
        .collect();
    for g in if groups.is_empty() { vec!["*"] } else { groups } {
        out.push(Authorization::new(
            run,
            &arn(&format!("security-group/{g}")),
        ));
    }
    if let Some(lt) =
        get("LaunchTemplate.LaunchTemplateId").or(get("LaunchTemplate.LaunchTemplateName"))
    {
        out.push(Authorization::new(
            run,
            &arn(&format!("launch-template/{lt}")),
        ));
        for r in acct.template_resources.get(lt).into_iter().flatten() {
            out.push(Authorization::new(run, &arn(r)));
        }
    }
    if let Some(k) = get("KeyName") {
        out.push(Authorization::new(run, &arn(&format!("key-pair/{k}"))));
    }
    if spot {
        out.push(Authorization::new(run, &arn("spot-instances-request/*")));
    }
    // Tags at launch are created with the launch (`ec2:CreateAction`).
    for ty in tags
        .keys()
        .filter(|t| matches!(t.as_str(), "instance" | "volume"))
    {
        let a = Authorization::new("ec2:CreateTags", &arn(&format!("{ty}/*")))
            .with("ec2:CreateAction", &["RunInstances"]);
        out.push(with_tags(a, ty));
    }
    if let Some(p) = get("IamInstanceProfile.Name").or(get("IamInstanceProfile.Arn")) {
        let name = p.rsplit('/').next().unwrap_or(p);
        let role = acct
            .profile_roles
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("arn:aws:iam::{}:role/{name}", acct.id));
        out.push(
            Authorization::new("iam:PassRole", &role)
                .with("iam:PassedToService", &["ec2.amazonaws.com"]),
        );
    }
    out
}

/// S3, by method and path (path-style addressing, as the tests' clients use).
fn s3(head: &[String], body: &[u8]) -> Result<Vec<Authorization>, String> {
    let line = head.first().map(String::as_str).unwrap_or("");
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = crate::standin::form(path.as_bytes())
        .first()
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| path.to_string());
    let path = path.trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let q = crate::standin::form(query.as_bytes());
    let has = |k: &str| q.iter().any(|(n, _)| n == k) || query.split('&').any(|p| p == k);
    let object = format!("arn:aws:s3:::{bucket}/{key}");
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let one = |action: &str, resource: &str| vec![Authorization::new(action, resource)];
    let prefix = q
        .iter()
        .find(|(k, _)| k == "prefix")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    // Both listings are authorized with the prefix asked for (`s3:prefix`).
    let listing =
        |action: &str| vec![Authorization::new(action, &bucket_arn).with("s3:prefix", &[prefix])];
    Ok(match (method, key.is_empty()) {
        ("GET" | "HEAD", true) if has("versions") => listing("s3:ListBucketVersions"),
        ("GET" | "HEAD", true) if has("location") => one("s3:GetBucketLocation", &bucket_arn),
        ("GET" | "HEAD", true) => listing("s3:ListBucket"),
        ("PUT", true) => one("s3:CreateBucket", &bucket_arn),
        ("DELETE", true) => one("s3:DeleteBucket", &bucket_arn),
        ("POST", true) if has("delete") => delete_objects(&bucket_arn, body),
        ("GET" | "HEAD", false) => one("s3:GetObject", &object),
        ("PUT" | "POST", false) => one("s3:PutObject", &object),
        ("DELETE", false) if has("uploadId") => one("s3:AbortMultipartUpload", &object),
        ("DELETE", false) => one("s3:DeleteObject", &object),
        _ => return Err(format!("no IAM mapping for S3 {method} {target}")),
    })
}

/// `DeleteObjects` needs `s3:DeleteObject` on each key it names, and
/// `s3:DeleteObjectVersion` for a key with a version
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html>). S3
/// answers a refused key in the response's errors; the stand-in refuses the request.
fn delete_objects(bucket_arn: &str, body: &[u8]) -> Vec<Authorization> {
    let text = String::from_utf8_lossy(body);
    let inner = |o: &str, tag: &str| {
        let open = format!("<{tag}>");
        let from = o.find(&open)? + open.len();
        let len = o[from..].find(&format!("</{tag}>"))?;
        Some(o[from..from + len].to_string())
    };
    text.split("<Object>")
        .skip(1)
        .filter_map(|o| {
            let key = inner(o, "Key")?;
            let action = match inner(o, "VersionId") {
                Some(_) => "s3:DeleteObjectVersion",
                None => "s3:DeleteObject",
            };
            Some(Authorization::new(action, &format!("{bucket_arn}/{key}")))
        })
        .collect()
}

fn logs(acct: &Account, op: &str, body: &[u8]) -> Result<Vec<Authorization>, String> {
    let req = json(body);
    let group = req["logGroupName"].as_str().unwrap_or("*");
    let group_arn = acct.arn("logs", &format!("log-group:{group}"));
    let stream = req["logStreamName"].as_str().unwrap_or("*");
    let stream_arn = format!("{group_arn}:log-stream:{stream}");
    let action = format!("logs:{op}");
    let resource = match op {
        "PutLogEvents" | "GetLogEvents" => stream_arn,
        "CreateLogGroup" | "CreateLogStream" | "DescribeLogStreams" | "FilterLogEvents"
        | "PutRetentionPolicy" | "DeleteLogGroup" | "TagLogGroup" | "TagResource" => {
            format!("{group_arn}:*")
        }
        "DescribeLogGroups" => acct.arn("logs", "log-group:*"),
        other => return Err(format!("no IAM mapping for logs:{other}")),
    };
    Ok(vec![Authorization::new(&action, &resource)])
}

fn ssm(acct: &Account, op: &str, body: &[u8]) -> Result<Vec<Authorization>, String> {
    let req = json(body);
    let names: Vec<String> = match op {
        "GetParameter" => req["Name"].as_str().map(String::from).into_iter().collect(),
        "GetParameters" => req["Names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        other => return Err(format!("no IAM mapping for ssm:{other}")),
    };
    Ok(names
        .iter()
        .map(|n| {
            let n = n.trim_start_matches('/');
            let arn = match n.starts_with("aws/service/") {
                true => format!("arn:aws:ssm:{}::parameter/{n}", acct.region),
                false => acct.arn("ssm", &format!("parameter/{n}")),
            };
            Authorization::new(&format!("ssm:{op}"), &arn)
        })
        .collect())
}

fn secrets(acct: &Account, op: &str, body: &[u8]) -> Result<Vec<Authorization>, String> {
    let req = json(body);
    let id = req["SecretId"].as_str().unwrap_or("*");
    // By name, the ARN carries six random characters after it.
    let arn = match id.starts_with("arn:") {
        true => id.to_string(),
        false => acct.arn("secretsmanager", &format!("secret:{id}-AbCdEf")),
    };
    Ok(vec![Authorization::new(
        &format!("secretsmanager:{op}"),
        &arn,
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct() -> Account {
        Account {
            id: "123456789012".into(),
            region: "us-east-1".into(),
            instance_tags: BTreeMap::new(),
            image_owners: BTreeMap::new(),
            template_resources: BTreeMap::new(),
            profile_roles: BTreeMap::from([(
                "augur-worker".to_string(),
                "arn:aws:iam::123456789012:role/augur-worker".to_string(),
            )]),
        }
    }

    #[test]
    fn a_spot_launch_of_the_default_image_needs_the_parameter_and_the_request() {
        let body = "Action=RunInstances&ImageId=resolve%3Assm%3A%2Faws%2Fservice%2Fami-amazon-linux-latest%2Fal2023-ami-kernel-default-x86_64&InstanceType=t3.micro&InstanceMarketOptions.MarketType=spot&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=augur%3Astack&TagSpecification.1.Tag.1.Value=t&IamInstanceProfile.Name=augur-worker&MetadataOptions.HttpTokens=required&MetadataOptions.HttpPutResponseHopLimit=1";
        let a =
            authorizations(&acct(), "ec2", "RunInstances", &[], body.as_bytes()).expect("mapped");
        let find = |action: &str, res: &str| {
            a.iter()
                .find(|x| x.action == action && x.resource.contains(res))
        };
        let inst = find("ec2:RunInstances", "instance/*").expect("instance");
        assert_eq!(inst.context["aws:RequestTag/augur:stack"], vec!["t"]);
        assert_eq!(inst.context["ec2:InstanceType"], vec!["t3.micro"]);
        assert!(find(
            "ssm:GetParameters",
            "::parameter/aws/service/ami-amazon-linux-latest/"
        )
        .is_some());
        assert!(find("ec2:RunInstances", "spot-instances-request/*").is_some());
        assert!(find("ec2:CreateTags", "instance/*").is_some());
        let pass = find("iam:PassRole", "role/augur-worker").expect("pass role");
        assert_eq!(
            pass.context["iam:PassedToService"],
            vec!["ec2.amazonaws.com"]
        );
    }

    #[test]
    fn dynamodb_items_name_their_partition_and_attributes() {
        let body = br##"{"TableName":"t","Key":{"pk":{"S":"trials#s"},"sk":{"S":"trial#1"}},"UpdateExpression":"SET #d = :d, rev = :n","ExpressionAttributeNames":{"#d":"data"}}"##;
        let a = authorizations(&acct(), "dynamodb", "UpdateItem", &[], body).expect("mapped");
        assert_eq!(
            a[0].resource,
            "arn:aws:dynamodb:us-east-1:123456789012:table/t"
        );
        assert_eq!(a[0].context["dynamodb:LeadingKeys"], vec!["trials#s"]);
        assert_eq!(
            a[0].context["dynamodb:Attributes"],
            vec!["pk", "sk", "data", "rev"]
        );
        let q = br#"{"TableName":"t","IndexName":"by_change","KeyConditionExpression":"pk = :p AND chg > :c","ExpressionAttributeValues":{":p":{"S":"trials#s"},":c":{"N":"1"}}}"#;
        let a = authorizations(&acct(), "dynamodb", "Query", &[], q).expect("mapped");
        assert!(a[0].resource.ends_with("table/t/index/by_change"));
        assert_eq!(a[0].context["dynamodb:LeadingKeys"], vec!["trials#s"]);
    }

    #[test]
    fn s3_calls_by_method_and_path() {
        let head = |l: &str| vec![l.to_string()];
        let a = s3(
            &head("GET /b?list-type=2&prefix=studies%2Fs%2F HTTP/1.1"),
            b"",
        )
        .expect("list");
        assert_eq!(a[0].action, "s3:ListBucket");
        assert_eq!(a[0].context["s3:prefix"], vec!["studies/s/"]);
        let a = s3(
            &head("GET /b?versions&prefix=checkpoints%2Fs%2F HTTP/1.1"),
            b"",
        )
        .expect("list versions");
        assert_eq!(
            (a[0].action.as_str(), a[0].resource.as_str()),
            ("s3:ListBucketVersions", "arn:aws:s3:::b")
        );
        assert_eq!(a[0].context["s3:prefix"], vec!["checkpoints/s/"]);
        let a = s3(
            &head("PUT /b/checkpoints/s/1/x?partNumber=1&uploadId=u HTTP/1.1"),
            b"",
        )
        .expect("part");
        assert_eq!(
            (a[0].action.as_str(), a[0].resource.as_str()),
            ("s3:PutObject", "arn:aws:s3:::b/checkpoints/s/1/x")
        );
        let a = s3(
            &head("DELETE /b/checkpoints/s/1/x?uploadId=u HTTP/1.1"),
            b"",
        )
        .expect("abort");
        assert_eq!(a[0].action, "s3:AbortMultipartUpload");
        let body = b"<Delete><Object><Key>studies/s/a</Key></Object><Object><Key>checkpoints/s/1/x</Key><VersionId>v1</VersionId></Object></Delete>";
        let a = s3(&head("POST /b?delete HTTP/1.1"), body).expect("delete objects");
        let got: Vec<(&str, &str)> = a
            .iter()
            .map(|a| (a.action.as_str(), a.resource.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("s3:DeleteObject", "arn:aws:s3:::b/studies/s/a"),
                ("s3:DeleteObjectVersion", "arn:aws:s3:::b/checkpoints/s/1/x")
            ]
        );
    }
}
