#!/usr/bin/env bash
# Lints the CloudFormation templates in infra/ (cfn-lint from PyPI, installed here
# into a cached virtualenv, idempotently) and checks their IAM statements for least
# privilege (infra/check_iam.py), after proving the check catches a bad template.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${AUGUR_CACHE:-$HOME/.cache/augur}/cfn-lint-1.58.0"
if ! "$venv/bin/cfn-lint" --version > /dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==1.58.0" >&2
fi
templates=("$root"/infra/*.yaml)
"$venv/bin/cfn-lint" "${templates[@]}"
echo "cfn-lint: ${#templates[@]} template(s) clean"
# The check must be able to fail: a wildcard action and an unscoped resource.
bad="$(mktemp --suffix=.yaml)"
trap 'rm -f "$bad"' EXIT
cat > "$bad" <<'YAML'
Resources:
  R:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - { Effect: Allow, Action: "s3:*", Resource: "*" }
          - { Effect: Allow, Action: "dynamodb:GetItem", Resource: "*" }
YAML
if "$venv/bin/python" "$root/infra/check_iam.py" "$bad" > /dev/null; then
  echo "iam check failed to flag a bad template" >&2
  exit 1
fi
"$venv/bin/python" "$root/infra/check_iam.py" "${templates[@]}"
