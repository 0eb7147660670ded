"""Runs the attacks of issue 15 against the template's own policies with iam_eval.py,
and sees each refused; runs what augur needs and sees it allowed. The evaluator is
itself proven: with each safeguard removed, the attack it stops goes through.

Usage: python test_iam_attacks.py [TEMPLATE]   (run by scripts/infra-check.sh)
"""
import os
import sys

from cfnlint.decode import decode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iam_eval import ACCOUNT, BUCKET, REGION, TABLE, decide, role_statements  # noqa: E402

TEMPLATE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "augur.yaml")
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"
INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"
# An agent build's key names its SHA-256 (agent/<sha256>/augur-agent).
PIN = "0" * 64


def pk(*keys):
    return {"dynamodb:LeadingKeys": list(keys)}


def launch(instance_type="t3.micro", stack=TABLE, tokens="required", hops="1"):
    return {
        "aws:RequestTag/augur:stack": stack,
        "ec2:InstanceType": instance_type,
        "ec2:MetadataHttpTokens": tokens,
        "ec2:MetadataHttpPutResponseHopLimit": hops,
    }


# (role, what, action, resource, context, allowed?)
CASES = [
    # A trial script with the worker role's credentials.
    ("WorkerRole", "read its study's record", "dynamodb:GetItem", TABLE_ARN, pk("s"), True),
    ("WorkerRole", "write its trial", "dynamodb:PutItem", TABLE_ARN, pk("trials#s"), True),
    ("WorkerRole", "mark its trial (boot refusal)", "dynamodb:UpdateItem", TABLE_ARN, pk("trials#s"), True),
    ("WorkerRole", "beat (its trial's beat item)", "dynamodb:UpdateItem", TABLE_ARN, pk("trials#s"), True),
    ("WorkerRole", "read its trial's beat", "dynamodb:GetItem", TABLE_ARN, pk("trials#s"), True),
    ("WorkerRole", "rewrite a study's spec", "dynamodb:PutItem", TABLE_ARN, pk("s"), False),
    ("WorkerRole", "take a study's lease", "dynamodb:UpdateItem", TABLE_ARN, pk("s"), False),
    ("WorkerRole", "invent a study", "dynamodb:PutItem", TABLE_ARN, pk("evil"), False),
    ("WorkerRole", "submit a study to the tick", "dynamodb:PutItem", TABLE_ARN, pk("#submitted"), False),
    ("WorkerRole", "delete a trial", "dynamodb:DeleteItem", TABLE_ARN, pk("trials#s"), False),
    ("WorkerRole", "batch-write anything", "dynamodb:BatchWriteItem", TABLE_ARN, pk("s"), False),
    ("WorkerRole", "read the whole table", "dynamodb:Scan", TABLE_ARN, {}, False),
    ("WorkerRole", "launch an instance", "ec2:RunInstances", INSTANCE, launch(), False),
    ("WorkerRole", "replace the agent", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/agent/{PIN}/augur-agent", {}, False),
    ("WorkerRole", "fetch the pinned agent", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/agent/{PIN}/augur-agent", {}, True),
    ("WorkerRole", "save a checkpoint", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/checkpoints/s/3/model.pt", {}, True),
    ("WorkerRole", "abort its checkpoint's upload", "s3:AbortMultipartUpload", f"arn:aws:s3:::{BUCKET}/checkpoints/s/3/model.pt", {}, True),
    ("WorkerRole", "abort an upload of study files", "s3:AbortMultipartUpload", f"arn:aws:s3:::{BUCKET}/studies/s/files/data.bin", {}, False),
    ("WorkerRole", "plant a study file", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/studies/s/files/train.py", {}, False),
    ("WorkerRole", "read a secret of the stack", "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/augur/wandb", {}, True),
    ("WorkerRole", "read another team's parameter", "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/team/db", {}, False),
    ("WorkerRole", "read another secret", "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/db-AbCdEf", {}, False),
    # The serverless tick, driving studies whose records a writer may have tampered with.
    ("TickRole", "read the running trials' beats", "dynamodb:BatchGetItem", TABLE_ARN, pk("trials#s"), True),
    ("TickRole", "stop an ended attempt's beats", "dynamodb:UpdateItem", TABLE_ARN, pk("trials#s"), True),
    ("TickRole", "launch a worker", "ec2:RunInstances", INSTANCE, launch(), True),
    ("TickRole", "launch a huge instance", "ec2:RunInstances", INSTANCE, launch("x2iedn.32xlarge"), False),
    ("TickRole", "launch untagged", "ec2:RunInstances", INSTANCE, {k: v for k, v in launch().items() if "RequestTag" not in k}, False),
    ("TickRole", "launch as another stack's", "ec2:RunInstances", INSTANCE, launch(stack="other"), False),
    ("TickRole", "launch with IMDSv1", "ec2:RunInstances", INSTANCE, launch(tokens="optional"), False),
    ("TickRole", "launch with credentials for containers", "ec2:RunInstances", INSTANCE, launch(hops="2"), False),
    ("TickRole", "launch from the stack's launch template", "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0123456789abcdef0", {}, True),
    ("TickRole", "launch from another launch template", "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0fff", {}, False),
    ("CliPolicy", "launch from the stack's launch template", "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0123456789abcdef0", {}, True),
    ("CliPolicy", "launch from another launch template", "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0fff", {}, False),
    ("CliPolicy", "tag the volume of a launch", "ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-1", {"ec2:CreateAction": "RunInstances"}, True),
    ("CliPolicy", "tag someone's volume", "ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-1", {"ec2:CreateAction": "CreateTags"}, False),
    ("TickRole", "boot an Amazon image", "ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/ami-1", {"ec2:Owner": "amazon"}, True),
    ("TickRole", "boot someone's image", "ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/ami-1", {"ec2:Owner": "999999999999"}, False),
    ("TickRole", "end this stack's instance", "ec2:TerminateInstances", INSTANCE, {"aws:ResourceTag/augur:stack": TABLE}, True),
    ("TickRole", "end another stack's instance", "ec2:TerminateInstances", INSTANCE, {"aws:ResourceTag/augur:stack": "other"}, False),
    ("TickRole", "price a launch's spot instance", "ec2:DescribeSpotPriceHistory", "*", {}, True),
    ("TickRole", "price a launch's on-demand instance", "pricing:GetProducts", "*", {}, True),
    ("TickRole", "count an instance type's GPUs", "ec2:DescribeInstanceTypes", "*", {}, True),
    ("TickRole", "resolve the Deep Learning AMI", "ssm:GetParameters", f"arn:aws:ssm:{REGION}::parameter/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id", {}, True),
    ("TickRole", "read someone's parameter", "ssm:GetParameters", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/team/db", {}, False),
    ("WorkerRole", "count an instance type's GPUs", "ec2:DescribeInstanceTypes", "*", {}, False),
    ("WorkerRole", "read prices", "pricing:GetProducts", "*", {}, False),
    ("TickRole", "pass the worker role to EC2", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/augur-worker", {"iam:PassedToService": "ec2.amazonaws.com"}, True),
    ("TickRole", "pass the worker role to Lambda", "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/augur-worker", {"iam:PassedToService": "lambda.amazonaws.com"}, False),
    # A person with the CLI policy.
    ("CliPolicy", "price a launch's spot instance", "ec2:DescribeSpotPriceHistory", "*", {}, True),
    ("CliPolicy", "price a launch's on-demand instance", "pricing:GetProducts", "*", {}, True),
    ("CliPolicy", "count an instance type's GPUs", "ec2:DescribeInstanceTypes", "*", {}, True),
    ("CliPolicy", "upload study files", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/studies/s/files/train.py", {}, True),
    ("CliPolicy", "list a study's file versions (augur delete)", "s3:ListBucketVersions", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "studies/s/"}, True),
    ("CliPolicy", "list a study's checkpoint versions", "s3:ListBucketVersions", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "checkpoints/s/"}, True),
    ("CliPolicy", "list the agent's versions", "s3:ListBucketVersions", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "agent/"}, False),
    ("CliPolicy", "delete a study file's old version", "s3:DeleteObjectVersion", f"arn:aws:s3:::{BUCKET}/studies/s/files/train.py", {}, True),
    ("CliPolicy", "delete a checkpoint's old version", "s3:DeleteObjectVersion", f"arn:aws:s3:::{BUCKET}/checkpoints/s/1/model.pt", {}, True),
    ("CliPolicy", "delete an old agent build", "s3:DeleteObjectVersion", f"arn:aws:s3:::{BUCKET}/agent/{PIN}/augur-agent", {}, False),
    ("CliPolicy", "replace the agent", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/agent/{PIN}/augur-agent", {}, False),
    ("CliPolicy", "delete an agent build", "s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/agent/{PIN}/augur-agent", {}, False),
    ("CliPolicy", "replace the tick's code", "s3:PutObject", f"arn:aws:s3:::{BUCKET}/lambda/augur-lambda.zip", {}, False),
]

# Each safeguard, removed: the attack it stops must then go through (the evaluator
# can tell). (role, Sid, what is removed, the attack)
WEAKENED = [
    ("WorkerRole", "WriteTrialsOnly", "rewrite a study's spec"),
    ("TickRole", "LaunchWorkers", "launch a huge instance"),
    ("TickRole", "LaunchFromAllowedImages", "boot someone's image"),
    ("TickRole", "EndAugurInstancesOnly", "end another stack's instance"),
    ("TickRole", "PassWorkerRole", "pass the worker role to Lambda"),
]


def main():
    template, matches = decode(TEMPLATE)
    assert template is not None, matches
    failed = 0
    for role, what, action, resource, context, allowed in CASES:
        verdict = decide(role_statements(template, role), action, resource, context)
        if (verdict == "Allow") != allowed:
            print(f"{role} may{'' if verdict == 'Allow' else ' not'} {what} ({verdict}), and should{'' if allowed else ' not'}")
            failed += 1
    for role, sid, attack in WEAKENED:
        statements = role_statements(template, role)
        for st in statements:
            if st.get("Sid") == sid:
                st.pop("Condition", None)
        case = next(c for c in CASES if c[0] == role and c[1] == attack)
        if decide(statements, case[2], case[3], case[4]) != "Allow":
            print(f"the evaluator still refuses `{attack}` with {role}'s {sid} condition removed: it proves nothing")
            failed += 1
    print(f"iam attacks: {len(CASES)} requests as the template's roles, {len(WEAKENED)} weakened policies; {failed} wrong")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
