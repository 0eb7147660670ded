#!/usr/bin/env bash
# Deploys augur into an AWS account: builds augur-agent and augur-lambda for Amazon
# Linux 2023, stages the Lambda bundle, uploads the agents (named by their SHA-256,
# before an update moves the stack's pins to them), creates or updates the
# CloudFormation stack (infra/augur.yaml) and waits for it, deletes the agent builds
# neither pinned nor just replaced, and writes the CLI's config
# so that `augur run --backend aws` needs no further flags. Idempotent: run it again to
# update. With AWS_ENDPOINT_URL it deploys into an emulator.
#
# Usage: infra/deploy.sh [options]
#   --stack NAME        stack name (default: augur)
#   --region REGION     region (default: AWS_REGION, AWS_DEFAULT_REGION, or the CLI's)
#   --vpc VPC_ID        VPC of the workers (default: the region's default VPC)
#   --subnet SUBNET_ID  subnet of the workers (default: the VPC's default subnet)
#   --route-tables L    route tables of the workers' subnets, comma-separated: the
#                       stack adds gateway endpoints for S3 and DynamoDB to them (a
#                       private subnet then reaches both without a NAT gateway)
#   --image AMI_ID      AMI for studies that name none (default: the latest Amazon Linux 2023
#                       for the instance type, resolved by EC2 at each launch)
#   --tick-rate MIN     minutes between scheduled ticks (default: 1)
#   --instance-types L  instance types workers may launch as, comma-separated IAM
#                       patterns (default: the template's WorkerInstanceTypes)
#   --profile PROFILE   cargo profile of the build: release (default) or dev
#   --agent PATH        use this augur-agent build (x86_64) instead of building one
#   --agent-arm64 PATH  the same for arm64 (Graviton) instances; when the binaries
#                       are built here, both are (without either, Graviton types are
#                       refused until one is pinned)
#   --lambda PATH       use this augur-lambda build instead of building one
#   --config FILE       where to write the CLI config
#                       (default: AUGUR_CONFIG or ~/.config/augur/config.toml)
#   --delete            delete the stack (the table and bucket are retained)
# Exit codes: 0 done, 2 bad arguments or missing tools, 3 AWS refused or failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

stack=augur
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
vpc="" subnet="" route_tables="" image="" tick_rate=1 profile=release agent="" agent_arm64="" lambda="" delete=0
# The template's default, so that each deploy passes the value (not "the previous").
instance_types="$(sed -n '/^  WorkerInstanceTypes:/,/Default:/s/^ *Default: *"\(.*\)"$/\1/p' "$root/infra/augur.yaml")"
config="${AUGUR_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/augur/config.toml}"

die() { echo "deploy: $2" >&2; exit "$1"; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || die 2 "$1 needs a value (see infra/deploy.sh --help)"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) need "$@"; stack="$2"; shift 2 ;;
    --region) need "$@"; region="$2"; shift 2 ;;
    --vpc) need "$@"; vpc="$2"; shift 2 ;;
    --subnet) need "$@"; subnet="$2"; shift 2 ;;
    --route-tables) need "$@"; route_tables="$2"; shift 2 ;;
    --image) need "$@"; image="$2"; shift 2 ;;
    --tick-rate) need "$@"; tick_rate="$2"; shift 2 ;;
    --instance-types) need "$@"; instance_types="$2"; shift 2 ;;
    --profile) need "$@"; profile="$2"; shift 2 ;;
    --agent) need "$@"; agent="$2"; shift 2 ;;
    --agent-arm64) need "$@"; agent_arm64="$2"; shift 2 ;;
    --lambda) need "$@"; lambda="$2"; shift 2 ;;
    --config) need "$@"; config="$2"; shift 2 ;;
    --delete) delete=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die 2 "unknown argument \`$1\` (see infra/deploy.sh --help)" ;;
  esac
done
[[ "$stack" =~ ^[A-Za-z][A-Za-z0-9-]{0,100}$ ]] || die 2 "--stack \`$stack\`: letters, digits and dashes, starting with a letter"
[[ "$tick_rate" =~ ^[1-9][0-9]*$ ]] || die 2 "--tick-rate \`$tick_rate\`: a whole number of minutes, at least 1"
case "$profile" in release|dev) ;; *) die 2 "--profile \`$profile\`: release or dev" ;; esac
[ -z "$route_tables" ] || [[ "$route_tables" =~ ^rtb-[0-9a-f]+(,rtb-[0-9a-f]+)*$ ]] \
  || die 2 "--route-tables \`$route_tables\`: comma-separated route table ids (rtb-...)"
[[ "$instance_types" =~ ^[a-z0-9.*-]+(,[a-z0-9.*-]+)*$ ]] \
  || die 2 "--instance-types \`$instance_types\`: comma-separated types or patterns (t3.*,c7i.large)"
