//! Where the lake lives: a local folder, HDFS, or S3. Paths are relative to the lake root and use
//! `/`. Every write is durable when it returns (fsync locally; hsync and close on HDFS), and
//! `rename` is the commit primitive on both (atomic, replacing the target, creating its parents).
//!
//! HDFS goes through the `hdfs-native` crate (no JVM, no libhdfs): `hdfs://host:port/path`, or a
//! nameservice with the usual `core-site.xml`/`hdfs-site.xml` found through `HADOOP_CONF_DIR`
//! (HA NameNodes and Kerberos as hdfs-native supports them).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;

#[derive(Clone)]
pub enum Store {
    Local {
        root: PathBuf,
    },
    Hdfs {
        client: Arc<hdfs_native::Client>,
        url: String,
        root: String,
    },
    /// S3 and S3-compatible stores. Objects appear only when complete (multipart uploads), and
    /// replacing one is atomic; "rename" is copy then delete, which is safe here because every
    /// rename sluice does is either of a file nobody reads yet (tmp → final, redone by recovery)
    /// or a replacement (an ODS version) whose copy is the atomic step.
    S3 {
        store: Arc<object_store::aws::AmazonS3>,
        url: String,
        prefix: String,
    },
}

fn s3_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            io::Error::new(io::ErrorKind::NotFound, e.to_string())
        }
        // A conditional put that found the object there (S3 answers 412 to `If-None-Match: *`).
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            io::Error::new(io::ErrorKind::AlreadyExists, e.to_string())
        }
        other => io::Error::other(format!("S3: {other}")),
    }
}

