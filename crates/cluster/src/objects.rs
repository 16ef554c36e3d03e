//! The object store exports write to and imports read from: an
//! S3-compatible store, through the AWS SDK's S3 client (any endpoint URL,
//! path-style addressing, credentials from the standard environment
//! variables), or for single-machine use a local directory (`file://`
//! URLs) whose subdirectories are the buckets.
//!
//! Buckets are never created here: as in S3, a bucket that does not exist
//! fails the export or import that names it.

use std::path::{Component, Path, PathBuf};

/// Most keys one listing returns, as S3's ListObjectsV2 pages them.
pub const LIST_PAGE_KEYS: usize = 1000;
/// Longest object key, in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest object read whole into memory, in bytes: an import's data
/// file beyond this fails the import.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Why an object operation failed; the code is DynamoDB's FailureCode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("The specified bucket does not exist: {0}")]
    NoSuchBucket(String),
    #[error("The specified key does not exist: {0}")]
    NoSuchKey(String),
    #[error("Access Denied: {0}")]
    AccessDenied(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ObjectError {
    /// ExportDescription's / ImportTableDescription's FailureCode.
    pub fn code(&self) -> &'static str {
        match self {
            ObjectError::NoSuchBucket(_) => "S3NoSuchBucket",
            ObjectError::NoSuchKey(_) => "S3NoSuchKey",
            ObjectError::AccessDenied(_) => "S3AccessDenied",
            ObjectError::Unavailable(_) => "UNKNOWN",
        }
    }
}

/// Where objects live.
#[derive(Debug, Clone)]
pub enum ObjectStore {
    /// Each bucket a directory under this one.
    Dir(PathBuf),
    /// An S3-compatible endpoint.
    S3(aws_sdk_s3::Client),
}

/// The S3 credentials and region an `http(s)://` object store signs with:
/// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), and
/// AWS_REGION or else `region`.
pub fn s3_from_env(url: &str, region: &str) -> Result<ObjectStore, String> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
        return Err(format!(
            "{url}: an S3 object store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ));
    };
    let creds = aws_credential_types::Credentials::new(
        key,
        secret,
        var("AWS_SESSION_TOKEN"),
        None,
        "dynaraft-object-store",
    );
    let region = var("AWS_REGION").unwrap_or_else(|| region.to_string());
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_sdk_s3::config::Region::new(region))
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    Ok(ObjectStore::S3(aws_sdk_s3::Client::from_conf(conf)))
}

impl ObjectStore {
    /// The store a `--object-store` URL names: `file:///a/dir`, or an
    /// S3-compatible endpoint `http(s)://host:port` (signing as
    /// [`s3_from_env`] says, in `region` unless AWS_REGION is set).
    pub fn parse_with_region(url: &str, region: &str) -> Result<ObjectStore, String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            return s3_from_env(url, region);
        }
        ObjectStore::parse(url)
    }

    /// The store a `file://` URL names.
    pub fn parse(url: &str) -> Result<ObjectStore, String> {
        if let Some(path) = url.strip_prefix("file://") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{url}: a file:// URL needs an absolute path (file:///var/lib/...)"
                ));
            }
            return Ok(ObjectStore::Dir(path.to_path_buf()));
        }
        Err(format!(
            "{url}: the object store must be a file:// or an http(s):// URL"
        ))
    }

    /// Stores `body` as `key` in `bucket`, replacing any object there;
    /// its ETag (hex MD5).
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<String, ObjectError> {
        let etag = hex_md5(&body);
        match self {
            ObjectStore::Dir(root) => {
                let path = object_path(root, bucket, key)?;
                blocking(move || write_durably(&path, &body)).await?;
            }
            ObjectStore::S3(client) => {
                let md5 = base64_md5(&body);
                let out = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_md5(md5)
                    .body(aws_sdk_s3::primitives::ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| s3_error(bucket, key, e))?;
                if let Some(tag) = out.e_tag() {
                    return Ok(tag.trim_matches('"').to_string());
                }
            }
        }
        Ok(etag)
    }

    /// The object `key` of `bucket`, whole.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>, ObjectError> {
        match self {
            ObjectStore::Dir(root) => {
                let path = object_path(root, bucket, key)?;
                let key = key.to_string();
                blocking(move || {
                    let len = std::fs::metadata(&path)
                        .map_err(|e| io_error(&key, e))?
                        .len();
                    if len > MAX_OBJECT_BYTES {
                        return Err(ObjectError::Unavailable(format!(
                            "{key} is {len} bytes, more than the {MAX_OBJECT_BYTES} read at once"
                        )));
                    }
                    std::fs::read(&path).map_err(|e| io_error(&key, e))
                })
                .await
            }
            ObjectStore::S3(client) => {
                let out = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| s3_error(bucket, key, e))?;
                let len = out.content_length().unwrap_or(0).max(0) as u64;
                if len > MAX_OBJECT_BYTES {
                    return Err(ObjectError::Unavailable(format!(
                        "{key} is {len} bytes, more than the {MAX_OBJECT_BYTES} read at once"
                    )));
                }
                let body = out.body.collect().await.map_err(|e| {
                    ObjectError::Unavailable(format!("{key}: the read broke off: {e}"))
                })?;
                Ok(body.into_bytes().to_vec())
            }
        }
    }

    /// Every object of `bucket` whose key starts with `prefix`, in key
    /// order, with its size in bytes.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, ObjectError> {
        match self {
            ObjectStore::Dir(root) => {
                let dir = bucket_dir(root, bucket)?;
                let prefix = prefix.to_string();
                blocking(move || {
                    let mut out = Vec::new();
                    walk(&dir, &dir, &prefix, &mut out)?;
                    out.sort();
                    Ok(out)
                })
                .await
            }
            ObjectStore::S3(client) => {
                let mut out = Vec::new();
                let mut token = None;
                loop {
                    let page = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(prefix)
                        .max_keys(LIST_PAGE_KEYS as i32)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .map_err(|e| s3_error(bucket, prefix, e))?;
                    for o in page.contents() {
                        if let Some(k) = o.key() {
                            out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
                        }
                    }
                    token = page.next_continuation_token().map(str::to_string);
                    if token.is_none() || page.is_truncated() != Some(true) {
                        out.sort();
                        return Ok(out);
                    }
                }
            }
        }
    }
}