for f in "$agent" "$agent_arm64" "$lambda"; do
  [ -z "$f" ] || [ -f "$f" ] || die 2 "no such file: $f"
done
AWS="${AWS:-aws}"
command -v "$AWS" > /dev/null || die 2 "needs the AWS CLI: \`aws\` on PATH, or AWS=/path/to/aws (scripts/awscli.sh installs one)"
[ -n "$region" ] || region="$("$AWS" configure get region 2> /dev/null || true)"
[ -n "$region" ] || die 2 "no region: --region, or AWS_REGION"
aws() { "$AWS" --region "$region" "$@"; }
say() { echo "deploy: $*" >&2; }

stack_status() {
  aws cloudformation describe-stacks --stack-name "$stack" \
    --query 'Stacks[0].StackStatus' --output text 2> /dev/null || echo NONE
}

failures() {
  aws cloudformation describe-stack-events --stack-name "$stack" --output text \
    --query 'StackEvents[?ends_with(ResourceStatus, `FAILED`)].[LogicalResourceId, ResourceType, ResourceStatusReason]' \
    2> /dev/null | head -20 >&2 || true
}

if [ "$delete" = 1 ]; then
  [ "$(stack_status)" != NONE ] || { say "no stack \`$stack\` in $region"; exit 0; }
  say "deleting stack \`$stack\` in $region"
  aws cloudformation delete-stack --stack-name "$stack" || die 3 "delete-stack refused"
  if ! aws cloudformation wait stack-delete-complete --stack-name "$stack"; then
    failures
    die 3 "the stack did not delete; the failures are above"
  fi
  say "deleted; the table and the bucket are retained (DeletionPolicy: Retain): delete them by hand to lose the data"
  exit 0
fi

account="$(aws sts get-caller-identity --query Account --output text)" \
  || die 3 "no AWS credentials (aws sts get-caller-identity failed)"

# 1. The network and the image, checked before anything is built or made.
if [ -z "$vpc" ]; then
  vpc="$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true \
    --query 'Vpcs[0].VpcId' --output text)"
  [ -n "$vpc" ] && [ "$vpc" != None ] || die 2 "no default VPC in $region: give one with --vpc"
fi
aws ec2 describe-vpcs --vpc-ids "$vpc" > /dev/null 2>&1 || die 2 "--vpc $vpc: no such VPC in $region"
if [ -n "$subnet" ]; then
  in_vpc="$(aws ec2 describe-subnets --subnet-ids "$subnet" --query 'Subnets[0].VpcId' \
    --output text 2> /dev/null)" || die 2 "--subnet $subnet: no such subnet in $region"
  [ "$in_vpc" = "$vpc" ] || die 2 "--subnet $subnet is in VPC $in_vpc, not $vpc: give its VPC with --vpc"
