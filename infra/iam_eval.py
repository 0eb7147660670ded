"""A small evaluator of the IAM identity policies in augur's template, to prove what
each role may and may not do (moto's IAM enforcement does not evaluate conditions).

It follows the documented evaluation logic for one identity policy set
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit Deny wins, else an Allow whose action, resource and every condition
match, else the implicit deny. Conditions: String{Equals,NotEquals,Like,NotLike},
Numeric{Equals,LessThan,LessThanEquals,GreaterThan,GreaterThanEquals}, Bool,
Arn{Equals,Like}, with the ForAllValues: / ForAnyValue: qualifiers and ...IfExists.
A condition on a key the request does not carry fails (ForAllValues: holds on none),
as IAM documents. Policy variables are not supported (the template uses none).

Usage: python iam_eval.py TEMPLATE ROLE REQUESTS.json
  REQUESTS.json: [{"action": "dynamodb:PutItem", "resource": "arn:...",
                   "context": {"dynamodb:LeadingKeys": ["trials#s"]}}, ...]
  Prints each request denied and exits 1 if any is.
       python iam_eval.py --policies TEMPLATE TABLE BUCKET [NAME=VALUE ...]
  Prints each role's statements (and the CLI's managed policy's), resolved for a
  deployment whose table and bucket are TABLE and BUCKET, as JSON: what the test
  stand-in enforces on every request.
"""
import fnmatch
import json
import sys

from cfnlint.decode import decode

# What the template's intrinsic functions resolve to in the evaluation's account.
ACCOUNT, REGION, PARTITION, TABLE, BUCKET = "123456789012", "us-east-1", "aws", "augur-table", "augur-bucket"
OVERRIDES = {}


def names(template):
    """`${...}` names and `!Ref`/`!GetAtt` targets, as the evaluation's account sees them."""
    out = {
        "AWS::AccountId": ACCOUNT,
        "AWS::Region": REGION,
        "AWS::Partition": PARTITION,
        "AWS::StackName": "augur",
        "Table": TABLE,
        "Table.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}",
        "Table.StreamArn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}/stream/1",
        "Bucket": BUCKET,
        "Bucket.Arn": f"arn:aws:s3:::{BUCKET}",
        "WorkerRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/augur-worker",
        "WorkerSecurityGroup.GroupId": "sg-0123456789abcdef0",
        "WorkerLaunchTemplate": "lt-0123456789abcdef0",
        "LambdaLogGroup.Arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/augur-tick",
    }
    for name, p in (template.get("Parameters") or {}).items():
        out.setdefault(name, str(p.get("Default", "")))
    out.update(OVERRIDES)
    return out


def resolve(node, known):
    """The template's intrinsic functions resolved (Sub, Ref, GetAtt, Split)."""
    if isinstance(node, list):
        return [resolve(n, known) for n in node]
    if isinstance(node, dict):
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Fn::Sub":
                text = arg[0] if isinstance(arg, list) else arg
                for k, v in known.items():
                    text = text.replace("${" + k + "}", v)
                # ${!name} is the literal ${name}: a policy variable, left to IAM.
                return text.replace("${!", "${")
            # Resources the evaluation does not name get an ARN of their own.
            if fn == "Ref":
                return known.get(arg, f"arn:aws:stack:::{arg}")
            if fn == "Fn::GetAtt":
                name = ".".join(arg) if isinstance(arg, list) else arg
                return known.get(name, f"arn:aws:stack:::{name}")
            if fn == "Fn::Split":
                return resolve(arg[1], known).split(arg[0])
        return {k: resolve(v, known) for k, v in node.items()}
    return node


def role_statements(template, role):
    """Every statement of a role's inline policies and of the managed policies that
    name it (or, for a managed policy's own name, that policy)."""
    known = names(template)
    res = template["Resources"][role]
    docs = [p["PolicyDocument"] for p in (res["Properties"].get("Policies") or [])]
    if res["Type"] == "AWS::IAM::ManagedPolicy":
        docs = [res["Properties"]["PolicyDocument"]]
    out = []
    for d in docs:
        st = d["Statement"]
        out += st if isinstance(st, list) else [st]
    return [resolve(s, known) for s in out]


def as_list(v):
    return v if isinstance(v, list) else [v]