/// An S3 call's failure as an [`ObjectError`], by S3's error code.
fn s3_error<E, R>(bucket: &str, key: &str, e: aws_sdk_s3::error::SdkError<E, R>) -> ObjectError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let code = e.code().map(str::to_string);
    let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
    match code.as_deref() {
        Some("NoSuchBucket") => ObjectError::NoSuchBucket(bucket.to_string()),
        Some("NoSuchKey") => ObjectError::NoSuchKey(key.to_string()),
        Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
            ObjectError::AccessDenied(format!("{bucket}/{key}: {detail}"))
        }
        _ => ObjectError::Unavailable(format!("S3 {bucket}/{key}: {detail}")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, ObjectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObjectError::Unavailable(format!("object store task: {e}")))?
}

/// The hex MD5 of `body` (S3's ETag of a single-part upload).
pub fn hex_md5(body: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The base64 MD5 of `body` (Content-MD5, and the manifests' checksums).
pub fn base64_md5(body: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

fn bucket_dir(root: &Path, bucket: &str) -> Result<PathBuf, ObjectError> {
    let valid = !bucket.is_empty()
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !bucket.starts_with('.');
    let dir = root.join(bucket);
    if !valid || !dir.is_dir() {
        return Err(ObjectError::NoSuchBucket(bucket.to_string()));
    }
    Ok(dir)
}

/// The file holding `key` of `bucket`: its `/`-separated parts below the
/// bucket's directory (a key that would leave it is refused).
fn object_path(root: &Path, bucket: &str, key: &str) -> Result<PathBuf, ObjectError> {
    let dir = bucket_dir(root, bucket)?;
    let rel = Path::new(key);
    let plain = !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && !key.ends_with('/')
        && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(ObjectError::AccessDenied(format!(
            "key {key:?} cannot be stored in a directory"
        )));
    }
    Ok(dir.join(rel))
}

fn io_error(key: &str, e: std::io::Error) -> ObjectError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ObjectError::NoSuchKey(key.to_string()),
        std::io::ErrorKind::PermissionDenied => ObjectError::AccessDenied(key.to_string()),
        _ => ObjectError::Unavailable(format!("{key}: {e}")),
    }
}

/// Writes `body` to `path` through a temporary file, fsynced and renamed,
/// so a reader finds the whole object or none.
fn write_durably(path: &Path, body: &[u8]) -> Result<(), ObjectError> {
    use std::io::Write;
    let key = path.display().to_string();
    let parent = path
        .parent()
        .ok_or_else(|| ObjectError::Unavailable(format!("{key} has no directory")))?;
    std::fs::create_dir_all(parent).map_err(|e| io_error(&key, e))?;
    let tmp = path.with_extension(format!("tmp-{:08x}", fastrand::u32(..)));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_error(&key, e))?;
    f.write_all(body).map_err(|e| io_error(&key, e))?;
    f.sync_all().map_err(|e| io_error(&key, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(&key, e))?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&key, e))
}

fn walk(
    base: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, u64)>,
) -> Result<(), ObjectError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(&dir.display().to_string(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&dir.display().to_string(), e))?;
        let path = entry.path();
        let Some(key) = path
            .strip_prefix(base)
            .ok()
            .and_then(|p| p.to_str())
            .map(|k| k.replace(std::path::MAIN_SEPARATOR, "/"))
        else {
            continue;
        };
        let meta = entry.metadata().map_err(|e| io_error(&key, e))?;
        if meta.is_dir() {
            // Only directories on the way to the prefix, or below it.
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(base, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) && !key.contains(".tmp-") {
            out.push((key, meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_store_puts_lists_and_gets_within_its_buckets() {
        let root = std::env::temp_dir().join(format!("dynaraft-objects-{}", fastrand::u64(..)));
        std::fs::create_dir_all(root.join("bkt")).unwrap();
        let store = ObjectStore::parse(&format!("file://{}", root.display())).unwrap();
        let etag = store
            .put("bkt", "a/b/c.json", b"hello".to_vec())
            .await
            .unwrap();
        assert_eq!(etag, "5d41402abc4b2a76b9719d911017c592");
        store.put("bkt", "a/d.json", b"x".to_vec()).await.unwrap();
        store.put("bkt", "z.json", b"yy".to_vec()).await.unwrap();
        assert_eq!(
            store.list("bkt", "a/").await.unwrap(),
            vec![("a/b/c.json".to_string(), 5), ("a/d.json".to_string(), 1)]
        );
        assert_eq!(store.get("bkt", "a/b/c.json").await.unwrap(), b"hello");
        assert_eq!(
            store.get("bkt", "a/none").await,
            Err(ObjectError::NoSuchKey("a/none".into()))
        );
        assert_eq!(
            store.put("nobucket", "k", Vec::new()).await,
            Err(ObjectError::NoSuchBucket("nobucket".into()))
        );
        assert!(matches!(
            store.put("bkt", "../escape", Vec::new()).await,
            Err(ObjectError::AccessDenied(_))
        ));
        assert!(matches!(
            store.list("..", "").await,
            Err(ObjectError::NoSuchBucket(_))
        ));
        std::fs::remove_dir_all(root).unwrap();
    }
}
