"""Least-privilege check of augur's CloudFormation templates.

Walks every IAM statement (role policies, managed policies, bucket policies) and
fails on:
- a wildcard in an action (`*`, `s3:*`, `s3:Get*`);
- `Resource: "*"` on an action whose service supports resource-level scoping;
- an Allow statement with principal `*`.
Prints one line per problem and a summary; exits 1 if there is any problem.

Usage: python check_iam.py TEMPLATE...
"""
import sys

from cfnlint.decode import decode

# Actions AWS authorizes only on "*" (no resource-level permissions).
UNSCOPABLE = {
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeImages",
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


def check(path):
    template, matches = decode(path)
    if template is None:
        return [f"{path}: cannot parse: {matches}"], 0
    problems, count = [], 0
    for name, res in (template.get("Resources") or {}).items():
        docs = POLICY_PATHS.get(res.get("Type"), lambda p: [])(res.get("Properties") or {})
        for doc in docs:
            for i, st in enumerate(as_list(doc.get("Statement", []))):
                count += 1
                where = f"{path}: {name} statement {st.get('Sid', i)}"
                effect = st.get("Effect")
                actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
                for a in actions:
                    if "*" in a:
                        problems.append(f"{where}: wildcard action `{a}`")
                if "NotAction" in st:
                    problems.append(f"{where}: NotAction grants everything else")
                resources = as_list(st.get("Resource", []))
                if effect == "Allow" and "*" in resources:
                    scoped = [a for a in actions if a not in UNSCOPABLE]
                    if scoped:
                        problems.append(f"{where}: `Resource: *` for {', '.join(scoped)}, which can be scoped")
                principal = st.get("Principal")
                if effect == "Allow" and (principal == "*" or (isinstance(principal, dict) and "*" in as_list(principal.get("AWS", [])))):
                    problems.append(f"{where}: allows principal `*`")
    return problems, count


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
