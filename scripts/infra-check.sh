#!/usr/bin/env bash
# Lints the CloudFormation templates in infra/ (cfn-lint from PyPI, installed here
# into a cached virtualenv, idempotently), scans them with checkov (the same way: any
# finding fails, unless the template skips it in the resource's Metadata with its
# reason), and checks their IAM statements for least privilege (infra/check_iam.py),
# after proving the checks catch a bad template.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cfn_lint="$("$root/scripts/pytool.sh" cfn-lint 1.58.0 cfn-lint)"
templates=("$root"/infra/*.yaml)
"$cfn_lint" "${templates[@]}"
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
# checkov, offline: no download of Prisma Cloud's mappings, no update check.
checkov="$("$root/scripts/pytool.sh" checkov 3.3.30 checkov)"
scan() {
  CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE \
    "$checkov" -f "$1" --framework cloudformation --skip-download --compact --quiet 2>&1
}
if scan "$bad" > /dev/null; then
  echo "checkov failed to flag a bad template" >&2
  exit 1
fi
for t in "${templates[@]}"; do
  if ! report="$(scan "$t")"; then
    echo "$report" >&2
    echo "checkov: findings in $t: fix each, or skip it in the resource's Metadata (checkov: skip: - id, comment) with the reason" >&2
    exit 1
  fi
  echo "checkov $(basename "$t"): $(grep -o 'Passed checks: .*' <<< "$report")"
done
if "$(dirname "$cfn_lint")/python" "$root/infra/check_iam.py" "$bad" > /dev/null; then
  echo "iam check failed to flag a bad template" >&2
  exit 1
fi
# ... and each safeguard of augur's own template, removed in turn, is named.
"$(dirname "$cfn_lint")/python" "$root/infra/test_check_iam.py" "$root/infra/augur.yaml"
# The attacks on the control plane, as each role of the template, evaluated
# (infra/iam_eval.py): refused; what augur needs: allowed.
"$(dirname "$cfn_lint")/python" "$root/infra/test_iam_attacks.py" "$root/infra/augur.yaml"
"$(dirname "$cfn_lint")/python" "$root/infra/check_iam.py" "${templates[@]}"
