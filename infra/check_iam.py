"""Least-privilege check of augur's CloudFormation templates.

Walks every IAM statement (role policies, managed policies, bucket policies) and
fails on:
- a wildcard in an allowed action (`*`, `s3:*`, `s3:Get*`; a Deny may use them);
- `Resource: "*"` on an action whose service supports resource-level scoping;
- an Allow statement with principal `*`;
and on each of augur's own rules (`rules`, `tls_only`, `launch_template_problems`):
- TerminateInstances not limited to the stack's instances (`aws:ResourceTag/augur:stack`);
- RunInstances of an instance without the stack's request tag, an instance-type
  condition, IMDSv2 and a metadata hop-limit condition; of an image with no owner or
  image condition;
- iam:PassRole without `iam:PassedToService`;
- a read of SSM parameters or Secrets Manager secrets not limited to a prefix;
- a worker role (assumed by EC2) that writes DynamoDB items without a
  `dynamodb:LeadingKeys` condition (it could rewrite specs, leases, submissions);
- s3:PutObject on a whole bucket (agent/ and lambda/ are the deployer's: writers get
  a prefix);
- a bucket without a policy that denies every action (`s3:*`) on it and its objects
  without TLS;
- a launch template whose metadata hop limit is not 1 or that allows IMDSv1.
Prints one line per problem and a summary; exits 1 if there is any problem.

Usage: python check_iam.py TEMPLATE...
"""
import sys

from cfnlint.decode import decode

# Actions AWS authorizes only on "*" (no resource-level permissions).
UNSCOPABLE = {
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeSpotPriceHistory",
    "pricing:GetProducts",
    "sts:DecodeAuthorizationMessage",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeLaunchTemplates",
    "logs:DescribeLogGroups",
    "dynamodb:ListTables",
    "s3:ListAllMyBuckets",
    "sts:GetCallerIdentity",
}

POLICY_PATHS = {
    "AWS::IAM::Role": lambda p: [pol.get("PolicyDocument", {}) for pol in p.get("Policies", [])],
    "AWS::IAM::Policy": lambda p: [p.get("PolicyDocument", {})],
    "AWS::IAM::ManagedPolicy": lambda p: [p.get("PolicyDocument", {})],
    "AWS::S3::BucketPolicy": lambda p: [p.get("PolicyDocument", {})],
}


def as_list(v):
    return v if isinstance(v, list) else [v]


