//! S3: the artifacts bucket. Study files go to `studies/<study>/files/<name>` for
//! agents to fetch into each attempt's working directory; agent builds to `agent/`.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use std::path::Path;

/// An S3 failure.
#[derive(Debug, thiserror::Error)]
#[error("S3 {op} {what}: {text}")]
pub struct S3Error {
    pub op: &'static str,
    pub what: String,
    pub text: String,
    /// The SDK's (or the file system's) error, when it came from one.
    #[source]
    pub source: Option<augur_store::Cause>,
}

pub(crate) fn fail<E>(op: &'static str, what: &str, e: SdkError<E>) -> S3Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    S3Error {
        op,
        what: what.to_string(),
        text: crate::error_text(&e),
        source: Some(Box::new(e)),
    }
}

/// An S3 client for `config`, path-style when an endpoint is overridden (emulators).
///
/// Its calls move data (a checkpoint, a part of one), so they are not held to the
/// 30 s attempts of the other services' calls: an upload on a slow link takes what
/// it takes (a stalled body is still caught by the SDK's stalled-stream protection,
/// on by default), bounded only by [`TRANSFER_ATTEMPT`] an attempt.
pub fn client(config: &aws_config::SdkConfig, path_style: bool) -> Client {
    use aws_config::timeout::TimeoutConfig;
    Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .operation_attempt_timeout(TRANSFER_ATTEMPT)
                    .operation_timeout(TRANSFER_ATTEMPT * 3)
                    .build(),
            )
            .force_path_style(path_style)
            .interceptor(crate::calls::CallCounter)
            .build(),
    )
}

/// The longest one attempt of an S3 call may take (a part of at most 64 MiB, or an
/// object below the multipart threshold, at about 100 KB/s).
pub const TRANSFER_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(600);

/// Where a study's files live.
pub fn files_prefix(study: &str) -> String {
    format!("studies/{study}/files/")
}

/// Everything of a study in the bucket.
pub fn study_prefix(study: &str) -> String {
    format!("studies/{study}/")
}

/// Where a trial's checkpoints live (`AUGUR_CHECKPOINT_DIR`, synced by its agent).
pub fn checkpoint_prefix(study: &str, trial: u64) -> String {
    format!("checkpoints/{study}/{trial}/")
}

/// Every checkpoint of a study.
pub fn checkpoints_prefix(study: &str) -> String {
    format!("checkpoints/{study}/")
}

/// What a sync saw of each file (its size and modification time), to send only what
/// changed since.
pub type Synced = std::collections::BTreeMap<String, (u64, std::time::SystemTime)>;

/// The files under `dir` (relative paths) with their sizes and modification times.
pub fn snapshot(dir: &Path) -> Synced {
    let mut now = Synced::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel = rel.to_string_lossy().into_owned();
                let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                now.insert(rel, (meta.len(), mtime));
            }
        }
    }
    now
}

/// Sends the files of `dir` that changed since `seen` (new, or another size or
/// modification time) to `prefix`, and removes the keys of files that went away.
/// Returns the files and bytes sent.
pub async fn sync_up(
    client: &Client,
    bucket: &str,
    prefix: &str,
    dir: &Path,
    seen: &mut Synced,
) -> Result<(usize, u64), S3Error> {
    let now = snapshot(dir);
    let (mut files, mut bytes) = (0, 0);
    for (rel, stamp) in &now {
        if seen.get(rel) != Some(stamp) {
            put_file(client, bucket, &format!("{prefix}{rel}"), &dir.join(rel)).await?;
            files += 1;
            bytes += stamp.0;
        }
    }
    for gone in seen.keys().filter(|k| !now.contains_key(*k)) {
        let key = format!("{prefix}{gone}");
        client
            .delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| fail("DeleteObject", &key, e))?;
    }
    *seen = now;
    Ok((files, bytes))
}

/// Every key under `prefix`, across the listing's pages.
pub(crate) async fn keys_under(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, S3Error> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| fail("ListObjectsV2", prefix, e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .map(String::from),
        );
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(keys),
        }
    }
}

/// Every version and delete marker under `prefix` (key, version id), across the
/// listing's pages, and how many keys had a current version (the files a listing
/// shows). An unversioned bucket lists each object once, as version `null`.
async fn versions_under(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<(Vec<(String, String)>, usize), S3Error> {
    let (mut all, mut current) = (Vec::new(), 0);
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = client
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| fail("ListObjectVersions", prefix, e))?;
        for v in page.versions() {
            if let (Some(k), Some(id)) = (v.key(), v.version_id()) {
                current += usize::from(v.is_latest() == Some(true));
                all.push((k.to_string(), id.to_string()));
            }
        }
        for m in page.delete_markers() {
            if let (Some(k), Some(id)) = (m.key(), m.version_id()) {
                all.push((k.to_string(), id.to_string()));
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok((all, current));
        }
        key_marker = page.next_key_marker().map(String::from);
        version_marker = page.next_version_id_marker().map(String::from);
    }
}

