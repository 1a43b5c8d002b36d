//! A binary cache in a local directory, laid out like Nix's `file://` store.
//!
//! Every file is written atomically: into a unique hidden temporary file in the same
//! directory (`.<name>.tmp-<pid>-<n>-<random>`), fsynced, renamed over the final name, then the
//! directory is fsynced. Publishing writes the NAR before the narinfo, so a process killed at
//! any point leaves at worst an unreferenced NAR or a stray temporary file, never a narinfo
//! that points at nothing. Readers ignore the temporary files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::OnceCell;

use super::{Backend, StoreError, Trust, store_methods};
use crate::cache_info::CacheInfo;

/// A `file://` binary cache.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    /// Whether writes are flushed to the disk (`fsync` of the file and its directory) before
    /// they count as done; see [`FileStore::without_fsync`].
    durable: bool,
    trust: Trust,
    cache_info: Arc<OnceCell<CacheInfo>>,
}

impl FileStore {
    /// A store rooted at `dir`, which is created on the first write. It trusts nothing until
    /// [`FileStore::with_trust`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            durable: true,
            trust: Trust::default(),
            cache_info: Arc::new(OnceCell::new()),
        }
    }

    /// Writes stay atomic (a temporary file renamed into place) but are not flushed to the disk.
    /// For a cache whose readers check what they read (a NAR against its narinfo's hash, a
    /// narinfo by parsing it): after a crash an entry written just before may be missing or
    /// damaged, which makes it a miss, never a wrong answer. Nix's own `file://` store does not
    /// flush either. On a busy disk each `fsync` can wait for seconds, and a result is two files.
    pub fn without_fsync(mut self) -> Self {
        self.durable = false;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `file://<dir>`.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    store_methods!();

    fn path_of(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    what: &Path,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| StoreError::Task {
            what: what.display().to_string(),
            source,
        })?
}

fn read_capped(path: &Path, max: u64, url: String) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut buf = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > max {
        return Err(StoreError::TooLarge {
            url: url.into(),
            limit: max,
        });
    }
    Ok(Some(buf))
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r = getrandom::u64().unwrap_or(0);
    format!("{}-{n}-{r:016x}", std::process::id())
}

/// Writes `data` to `path` atomically, and durably when `durable`.
pub(crate) fn atomic_write(path: &Path, data: &[u8], durable: bool) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", unique_suffix()));
    let write = || -> Result<(), StoreError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        if durable {
            f.sync_all().map_err(io_err(&tmp))?;
        }
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if !durable {
        return Ok(());
    }
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(parent))
}

impl Backend for FileStore {
    async fn get(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(rel);
        let url = self.location(rel);
        let p = path.clone();
        blocking(&path, move || read_capped(&p, max, url)).await
    }

    async fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        let path = self.path_of(rel);
        let p = path.clone();
        blocking(&path, move || match fs::metadata(&p) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&p)(e)),
        })
        .await
    }

    async fn put(
        &self,
        rel: &str,
        data: Vec<u8>,
        _content_type: &'static str,
    ) -> Result<(), StoreError> {
        let path = self.path_of(rel);
        let p = path.clone();
        let durable = self.durable;
        blocking(&path, move || atomic_write(&p, &data, durable)).await
    }

    fn location(&self, rel: &str) -> String {
        format!("file://{}", self.path_of(rel).display())
    }
}