def text(v):
    """A resource or value as text: `!Sub` strings as written, `!GetAtt X.Arn` and
    `!Ref X` as `${X.Arn}` and `${X}`."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and len(v) == 1:
        (fn, arg), = v.items()
        if fn == "Fn::Sub":
            return text(arg[0] if isinstance(arg, list) else arg)
        if fn == "Fn::GetAtt":
            return "${" + (".".join(arg) if isinstance(arg, list) else str(arg)) + "}"
        if fn == "Ref":
            return "${" + str(arg) + "}"
    return str(v)


def condition_keys(st, op_filter=lambda op: op != "Null"):
    """The condition keys a statement tests, lower-cased (IAM compares them so); a
    `Null` test alone restricts no value, so it is left out unless asked for."""
    keys = set()
    for op, tests in (st.get("Condition") or {}).items():
        if isinstance(tests, dict) and op_filter(op):
            keys |= {str(k).lower() for k in tests}
    return keys


def vacuous_keys(st):
    """Keys tested with `ForAllValues:` and no `Null` beside them: such a test holds
    for a request that has no value for the key at all
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html)."""
    for_all = condition_keys(st, lambda op: op.startswith("ForAllValues:"))
    nulled = condition_keys(st, lambda op: op == "Null")
    return for_all - nulled


DYNAMO_WRITES = {"dynamodb:putitem", "dynamodb:updateitem", "dynamodb:deleteitem", "dynamodb:batchwriteitem", "dynamodb:transactwriteitems", "dynamodb:partiqlinsert", "dynamodb:partiqlupdate", "dynamodb:partiqldelete"}


def rules(st, worker=False):
    """augur's own rules on one Allow statement (of a worker's role, assumed by EC2
    instances, with `worker`): the problems, as text."""
    if st.get("Effect") != "Allow":
        return []
    actions = {a.lower() for a in as_list(st.get("Action", [])) if isinstance(a, str)}
    resources = [text(r) for r in as_list(st.get("Resource", []))]
    keys = condition_keys(st)
    out = []

    def need(key, why):
        if key.lower() not in keys:
            out.append(f"{why} without a `{key}` condition")

    if "ec2:terminateinstances" in actions:
        need("aws:ResourceTag/augur:stack", "TerminateInstances (any stack's instances)")
    if "ec2:runinstances" in actions:
        if any(":instance/" in r or r == "*" for r in resources):
            need("aws:RequestTag/augur:stack", "RunInstances (untagged launches)")
            need("ec2:InstanceType", "RunInstances (any instance type)")
            need("ec2:MetadataHttpTokens", "RunInstances (IMDSv1)")
            need("ec2:MetadataHttpPutResponseHopLimit", "RunInstances (credentials reachable from containers)")
        if any(":image/" in r or r == "*" for r in resources):
            if not keys & {"ec2:owner", "ec2:imageid"}:
                out.append("RunInstances (any image) without an `ec2:Owner` or `ec2:ImageID` condition")
    if worker and actions & DYNAMO_WRITES and "dynamodb:leadingkeys" not in keys:
        out.append("a worker writes any table item (specs, leases, submissions) without a `dynamodb:LeadingKeys` condition")
    if worker and actions & (DYNAMO_WRITES | {"dynamodb:query"}) and "dynamodb:leadingkeys" in vacuous_keys(st):
        out.append("a worker's `ForAllValues` test of `dynamodb:LeadingKeys` without `Null` beside it (a request naming no key passes)")
    if worker and actions & {"dynamodb:scan", "dynamodb:partiqlselect"}:
        out.append("a worker may read whole tables (Scan or PartiQL)")
    if "iam:passrole" in actions:
        need("iam:PassedToService", "iam:PassRole (to any service)")
    secret_reads = actions & {"ssm:getparameter", "ssm:getparameters", "ssm:getparametersbypath", "secretsmanager:getsecretvalue"}
    if secret_reads:
        open_ended = [r for r in resources if r.endswith(("parameter/*", "secret:*")) or r == "*"]
        if open_ended:
            out.append(f"secrets readable beyond a prefix ({', '.join(open_ended)})")
    if "s3:putobject" in actions:
        whole = [r for r in resources if r.endswith("}/*") or r == "*"]
        if whole:
            out.append(f"s3:PutObject on a whole bucket ({', '.join(whole)}): writers get a prefix")
    return out


def tls_only(bucket, policies):
    """Whether a bucket policy denies every action on the bucket and its objects
    without TLS."""
    for doc in policies.get(bucket, []):
        for st in as_list(doc.get("Statement", [])):
            actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
            resources = {text(r) for r in as_list(st.get("Resource", []))}
            insecure = (st.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")
            if (
                st.get("Effect") == "Deny"
                and ("s3:*" in actions or "*" in actions)
                and str(insecure).lower() == "false"
                and "${" + bucket + ".Arn}" in resources
                and "${" + bucket + ".Arn}/*" in resources
            ):
                return True
    return False


def launch_template_problems(props):
    meta = (props.get("LaunchTemplateData") or {}).get("MetadataOptions") or {}
    out = []
    if str(meta.get("HttpPutResponseHopLimit")) != "1":
        out.append("metadata hop limit is not 1 (containers reach the role's credentials)")
    if meta.get("HttpTokens") != "required":
        out.append("IMDSv1 allowed (HttpTokens is not `required`)")
    return out


def check_template(template, path):
    problems, count = [], 0
    resources = template.get("Resources") or {}
    bucket_policies = {}
    for name, res in resources.items():
        props = res.get("Properties") or {}
        if res.get("Type") == "AWS::S3::BucketPolicy":
            bucket = text(props.get("Bucket")).strip("${}")
            bucket_policies.setdefault(bucket, []).append(props.get("PolicyDocument") or {})
        if res.get("Type") == "AWS::EC2::LaunchTemplate":
            problems += [f"{path}: {name}: {p}" for p in launch_template_problems(props)]
    for name, res in resources.items():
        if res.get("Type") == "AWS::S3::Bucket" and not tls_only(name, bucket_policies):
            problems.append(f"{path}: {name}: no bucket policy denies `s3:*` on it and its objects without TLS")
        docs = POLICY_PATHS.get(res.get("Type"), lambda p: [])(res.get("Properties") or {})
        worker = assumed_by_ec2(res)
        for doc in docs:
            for i, st in enumerate(as_list(doc.get("Statement", []))):
                count += 1
                where = f"{path}: {name} statement {st.get('Sid', i)}"
                problems += [f"{where}: {p}" for p in statement_problems(st, worker)]
    return problems, count


def assumed_by_ec2(res):
    """Whether a resource is a role EC2 instances assume (a worker's: what a trial
    script can use)."""
    trust = (res.get("Properties") or {}).get("AssumeRolePolicyDocument") or {}
    for st in as_list(trust.get("Statement", [])):
        services = as_list((st.get("Principal") or {}).get("Service", []))
        if "ec2.amazonaws.com" in services:
            return True
    return False


def statement_problems(st, worker=False):
    out = []
    effect = st.get("Effect")
    actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
    if effect == "Allow":
        out += [f"wildcard action `{a}`" for a in actions if "*" in a]
    if "NotAction" in st:
        out.append("NotAction grants everything else")
    resources = as_list(st.get("Resource", []))
    if effect == "Allow" and "*" in resources:
        scoped = [a for a in actions if a not in UNSCOPABLE]
        if scoped:
            out.append(f"`Resource: *` for {', '.join(scoped)}, which can be scoped")
    principal = st.get("Principal")
    if effect == "Allow" and (principal == "*" or (isinstance(principal, dict) and "*" in as_list(principal.get("AWS", [])))):
        out.append("allows principal `*`")
    return out + rules(st, worker)


def check(path):
    template, matches = decode(path)
    if template is None:
        return [f"{path}: cannot parse: {matches}"], 0
    return check_template(template, path)


def main(paths):
    problems, total = [], 0
    for p in paths:
        found, n = check(p)
        problems += found
        total += n
    for p in problems:
        print(p)
    print(f"iam: {total} statements in {len(paths)} template(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