/// Deletes everything under `prefix` for good: every version of every object and
/// every delete marker (1,000 per call). On a versioned bucket a `DeleteObjects`
/// without version ids only hides the objects behind delete markers, and they stay
/// billed (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/DeletingObjectVersions.html>).
/// How many files there were (keys with a current version).
pub async fn delete_prefix(client: &Client, bucket: &str, prefix: &str) -> Result<usize, S3Error> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let (versions, files) = versions_under(client, bucket, prefix).await?;
    let broken = |text: String| S3Error {
        op: "DeleteObjects",
        what: prefix.to_string(),
        text,
        source: None,
    };
    for chunk in versions.chunks(1000) {
        let objects: Vec<ObjectIdentifier> = chunk
            .iter()
            .filter_map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .version_id(v)
                    .build()
                    .ok()
            })
            .collect();
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| broken(e.to_string()))?;
        let out = client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| fail("DeleteObjects", prefix, e))?;
        // A key S3 would not delete is answered in the response, not as an error.
        if let Some(e) = out.errors().first() {
            return Err(broken(format!(
                "{} of {} not deleted, the first: {} {}: {}",
                out.errors().len(),
                chunk.len(),
                e.key().unwrap_or("?"),
                e.code().unwrap_or("?"),
                e.message().unwrap_or("")
            )));
        }
    }
    Ok(files)
}

/// Creates the bucket in `region` unless it exists (ours already). Outside
/// us-east-1 S3 wants the region named (`LocationConstraint`), else it answers
/// `IllegalLocationConstraintException`
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html>).
pub async fn ensure_bucket(client: &Client, bucket: &str, region: &str) -> Result<bool, S3Error> {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(false);
    }
    let mut create = client.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.as_service_error().and_then(|x| x.code()),
                Some("BucketAlreadyOwnedByYou")
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(fail("CreateBucket", bucket, e)),
    }
}

/// Uploads a file or a directory tree under `prefix`.
pub async fn upload(
    client: &Client,
    bucket: &str,
    prefix: &str,
    src: &Path,
) -> Result<usize, S3Error> {
    let mut count = 0;
    let mut stack = vec![(
        src.to_path_buf(),
        src.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )];
    while let Some((path, rel)) = stack.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path)
                .map_err(|e| io_error("upload", &path.display().to_string(), e))?;
            for e in entries.flatten() {
                stack.push((
                    e.path(),
                    format!("{rel}/{}", e.file_name().to_string_lossy()),
                ));
            }
            continue;
        }
        put_file(client, bucket, &format!("{prefix}{rel}"), &path).await?;
        count += 1;
    }
    Ok(count)
}

/// Uploads one file as `key`: in one call, or in parts from
/// [`crate::multipart::MULTIPART_FROM`].
pub async fn put_file(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
) -> Result<(), S3Error> {
    use crate::multipart::{part_size, put_in_parts, MULTIPART_FROM};
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size >= MULTIPART_FROM {
        put_in_parts(client, bucket, key, path, size, part_size(size)).await?;
        return Ok(());
    }
    let body = ByteStream::from_path(path)
        .await
        .map_err(|e| io_error("upload", &path.display().to_string(), e))?;
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .send()
        .await
        .map_err(|e| fail("PutObject", key, e))?;
    Ok(())
}

/// Whether `rel` (a key below the prefix) names a file inside the download directory:
/// plain components only, none empty, `.` or `..`.
pub(crate) fn safe_relative(rel: &str) -> bool {
    !rel.is_empty()
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\0'))
}

/// Streams `key` into the file `dst` (its directories made), never whole in memory.
pub(crate) async fn fetch(
    client: &Client,
    bucket: &str,
    key: &str,
    dst: &Path,
) -> Result<(), S3Error> {
    use tokio::io::AsyncWriteExt;
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail("GetObject", key, e))?;
    let local = |e: std::io::Error| io_error("download", &dst.display().to_string(), e);
    if let Some(p) = dst.parent() {
        tokio::fs::create_dir_all(p).await.map_err(local)?;
    }
    let mut file = tokio::fs::File::create(dst).await.map_err(local)?;
    let mut body = out.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| io_error("GetObject", key, e))?;
        file.write_all(&chunk).await.map_err(local)?;
    }
    file.flush().await.map_err(local)
}

/// A local or stream failure of an S3 transfer (a file, a body being read), with
/// the error it came from.
pub(crate) fn io_error<E>(op: &'static str, what: &str, e: E) -> S3Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    S3Error {
        op,
        what: what.to_string(),
        text: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// Downloads every object under `prefix` into `dir` (keys relative to the prefix).
pub async fn download(
    client: &Client,
    bucket: &str,
    prefix: &str,
    dir: &Path,
) -> Result<usize, S3Error> {
    let mut count = 0;
    for key in keys_under(client, bucket, prefix).await? {
        let key = key.as_str();
        // A listing is not trusted: a key outside the prefix, or one that would
        // climb out of `dir`, is passed over (never sliced mid-character).
        let Some(rel) = key.strip_prefix(prefix) else {
            continue;
        };
        if !safe_relative(rel) {
            continue;
        }
        fetch(client, bucket, key, &dir.join(rel)).await?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever key a listing answers, an accepted one stays inside the
        /// download directory, one plain component at a time.
        #[test]
        fn an_accepted_key_never_leaves_the_directory(
            parts in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec!["/", ".", "..", "\\", "\0", "~", "é"]).prop_map(String::from),
                    "[a-z]{1,3}",
                ],
                0..8,
            ),
        ) {
            let key: String = parts.concat();
            if safe_relative(&key) {
                let path = std::path::Path::new("/work/dir").join(&key);
                prop_assert!(path.starts_with("/work/dir"));
                prop_assert!(
                    std::path::Path::new(&key)
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{}",
                    key
                );
            }
        }
    }

    #[test]
    fn keys_that_would_leave_the_directory_are_refused() {
        for ok in ["train.py", "data/x.csv", "a..b"] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./x", "a/"] {
            assert!(!safe_relative(bad), "{bad:?}");
        }
    }
}