def matches(pattern, value):
    return fnmatch.fnmatchcase(value.lower(), pattern.lower()) if "*" in pattern or "?" in pattern else pattern.lower() == value.lower()


def like(pattern, value):
    return fnmatch.fnmatchcase(value, pattern)


TESTS = {
    "StringEquals": lambda want, got: got == want,
    "StringNotEquals": lambda want, got: got != want,
    "StringLike": lambda want, got: like(want, got),
    "StringNotLike": lambda want, got: not like(want, got),
    "ArnEquals": lambda want, got: got == want,
    "ArnLike": lambda want, got: like(want, got),
    "Bool": lambda want, got: str(got).lower() == str(want).lower(),
    "NumericEquals": lambda want, got: float(got) == float(want),
    "NumericLessThan": lambda want, got: float(got) < float(want),
    "NumericLessThanEquals": lambda want, got: float(got) <= float(want),
    "NumericGreaterThan": lambda want, got: float(got) > float(want),
    "NumericGreaterThanEquals": lambda want, got: float(got) >= float(want),
}
NEGATED = {"StringNotEquals", "StringNotLike"}


def condition_holds(op, tests, context):
    # Null: "true" holds when the key is absent from the request, "false" when present.
    if op == "Null":
        return all((context.get(k) is None) == (str(v).lower() == "true") for k, v in tests.items())
    qualifier, _, base = op.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    if base not in TESTS:
        raise ValueError(f"condition operator {op} is not supported")
    for key, wanted in tests.items():
        wanted = [str(w) for w in as_list(wanted)]
        got = context.get(key, context.get(key.lower()))
        if got is None:
            if qualifier == "ForAllValues" or if_exists:
                continue
            return False
        got = [str(g) for g in as_list(got)]
        test = TESTS[base]
        # One value matches when it matches any wanted value; a negated operator
        # holds when it matches none.
        one = (lambda g: all(test(w, g) for w in wanted)) if base in NEGATED else (lambda g: any(test(w, g) for w in wanted))
        if qualifier == "ForAllValues":
            ok = all(one(g) for g in got)
        elif qualifier == "ForAnyValue":
            ok = any(one(g) for g in got)
        else:
            ok = len(got) == 1 and one(got[0])
        if not ok:
            return False
    return True


def applies(st, action, resource, context):
    if not any(matches(a, action) for a in as_list(st.get("Action", []))):
        return False
    if not any(matches(r, resource) for r in as_list(st.get("Resource", []))):
        return False
    return all(condition_holds(op, tests, context) for op, tests in (st.get("Condition") or {}).items())


def decide(statements, action, resource, context=None):
    """`Deny` (explicit), `Allow`, or `implicit deny`."""
    context = context or {}
    hits = [st["Effect"] for st in statements if applies(st, action, resource, context)]
    if "Deny" in hits:
        return "Deny"
    return "Allow" if "Allow" in hits else "implicit deny"


def main(template_path, role, requests_path):
    template, matches_ = decode(template_path)
    assert template is not None, matches_
    statements = role_statements(template, role)
    with open(requests_path) as f:
        requests = json.load(f)
    denied = 0
    for r in requests:
        verdict = decide(statements, r["action"], r["resource"], r.get("context"))
        if verdict != "Allow":
            denied += 1
            print(f"{role}: {verdict}: {r['action']} on {r['resource']} {r.get('context') or ''}")
    print(f"iam_eval: {role}: {len(requests) - denied}/{len(requests)} requests allowed")
    return 1 if denied else 0


def policies(template_path, table, bucket, *overrides):
    """Every role's (and managed policy's) statements, for a deployment's names:
    NAME=VALUE overrides name what the deployment made (`WorkerSecurityGroup.GroupId`,
    `WorkerLaunchTemplate`, `WorkerRole.Arn`) or a parameter's value."""
    global TABLE, BUCKET, OVERRIDES
    TABLE, BUCKET = table, bucket
    OVERRIDES = dict(o.split("=", 1) for o in overrides)
    template, matches_ = decode(template_path)
    assert template is not None, matches_
    kinds = ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy")
    out = {name: role_statements(template, name)
           for name, r in template["Resources"].items() if r["Type"] in kinds}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--policies"]:
        sys.exit(policies(*sys.argv[2:]))
    sys.exit(main(*sys.argv[1:4]))
