//! A trial's checkpoint in the bucket, published whole.
//!
//! Under `checkpoints/<study>/<trial>/`:
//! - `augur-data/<attempt>.<seq>/<path>`: the files' contents, each key written once
//!   (a sync that failed does not reuse its `seq`: its manifest may have landed);
//! - `augur-manifest.json`: which key holds each file, written last.
//!
//! A restore reads the manifest and fetches exactly the keys it names, so a sync cut
//! short (an instance reclaimed mid-upload, an agent that lost its trial) leaves the
//! last whole checkpoint in place, never files of two. A single-object PUT is atomic
//! and a GET after it sees it (S3's strong read-after-write consistency:
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/Welcome.html#ConsistencyModel>),
//! so the manifest is the one switch. Keys that no manifest names any more are
//! deleted once the manifest that drops them is written; on a versioned bucket the
//! stack's lifecycle rules expire what they leave.
//!
//! What an older agent left (files straight under the prefix, no manifest) is still
//! restored, and the next sync publishes it with a manifest.

use crate::s3::{fail, fetch, io_error, keys_under, safe_relative, snapshot, S3Error, Synced};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The manifest's key below the trial's prefix.
pub const MANIFEST: &str = "augur-manifest.json";

/// Where contents go below the trial's prefix.
const DATA: &str = "augur-data/";

/// What a checkpoint holds: each file by its path relative to the checkpoint
/// directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The attempt and its sync that wrote it.
    pub attempt: u32,
    pub seq: u32,
    pub files: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Whether the manifest under `prefix` may be followed: a manifest is not
    /// trusted more than a listing (anything with the worker's role may write it),
    /// so each file must stay inside the directory it is restored to, and each key
    /// inside the trial's contents.
    pub fn check(&self, prefix: &str) -> Result<(), S3Error> {
        let within = format!("{prefix}{DATA}");
        match self
            .files
            .iter()
            .find(|(rel, e)| !safe_relative(rel) || !e.key.starts_with(&within))
        {
            Some((rel, e)) => Err(broken(prefix, &format!("names `{rel}` at `{}`", e.key))),
            None => Ok(()),
        }
    }
}

/// One file of a checkpoint: the key holding it and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub size: u64,
}

/// An agent's view of its trial's checkpoint: the manifest in the bucket, and the
/// directory as it was when that manifest was written (to send only what changed).
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub manifest: Manifest,
    pub seen: Synced,
    /// Syncs that failed since the manifest was written (each took a `seq`).
    pub failed: u32,
}

impl Published {
    /// Files and bytes the checkpoint holds.
    pub fn totals(&self) -> (u64, u64) {
        let files = &self.manifest.files;
        (files.len() as u64, files.values().map(|e| e.size).sum())
    }
}

/// Restores the checkpoint under `prefix` into `dir` (which should be empty): the
/// files its manifest names, or, without one, what an older agent left. What was
/// restored, as published.
pub async fn restore(
    client: &Client,
    bucket: &str,
    prefix: &str,
    dir: &Path,
) -> Result<Published, S3Error> {
    let Some(manifest) = read_manifest(client, bucket, prefix).await? else {
        return restore_unpublished(client, bucket, prefix, dir).await;
    };
    manifest.check(prefix)?;
    for (rel, entry) in &manifest.files {
        fetch(client, bucket, &entry.key, &dir.join(rel)).await?;
    }
    Ok(Published {
        manifest,
        seen: snapshot(dir),
        failed: 0,
    })
}

/// Restores keys straight under `prefix` (an older agent's layout): published by no
/// manifest yet, so the next sync sends them all.
async fn restore_unpublished(
    client: &Client,
    bucket: &str,
    prefix: &str,
    dir: &Path,
) -> Result<Published, S3Error> {
    for key in keys_under(client, bucket, prefix).await? {
        let Some(rel) = key.strip_prefix(prefix) else {
            continue;
        };
        if rel.starts_with(DATA) || rel == MANIFEST || !safe_relative(rel) {
            continue;
        }
        fetch(client, bucket, &key, &dir.join(rel)).await?;
    }
    Ok(Published::default())
}

