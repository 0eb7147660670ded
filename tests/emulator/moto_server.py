"""moto's server, with what CloudFormation does for an AWS::S3::Bucket that moto
skips: it applies the bucket's VersioningConfiguration and LifecycleConfiguration
(moto 5.2.5 applies only its encryption and tags), so that a deployed bucket can be
checked through S3's own API (tests/tests/deploy.rs). A rule property this does not
translate is an error, never dropped.

Usage: python moto_server.py [moto_server's arguments]
"""

import sys

from moto.s3.models import FakeBucket, s3_backends
from moto.utilities.utils import get_partition
from moto.server import main

# CloudFormation's rule properties (AWS::S3::Bucket Rule) and S3's (LifecycleRule).
KNOWN = {
    "Id",
    "Status",
    "Prefix",
    "NoncurrentVersionExpiration",
    "ExpiredObjectDeleteMarker",
    "AbortIncompleteMultipartUpload",
    "ExpirationInDays",
}


def api_rule(rule):
    unknown = set(rule) - KNOWN
    if unknown:
        raise ValueError(f"lifecycle rule properties this emulator does not apply: {unknown}")
    out = {"ID": rule.get("Id"), "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": str(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    expiration = {}
    if str(rule.get("ExpiredObjectDeleteMarker", "")).lower() == "true":
        expiration["ExpiredObjectDeleteMarker"] = "true"
    if "ExpirationInDays" in rule:
        expiration["Days"] = str(rule["ExpirationInDays"])
    if expiration:
        out["Expiration"] = expiration
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": str(days)}
    return out


def apply(bucket, properties, account_id, region_name):
    backend = s3_backends[account_id][get_partition(region_name)]
    versioning = properties.get("VersioningConfiguration")
    if versioning:
        backend.put_bucket_versioning(bucket.name, versioning["Status"])
    lifecycle = properties.get("LifecycleConfiguration")
    if lifecycle:
        bucket.set_lifecycle([api_rule(r) for r in lifecycle.get("Rules", [])])
    return bucket


create = FakeBucket.create_from_cloudformation_json.__func__
update = FakeBucket.update_from_cloudformation_json.__func__


def create_applied(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    bucket = create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    return apply(bucket, cloudformation_json.get("Properties", {}), account_id, region_name)


def update_applied(cls, original, new_name, cloudformation_json, account_id, region_name):
    bucket = update(cls, original, new_name, cloudformation_json, account_id, region_name)
    return apply(bucket, cloudformation_json.get("Properties", {}), account_id, region_name)


FakeBucket.create_from_cloudformation_json = classmethod(create_applied)
FakeBucket.update_from_cloudformation_json = classmethod(update_applied)

if __name__ == "__main__":
    sys.exit(main())
