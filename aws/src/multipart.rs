//! Large files go to S3 in parts: S3 takes at most 5 GiB in one `PutObject`, and
//! advises multipart uploads from about 100 MB; a part is 5 MiB to 5 GiB (the last
//! may be smaller), at most 10,000 of them
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html>,
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html>). A failed
//! upload is aborted, so no part is left behind to be billed.

use crate::s3::S3Error;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use std::path::Path;

/// Files from this size go in parts.
pub const MULTIPART_FROM: u64 = 64 * 1024 * 1024;

/// The least part S3 takes (all but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// The size of each part of a `size`-byte file: 16 MiB, or larger so that no more
/// than 10,000 parts are needed.
pub fn part_size(size: u64) -> u64 {
    (16 * 1024 * 1024).max(size.div_ceil(10_000)).max(MIN_PART)
}

/// Uploads `path` (`size` bytes) as `key` in parts of `part` bytes; how many parts.
pub async fn put_in_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    size: u64,
    part: u64,
) -> Result<usize, S3Error> {
    let fail = |op: &'static str, text: String| S3Error {
        op,
        what: key.to_string(),
        text,
        source: None,
    };
    let started = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| crate::s3::fail("CreateMultipartUpload", key, e))?;
    let id = started
        .upload_id()
        .ok_or_else(|| fail("CreateMultipartUpload", "no upload id".into()))?
        .to_string();
    match send_parts(client, bucket, key, &id, path, size, part).await {
        Ok(parts) => {
            let n = parts.len();
            client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| crate::s3::fail("CompleteMultipartUpload", key, e))?;
            Ok(n)
        }
        Err(e) => {
            // Best effort: a bucket lifecycle rule is the backstop.
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .send()
                .await;
            Err(e)
        }
    }
}

async fn send_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    id: &str,
    path: &Path,
    size: u64,
    part: u64,
) -> Result<Vec<CompletedPart>, S3Error> {
    let mut done = Vec::new();
    let mut offset = 0;
    while offset < size || done.is_empty() {
        let length = part.min(size - offset);
        let number = done.len() as i32 + 1;
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(aws_sdk_s3::primitives::Length::Exact(length))
            .build()
            .await
            .map_err(|e| crate::s3::io_error("upload", &path.display().to_string(), e))?;
        let sent = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(body)
            .send()
            .await
            .map_err(|e| crate::s3::fail("UploadPart", &format!("{key} part {number}"), e))?;
        done.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(String::from))
                .build(),
        );
        offset += length;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_16_mib_or_large_enough_for_10000() {
        assert_eq!(part_size(100 * 1024 * 1024), 16 * 1024 * 1024);
        let huge = 400 * 1024 * 1024 * 1024u64;
        assert!(huge.div_ceil(part_size(huge)) <= 10_000);
        assert!(part_size(1) >= MIN_PART);
    }
}