fn broken(prefix: &str, what: &str) -> S3Error {
    S3Error {
        op: "restore",
        what: format!("{prefix}{MANIFEST}"),
        text: format!("the manifest {what}; refused"),
        source: None,
    }
}

/// The manifest under `prefix`, if there is one.
pub async fn read_manifest(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Option<Manifest>, S3Error> {
    let key = format!("{prefix}{MANIFEST}");
    let out = match client.get_object().bucket(bucket).key(&key).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|x| x.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(fail("GetObject", &key, e)),
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| io_error("GetObject", &key, e))?
        .into_bytes();
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| broken(prefix, &format!("cannot be read ({e})")))
}

/// Publishes `dir` as the checkpoint under `prefix`, for `attempt`: sends the files
/// that changed since `state` (new, another size or modification time, or named by
/// no manifest), then the manifest, then deletes the keys it no longer names. The
/// files and bytes sent (none: nothing changed, nothing written).
pub async fn publish(
    client: &Client,
    bucket: &str,
    prefix: &str,
    dir: &Path,
    attempt: u32,
    state: &mut Published,
) -> Result<(usize, u64), S3Error> {
    let now = snapshot(dir);
    let old = &state.manifest;
    let changed: BTreeSet<&String> = now
        .iter()
        .filter(|(rel, stamp)| state.seen.get(*rel) != Some(stamp) || !old.files.contains_key(*rel))
        .map(|(rel, _)| rel)
        .collect();
    let removed = old.files.keys().any(|rel| !now.contains_key(rel));
    if changed.is_empty() && !removed {
        return Ok((0, 0));
    }
    let base = if old.attempt == attempt { old.seq } else { 0 };
    let mut next = Manifest {
        attempt,
        seq: base + 1 + state.failed,
        files: BTreeMap::new(),
    };
    let to = Target {
        client,
        bucket,
        prefix,
    };
    let sent = match send(&to, dir, &now, (old, &changed), &mut next).await {
        Ok(bytes) => (changed.len(), bytes),
        Err(e) => {
            state.failed += 1;
            return Err(e);
        }
    };
    let named: BTreeSet<&str> = next.files.values().map(|e| e.key.as_str()).collect();
    for gone in old
        .files
        .values()
        .filter(|e| !named.contains(e.key.as_str()))
    {
        // The new checkpoint is whole already: a key left behind costs storage, not
        // correctness (and `augur delete` removes the trial's prefix).
        if let Err(e) = client
            .delete_object()
            .bucket(bucket)
            .key(&gone.key)
            .send()
            .await
        {
            tracing::warn!(key = %gone.key, error = %crate::error_text(&e), "an old checkpoint file was not deleted");
        }
    }
    *state = Published {
        manifest: next,
        seen: now,
        failed: 0,
    };
    Ok(sent)
}

/// Where a checkpoint goes.
struct Target<'a> {
    client: &'a Client,
    bucket: &'a str,
    prefix: &'a str,
}

/// Sends the `changed` files of `dir` under `next`'s keys (the others keep the
/// `old` manifest's), then `next` itself; the bytes sent.
async fn send(
    to: &Target<'_>,
    dir: &Path,
    now: &Synced,
    (old, changed): (&Manifest, &BTreeSet<&String>),
    next: &mut Manifest,
) -> Result<u64, S3Error> {
    let mut bytes = 0;
    for (rel, (size, _)) in now {
        let entry = match (changed.contains(rel), old.files.get(rel)) {
            (false, Some(kept)) => kept.clone(),
            _ => {
                let key = format!("{}{DATA}{}.{}/{rel}", to.prefix, next.attempt, next.seq);
                crate::s3::put_file(to.client, to.bucket, &key, &dir.join(rel)).await?;
                bytes += size;
                Entry { key, size: *size }
            }
        };
        next.files.insert(rel.clone(), entry);
    }
    write_manifest(to.client, to.bucket, to.prefix, next).await?;
    Ok(bytes)
}

async fn write_manifest(
    client: &Client,
    bucket: &str,
    prefix: &str,
    manifest: &Manifest,
) -> Result<(), S3Error> {
    let key = format!("{prefix}{MANIFEST}");
    let body = serde_json::to_vec(manifest).map_err(|e| io_error("PutObject", &key, e))?;
    client
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| fail("PutObject", &key, e))?;
    Ok(())
}