fn hdfs_err(e: hdfs_native::HdfsError) -> io::Error {
    use hdfs_native::HdfsError as H;
    let kind = match &e {
        H::AlreadyExists(_) => io::ErrorKind::AlreadyExists,
        // The NameNode's own answer (a rename of a missing file) comes as its Java exception.
        H::FileNotFound(_) => io::ErrorKind::NotFound,
        H::RPCError(class, _) if class.ends_with("FileNotFoundException") => {
            io::ErrorKind::NotFound
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("HDFS: {e}"))
}

/// Run an HDFS call from synchronous lake code, which always runs on the runtime's threads.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

impl Store {
    /// `file:///abs/path`, a plain path, or `hdfs://namenode:port/path`.
    pub fn open(path: &str) -> io::Result<Store> {
        if let Some(rest) = path.strip_prefix("hdfs://") {
            let (authority, root) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let url = format!("hdfs://{authority}");
            let client = hdfs_native::ClientBuilder::new()
                .with_url(url.clone())
                .build()
                .map_err(hdfs_err)?;
            return Ok(Store::Hdfs {
                client: Arc::new(client),
                url,
                root: root.trim_end_matches('/').to_string(),
            });
        }
        if let Some(rest) = path.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // Endpoint, region, credentials and path style from the usual AWS_* variables
            // (AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
            // AWS_ALLOW_HTTP, AWS_VIRTUAL_HOSTED_STYLE_REQUEST).
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(s3_err)?;
            return Ok(Store::S3 {
                store: Arc::new(store),
                url: format!("s3://{bucket}"),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let local = path.strip_prefix("file://").unwrap_or(path);
        if local.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty sink path",
            ));
        }
        Ok(Store::Local {
            root: PathBuf::from(local),
        })
    }

    /// The root as a URI engines understand (for table definitions).
    pub fn location(&self) -> String {
        match self {
            Store::Local { root } => format!(
                "file://{}",
                std::path::absolute(root).unwrap_or(root.clone()).display()
            ),
            Store::Hdfs { url, root, .. } => format!("{url}{root}"),
            Store::S3 { url, prefix, .. } if prefix.is_empty() => url.clone(),
            Store::S3 { url, prefix, .. } => format!("{url}/{prefix}"),
        }
    }

    /// The local root, if the lake is on a local disk.
    pub(crate) fn local_root(&self) -> Option<&Path> {
        match self {
            Store::Local { root } => Some(root),
            Store::Hdfs { .. } | Store::S3 { .. } => None,
        }
    }

    fn object(prefix: &str, rel: &str) -> object_store::path::Path {
        let rel = rel.trim_matches('/');
        match (prefix.is_empty(), rel.is_empty()) {
            (true, _) => object_store::path::Path::from(rel),
            (false, true) => object_store::path::Path::from(prefix),
            (false, false) => object_store::path::Path::from(format!("{prefix}/{rel}")),
        }
    }

    fn local(root: &Path, rel: &str) -> PathBuf {
        root.join(rel)
    }

    fn hdfs_path(root: &str, rel: &str) -> String {
        format!("{root}/{rel}")
    }

    pub(crate) fn mkdirs(&self, rel: &str) -> io::Result<()> {
        match self {
            Store::S3 { .. } => Ok(()), // no folders in an object store
            Store::Local { root } => fs::create_dir_all(Self::local(root, rel)),
            Store::Hdfs { client, root, .. } => {
                block(client.mkdirs(&Self::hdfs_path(root, rel), 0o755, true)).map_err(hdfs_err)
            }
        }
    }

    /// Write `bytes` durably at `rel` (replacing it).
    pub(crate) fn put(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        match self {
            Store::S3 { store, prefix, .. } => block(store.put(
                &Self::object(prefix, rel),
                Bytes::copy_from_slice(bytes).into(),
            ))
            .map(|_| ())
            .map_err(s3_err),
            Store::Local { root } => {
                let path = Self::local(root, rel);
                let mut f = fs::File::create(&path)?;
                io::Write::write_all(&mut f, bytes)?;
                f.sync_all()
            }
            Store::Hdfs { client, root, .. } => {
                let path = Self::hdfs_path(root, rel);
                block(async {
                    let options = hdfs_native::WriteOptions {
                        overwrite: true,
                        ..Default::default()
                    };
                    let mut w = client.create(&path, options).await?;
                    w.write_bytes(Bytes::copy_from_slice(bytes)).await?;
                    w.hsync().await?;
                    w.close().await
                })
                .map_err(hdfs_err)
            }
        }
    }

    /// Write `bytes` durably at `rel`, replacing it so that a reader sees the old content or the
    /// new, never a part (a file rewritten while others read it: a lease, a claim). An S3 put
    /// is that already; locally and on HDFS the bytes go to a scratch name renamed over `rel`.
    pub(crate) fn put_atomic(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        if let Store::S3 { .. } = self {
            return self.put(rel, bytes);
        }
        let scratch = format!("{rel}.tmp-{:016x}", rand::random::<u64>());
        self.put(&scratch, bytes)?;
        self.rename(&scratch, rel)
    }

    /// Write `bytes` durably at `rel` only if nothing is there: the lake's exclusive step (commit
    /// records, lease epochs). An error of kind `AlreadyExists` says another writer was first.
    /// Locally and on HDFS the bytes go to `scratch` first, then are linked (no overwrite) into
    /// place, so `rel` is never seen half written; S3 puts with `If-None-Match: *`.
    pub(crate) fn create_new(&self, rel: &str, scratch: &str, bytes: &[u8]) -> io::Result<()> {
        match self {
            Store::S3 { store, prefix, .. } => {
                let opts = object_store::PutOptions::from(object_store::PutMode::Create);
                block(store.put_opts(
                    &Self::object(prefix, rel),
                    Bytes::copy_from_slice(bytes).into(),
                    opts,
                ))
                .map(|_| ())
                .map_err(s3_err)
            }
            Store::Local { root } => {
                self.put(scratch, bytes)?;
                let linked = fs::hard_link(Self::local(root, scratch), Self::local(root, rel));
                fs::remove_file(Self::local(root, scratch))?;
                linked?;
                self.sync_dir(parent_of(rel))
            }
            Store::Hdfs { client, root, .. } => {
                self.put(scratch, bytes)?;
                let renamed = block(client.rename(
                    &Self::hdfs_path(root, scratch),
                    &Self::hdfs_path(root, rel),
                    false,
                ))
                .map_err(hdfs_err);
                if renamed.is_err() {
                    self.delete(scratch)?;
                }
                renamed
            }
        }
    }

    /// Whether an upload replaces an object atomically (S3: an object appears whole when its
    /// upload completes), so a new version can be written in place instead of moved there.
    pub(crate) fn uploads_replace_atomically(&self) -> bool {
        matches!(self, Store::S3 { .. })
    }

    /// Copy a local file durably to `rel` (streamed in chunks).
    pub(crate) fn put_file(&self, rel: &str, local: &Path) -> io::Result<()> {
        match self {
            Store::S3 { store, prefix, .. } => {
                // A multipart upload: the object appears only when it completes.
                let mut file = fs::File::open(local)?;
                let path = Self::object(prefix, rel);
                block(async {
                    let upload = store.put_multipart(&path).await.map_err(s3_err)?;
                    let mut writer =
                        object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
                    let mut buf = vec![0u8; 4 << 20];
                    // At most four parts in flight: memory stays bounded whatever the file's size.
                    let sent: io::Result<()> = async {
                        loop {
                            let n = file.read(&mut buf)?;
                            if n == 0 {
                                return writer.wait_for_capacity(0).await.map_err(s3_err);
                            }
                            writer.write(&buf[..n]);
                            writer.wait_for_capacity(4).await.map_err(s3_err)?;
                        }
                    }
                    .await;
                    // A failed upload's parts are billed until aborted (finish() aborts one that
                    // fails to complete). An upload cut by a crash needs the bucket's
                    // AbortIncompleteMultipartUpload rule (README, lake layout).
                    match sent {
                        Ok(()) => writer.finish().await.map(|_| ()).map_err(s3_err),
                        Err(e) => {
                            let _ = writer.abort().await;
                            Err(e)
                        }
                    }
                })
            }
            Store::Local { root } => {
                fs::copy(local, Self::local(root, rel))?;
                fs::File::open(Self::local(root, rel))?.sync_all()
            }
            Store::Hdfs { client, root, .. } => {
                let path = Self::hdfs_path(root, rel);
                let mut file = fs::File::open(local)?;
                block(async {
                    let options = hdfs_native::WriteOptions {
                        overwrite: true,
                        ..Default::default()
                    };
                    let mut w = client.create(&path, options).await.map_err(hdfs_err)?;
                    let mut buf = vec![0u8; 4 << 20];
                    loop {
                        let n = file.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        w.write_bytes(Bytes::copy_from_slice(&buf[..n]))
                            .await
                            .map_err(hdfs_err)?;
                    }
                    w.hsync().await.map_err(hdfs_err)?;
                    w.close().await.map_err(hdfs_err)
                })
            }
        }
    }

    pub fn get(&self, rel: &str) -> io::Result<Bytes> {
        match self {
            Store::S3 { store, prefix, .. } => {
                block(async { store.get(&Self::object(prefix, rel)).await?.bytes().await })
                    .map_err(s3_err)
            }
            Store::Local { root } => fs::read(Self::local(root, rel)).map(Bytes::from),
            Store::Hdfs { client, root, .. } => block(async {
                let reader = client.read(&Self::hdfs_path(root, rel)).await?;
                let len = reader.file_length();
                reader.read_range(0, len).await
            })
            .map_err(hdfs_err),
        }
    }

    pub(crate) fn exists(&self, rel: &str) -> io::Result<bool> {
        match self {
            Store::S3 { store, prefix, .. } => {
                match block(store.head(&Self::object(prefix, rel))) {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(s3_err(e)),
                }
            }
            Store::Local { root } => Ok(Self::local(root, rel).exists()),
            Store::Hdfs { client, root, .. } => {
                match block(client.get_file_info(&Self::hdfs_path(root, rel))) {
                    Ok(_) => Ok(true),
                    Err(hdfs_native::HdfsError::FileNotFound(_)) => Ok(false),
                    Err(e) => Err(hdfs_err(e)),
                }
            }
        }
    }

    /// Atomically move `from` to `to`, replacing `to`, creating its parent folders.
    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let parent = parent_of(to);
        match self {
            Store::S3 { store, prefix, .. } => block(async {
                store
                    .copy(&Self::object(prefix, from), &Self::object(prefix, to))
                    .await?;
                store.delete(&Self::object(prefix, from)).await
            })
            .map_err(s3_err),
            Store::Local { root } => {
                create_dirs_durably(root, parent)?;
                fs::rename(Self::local(root, from), Self::local(root, to))?;
                fs::File::open(Self::local(root, parent))?.sync_all()
            }
            Store::Hdfs { client, root, .. } => block(async {
                client
                    .mkdirs(&Self::hdfs_path(root, parent), 0o755, true)
                    .await?;
                client
                    .rename(
                        &Self::hdfs_path(root, from),
                        &Self::hdfs_path(root, to),
                        true,
                    )
                    .await
            })
            .map_err(hdfs_err),
        }
    }

    /// Make a folder's entries durable (local disks; HDFS's NameNode logs its own).
    pub(crate) fn sync_dir(&self, rel: &str) -> io::Result<()> {
        match self {
            Store::S3 { .. } => Ok(()),
            Store::Local { root } => fs::File::open(Self::local(root, rel))?.sync_all(),
            Store::Hdfs { .. } => Ok(()),
        }
    }

    pub(crate) fn delete(&self, rel: &str) -> io::Result<()> {
        match self {
            Store::S3 { store, prefix, .. } => {
                match block(store.delete(&Self::object(prefix, rel))) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(s3_err(e)),
                }
            }
            Store::Local { root } => match fs::remove_file(Self::local(root, rel)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
            Store::Hdfs { client, root, .. } => {
                block(client.delete(&Self::hdfs_path(root, rel), false))
                    .map(|_| ())
                    .map_err(hdfs_err)
            }
        }
    }

    /// Files (not folders) under `rel`, recursively, as paths relative to the root; sorted.
    pub fn list_files(&self, rel: &str) -> io::Result<Vec<String>> {
        Ok(self
            .list_files_sized(rel)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Like `list_files`, with each file's size in bytes.
    pub(crate) fn list_files_sized(&self, rel: &str) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        match self {
            Store::S3 { store, prefix, .. } => {
                use futures::TryStreamExt;
                let base = Self::object(prefix, rel);
                let objects: Vec<object_store::ObjectMeta> =
                    block(store.list(Some(&base)).try_collect()).map_err(s3_err)?;
                let strip = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                for o in objects {
                    if let Some(r) = o.location.as_ref().strip_prefix(&strip) {
                        out.push((r.to_string(), o.size));
                    }
                }
            }
            Store::Local { root } => list_local(root, &Self::local(root, rel), &mut out)?,
            Store::Hdfs { client, root, .. } => {
                let base = Self::hdfs_path(root, rel);
                match block(client.list_status(&base, true)) {
                    Ok(entries) => {
                        let prefix = format!("{root}/");
                        for e in entries.into_iter().filter(|e| !e.isdir) {
                            if let Some(r) = e.path.strip_prefix(&prefix) {
                                out.push((r.to_string(), e.length as u64));
                            }
                        }
                    }
                    Err(hdfs_native::HdfsError::FileNotFound(_)) => {}
                    Err(e) => return Err(hdfs_err(e)),
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The numbers of the `<number>.json` records in `rel` (commit records, leases), ascending.
    pub(crate) fn numbered_records(&self, rel: &str) -> io::Result<Vec<u64>> {
        let mut numbers: Vec<u64> = self
            .list_files(rel)?
            .iter()
            .filter_map(|f| {
                f.rsplit('/')
                    .next()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Immediate sub-folders of `rel` (names only); sorted.
    pub(crate) fn list_dirs(&self, rel: &str) -> io::Result<Vec<String>> {
        let mut out: Vec<String> = match self {
            Store::S3 { store, prefix, .. } => {
                let listing = block(store.list_with_delimiter(Some(&Self::object(prefix, rel))))
                    .map_err(s3_err)?;
                listing
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(String::from))
                    .collect()
            }
            Store::Local { root } => match fs::read_dir(Self::local(root, rel)) {
                Ok(rd) => rd
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => vec![],
                Err(e) => return Err(e),
            },
            Store::Hdfs { client, root, .. } => {
                match block(client.list_status(&Self::hdfs_path(root, rel), false)) {
                    Ok(entries) => entries
                        .into_iter()
                        .filter(|e| e.isdir)
                        .filter_map(|e| e.path.rsplit('/').next().map(String::from))
                        .collect(),
                    Err(hdfs_native::HdfsError::FileNotFound(_)) => vec![],
                    Err(e) => return Err(hdfs_err(e)),
                }
            }
        };
        out.sort();
        Ok(out)
    }
}

/// The folder part of a path relative to the root (`""` for the root).
fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Create the folder `rel` and any missing parents, each made durable in its own parent: a new
/// partition folder (`date=…`) must survive a power cut as surely as the file renamed into it.
fn create_dirs_durably(root: &Path, rel: &str) -> io::Result<()> {
    let dir = root.join(rel);
    if dir.is_dir() {
        return Ok(());
    }
    if rel.is_empty() {
        return fs::create_dir_all(root); // the lake's own root: made by whoever set it up
    }
    create_dirs_durably(root, parent_of(rel))?;
    match fs::create_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    fs::File::open(root.join(parent_of(rel)))?.sync_all()
}

fn list_local(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            list_local(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            out.push((rel.to_string_lossy().into_owned(), size));
        }
    }
    Ok(())
}
