"""Proves that check_iam.py fails on each omission it exists to catch: each case
removes one safeguard from infra/augur.yaml and expects the check to name it. The
template as it is must pass.

Usage: python test_check_iam.py [TEMPLATE]   (run by scripts/infra-check.sh)
"""
import os
import sys

from cfnlint.decode import decode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_iam import as_list, check_template  # noqa: E402

TEMPLATE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "augur.yaml")


def statements(template, sid):
    """Every policy statement with this Sid, in every role, policy and bucket policy."""
    found = []
    for res in template["Resources"].values():
        props = res.get("Properties") or {}
        docs = [p.get("PolicyDocument", {}) for p in props.get("Policies", [])]
        docs.append(props.get("PolicyDocument") or {})
        for doc in docs:
            found += [st for st in as_list(doc.get("Statement", [])) if st.get("Sid") == sid]
    assert found, f"no statement {sid} in {TEMPLATE}"
    return found


def drop_condition(sid, op, key=None):
    def mutate(t):
        for st in statements(t, sid):
            if key is None:
                del st["Condition"][op]
            else:
                del st["Condition"][op][key]
                if not st["Condition"][op]:
                    del st["Condition"][op]
    return mutate


def set_field(sid, field, value):
    def mutate(t):
        for st in statements(t, sid):
            st[field] = value
    return mutate


def hop_limit(n):
    def mutate(t):
        for res in t["Resources"].values():
            if res["Type"] == "AWS::EC2::LaunchTemplate":
                res["Properties"]["LaunchTemplateData"]["MetadataOptions"]["HttpPutResponseHopLimit"] = n
    return mutate


def put_anywhere(t):
    for st in statements(t, "StudyFiles"):
        st["Resource"] = {"Fn::Sub": "${Bucket.Arn}/*"}


# (what is removed, how, what the check must say)
CASES = [
    ("terminate any stack's instances", drop_condition("EndAugurInstancesOnly", "StringEquals"), "TerminateInstances (any stack's instances)"),
    ("launch without augur's tags", drop_condition("LaunchWorkers", "StringEquals", "aws:RequestTag/augur:stack"), "RunInstances (untagged launches)"),
    ("launch any instance type", drop_condition("LaunchWorkers", "StringLike"), "RunInstances (any instance type)"),
    ("launch with IMDSv1", drop_condition("LaunchWorkers", "StringEquals", "ec2:MetadataHttpTokens"), "RunInstances (IMDSv1)"),
    ("launch with any hop limit", drop_condition("LaunchWorkers", "NumericLessThanEquals"), "credentials reachable from containers"),
    ("launch any image", drop_condition("LaunchFromAllowedImages", "StringEquals"), "RunInstances (any image)"),
    ("pass the role to any service", drop_condition("PassWorkerRole", "StringEquals"), "iam:PassRole (to any service)"),
    ("TLS-only for reads only", set_field("TlsOnly", "Action", "s3:GetObject"), "without TLS"),
    ("TLS-only for objects only", set_field("TlsOnly", "Resource", {"Fn::Sub": "${Bucket.Arn}/*"}), "without TLS"),
    ("CLI writes agent/ and lambda/", put_anywhere, "s3:PutObject on a whole bucket"),
    ("hop limit 2 in the launch template", hop_limit(2), "metadata hop limit is not 1"),
    ("workers write any table item", drop_condition("WriteTrialsOnly", "ForAllValues:StringLike"), "without a `dynamodb:LeadingKeys` condition"),
    ("workers write with a vacuous key test", drop_condition("WriteTrialsOnly", "Null"), "without `Null` beside it"),
    ("workers query with a vacuous key test", drop_condition("PollStudyTrials", "Null"), "without `Null` beside it"),
    ("workers read every SSM parameter", set_field("StudySecrets", "Resource", {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/*"}), "secrets readable beyond a prefix"),
    ("workers read every secret", set_field("StudySecretsManager", "Resource", {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"}), "secrets readable beyond a prefix"),
]


def main():
    template, matches = decode(TEMPLATE)
    assert template is not None, matches
    problems, _ = check_template(template, TEMPLATE)
    assert not problems, f"the template itself fails the check: {problems}"
    failed = 0
    for what, mutate, says in CASES:
        template, _ = decode(TEMPLATE)
        mutate(template)
        problems, _ = check_template(template, TEMPLATE)
        if not any(says in p for p in problems):
            print(f"check_iam.py misses: {what} (expected `{says}`, got {problems})")
            failed += 1
    print(f"check_iam omissions: {len(CASES) - failed}/{len(CASES)} caught")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