fi
for rtb in ${route_tables//,/ }; do
  in_vpc="$(aws ec2 describe-route-tables --route-table-ids "$rtb" \
    --query 'RouteTables[0].VpcId' --output text 2> /dev/null)" || die 2 "--route-tables: no route table $rtb in $region"
  [ "$in_vpc" = "$vpc" ] || die 2 "--route-tables: $rtb is in VPC $in_vpc, not $vpc: give its VPC with --vpc"
done
# Without --image, augur launches the latest Amazon Linux 2023 for each instance
# type's architecture (RunInstances resolves its public SSM parameter).
# Workers may boot Amazon's images, and the owner's of --image (IAM: ec2:Owner).
owners=amazon
if [ -n "$image" ]; then
  owner="$(aws ec2 describe-images --image-ids "$image" --query 'Images[0].OwnerId' --output text 2> /dev/null)" \
    || die 2 "--image $image: no such image in $region"
  [ -z "$owner" ] || [ "$owner" = None ] || [ "$owner" = amazon ] || owners="amazon,$owner"
fi

# 2. The binaries, for Amazon Linux 2023.
if [ -z "$agent" ] || [ -z "$lambda" ]; then
  say "building augur-agent (x86_64, arm64) and augur-lambda ($profile) for Amazon Linux 2023"
  built="$("$root/scripts/instance-binaries.sh" "$profile")"
  agent="${agent:-$built}"
  lambda="${lambda:-$(dirname "$built")/augur-lambda}"
  agent_arm64="${agent_arm64:-${built/x86_64-unknown-linux-gnu/aarch64-unknown-linux-gnu}}"
fi

# 3. The Lambda bundle (`bootstrap`), named by its content so that an update of the
#    code is an update of the stack.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$lambda" "$work/augur-lambda.zip" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16
info.compress_type = zipfile.ZIP_DEFLATED
with zipfile.ZipFile(dst, "w") as z, open(src, "rb") as f:
    z.writestr(info, f.read())
PY
digest="$(sha256sum "$work/augur-lambda.zip" | cut -c1-16)"
# Every launch pins the agent by its SHA-256: an instance runs no other.
agent_sha256="$(sha256sum "$agent" | cut -c1-64)"
agent_sha256_arm64=""
[ -z "$agent_arm64" ] || agent_sha256_arm64="$(sha256sum "$agent_arm64" | cut -c1-64)"
key="lambda/augur-lambda-$digest.zip"

# 4. A staging bucket for the bundle (the stack's own bucket does not exist yet).
staging="augur-staging-$account-$region"
if ! aws s3api head-bucket --bucket "$staging" > /dev/null 2>&1; then
  say "creating the staging bucket $staging"
  if [ "$region" = us-east-1 ]; then
    aws s3api create-bucket --bucket "$staging" > /dev/null
  else
    aws s3api create-bucket --bucket "$staging" \
      --create-bucket-configuration "LocationConstraint=$region" > /dev/null
  fi || die 3 "cannot create the staging bucket $staging"
  aws s3api put-public-access-block --bucket "$staging" --public-access-block-configuration \
    BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
fi
aws s3 cp --quiet "$work/augur-lambda.zip" "s3://$staging/$key" || die 3 "cannot upload the Lambda bundle"

# 5. Spot instances launched through the API need EC2's spot service-linked role
#    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/service-linked-roles-spot-instance-requests.html).
spot_role="$(aws iam list-roles --path-prefix /aws-service-role/spot.amazonaws.com/ \
  --query 'Roles[0].RoleName' --output text 2> /dev/null || true)"
if [ -z "$spot_role" ] || [ "$spot_role" = None ]; then
  say "creating the spot service-linked role AWSServiceRoleForEC2Spot"
  aws iam create-service-linked-role --aws-service-name spot.amazonaws.com > /dev/null \
    || die 3 "cannot create the spot service-linked role (iam:CreateServiceLinkedRole)"
fi

# The stack's Outputs; a resource's physical id where an output is missing (the
# emulator creates stacks from change sets without their Outputs).
read_stack() {
  outputs="$(aws cloudformation describe-stacks --stack-name "$stack" --query 'Stacks[0].Outputs' --output json)"
  resources="$(aws cloudformation list-stack-resources --stack-name "$stack" \
    --query 'StackResourceSummaries[].[LogicalResourceId, PhysicalResourceId]' --output json)"
}
out() {
  python3 - "$1" "$2" "$outputs" "$resources" <<'PY'
import json, sys
key, logical, outputs, resources = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
found = {o["OutputKey"]: o["OutputValue"] for o in (json.loads(outputs) or [])}
physical = dict(json.loads(resources) or [])
print(found.get(key) or physical.get(logical, ""))
PY
}
param() {
  aws cloudformation describe-stacks --stack-name "$stack" --output text \
    --query "Stacks[0].Parameters[?ParameterKey=='$1'].ParameterValue"
}

# The agents instances download, one for each architecture (augur_aws::launch::Arch),
# each under a key named by its SHA-256 (agent/<sha256>/augur-agent, -arm64): a new
# build never replaces the one a launch already pinned.
upload_agents() {
  local file pin name key
  while read -r file pin name; do
    [ -n "$file" ] || continue
    key="agent/$pin/$name"
    aws s3api head-object --bucket "$1" --key "$key" > /dev/null 2>&1 && continue
    aws s3 cp --quiet "$file" "s3://$1/$key" || die 3 "cannot upload the agent to s3://$1/$key"
  done <<< "$(printf '%s %s augur-agent\n' "$agent" "$agent_sha256"
              [ -z "$agent_arm64" ] || printf '%s %s augur-agent-arm64\n' "$agent_arm64" "$agent_sha256_arm64")"
}

# 6. An update: the new agents go up before the stack's pins move (the tick launches
#    with the stack's pins, and each instance fetches the build its launch names),
#    and the pins they replace are kept.
previous="" legacy_unused=1
if [ "$(stack_status)" != NONE ]; then
  read_stack
  bucket="$(out Bucket Bucket)"
  previous="$(param AgentSha256) $(param AgentSha256Arm64)"
  if [ -n "$bucket" ] && aws s3api head-bucket --bucket "$bucket" > /dev/null 2>&1; then
    # A stack deployed before builds were named by their SHA-256 launches from the
    # fixed keys (agent/augur-agent): they stay until a deploy after this one.
    aws s3api head-object --bucket "$bucket" --key "agent/$(param AgentSha256)/augur-agent" \
      > /dev/null 2>&1 || legacy_unused=0
    upload_agents "$bucket"
  fi
fi

# 7. The stack: created or updated, and waited for.
say "deploying stack \`$stack\` in $region (VPC $vpc)"
params=(VpcId="$vpc" LambdaCodeBucket="$staging" LambdaCodeKey="$key" TickRateMinutes="$tick_rate"
        WorkerImage="$image" WorkerSubnet="$subnet" WorkerImageOwners="$owners" RouteTableIds="$route_tables"
        AgentSha256="$agent_sha256" AgentSha256Arm64="$agent_sha256_arm64"
        WorkerInstanceTypes="$instance_types")
if ! aws cloudformation deploy --template-file "$root/infra/augur.yaml" --stack-name "$stack" \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --parameter-overrides "${params[@]}" >&2; then
  failures
  die 3 "the stack did not deploy; the failures are above (status: $(stack_status))"
fi
read_stack
table="$(out Table Table)" bucket="$(out Bucket Bucket)"
sg="$(out SecurityGroup WorkerSecurityGroup)" profile_name="$(out InstanceProfile WorkerInstanceProfile)"
tick="$(out Tick Tick)" template="$(out LaunchTemplate WorkerLaunchTemplate)"
tick_role="$(out TickRole TickRole)" worker_role="$(out WorkerRole WorkerRole)"
# A role's physical id is its name: its ARN for `augur doctor`.
role_arn() {
  case "$1" in
    arn:*|"") echo "$1" ;;
    *) echo "arn:aws:iam::$(aws sts get-caller-identity --query Account --output text):role/$1" ;;
  esac
}
tick_role="$(role_arn "$tick_role")" worker_role="$(role_arn "$worker_role")"
prefix="$(param LogGroupPrefix)" secrets_prefix="$(param SecretsPrefix)"
retention="$(param LogRetentionDays)"
[ -n "$table" ] && [ -n "$bucket" ] || die 3 "the stack has no Table or Bucket output"
# A new stack's bucket exists only now (an update's has the builds already: no-op).
upload_agents "$bucket"
# Builds of neither the new pins nor the ones they replaced (launches in flight
# may still fetch those) go, and so do the fixed keys of deploys from before builds
# were named by their SHA-256 once no launch uses them. The bucket keeps a deleted
# build as a noncurrent version for 30 days (its old-agent-builds rule); then its
# delete marker goes too.
keep=" $agent_sha256 $agent_sha256_arm64 $previous "
for old in $(aws s3api list-objects-v2 --bucket "$bucket" --prefix agent/ \
    --query 'Contents[].Key' --output text); do
  [ "$old" != None ] || continue
  pin="${old#agent/}" pin="${pin%%/*}"
  if [[ "$pin" =~ ^[0-9a-f]{64}$ ]]; then
    case "$keep" in *" $pin "*) continue ;; esac
  elif [ "$legacy_unused" = 0 ]; then
    continue
  fi
  aws s3api delete-object --bucket "$bucket" --key "$old" > /dev/null \
    || die 3 "cannot delete the old agent build s3://$bucket/$old"
  say "deleted the old agent build $old"
done

# 8. The CLI's config.
mkdir -p "$(dirname "$config")"
{
  echo "# Written by infra/deploy.sh for stack \`$stack\` in $region. Flags and AUGUR_*"
  echo "# variables override it. Uncomment \`backend\` to make AWS the default."
  echo "# backend = \"aws\""
  echo "[aws]"
  echo "stack = \"$stack\""
  echo "region = \"$region\""
  echo "table = \"$table\""
  echo "bucket = \"$bucket\""
  echo "log_group_prefix = \"$prefix\""
  echo "security_groups = [\"$sg\"]"
  echo "instance_profile = \"$profile_name\""
  [ -z "$subnet" ] || echo "subnet = \"$subnet\""
  [ -z "$image" ] || echo "image = \"$image\""
  echo "tick_function = \"$tick\""
  [ -z "$tick_role" ] || echo "tick_role = \"$tick_role\""
  [ -z "$worker_role" ] || echo "worker_role = \"$worker_role\""
  [ -z "$template" ] || echo "launch_template = \"$template\""
  echo "agent_sha256 = \"$agent_sha256\""
  [ -z "$agent_sha256_arm64" ] || echo "agent_sha256_arm64 = \"$agent_sha256_arm64\""
  echo "secrets_prefix = \"$secrets_prefix\""
  echo "log_retention_days = $retention"
} > "$config.tmp"
mv "$config.tmp" "$config"
say "stack \`$stack\`: $(stack_status)"
say "table $table, bucket $bucket, tick function $tick"
say "CLI config written to $config"
echo "next: augur doctor --backend aws   (checks every path's permissions), then augur submit --backend aws study.toml"
