//! The caches checkdef reads and writes, and the rules for trusting what they return.
//!
//! * The local cache is a Nix `file://` binary cache directory, always on:
//!   `$CHECKDEF_CACHE_DIR`, else `$XDG_CACHE_HOME/checkdef`, else `~/.cache/checkdef`, and
//!   private to its owner (see [`trust`]). It holds what this machine ran, which is trusted as
//!   it is, and copies of remote results, which count only while a key accepted *now* signed
//!   them (hashes are always checked: a torn write can never be read as valid).
//! * The remote is any Nix HTTP binary cache or S3 bucket (`[cache] remote` or
//!   `CHECKDEF_REMOTE`). A remote
//!   result counts only with a valid signature from a trusted key (and, with `accept = "ci-only"`,
//!   only from a key labelled `ci`). Anything else is a miss with a one-line warning. Remote
//!   lookups share one time budget so an outage costs seconds, not minutes, and never blocks.
//! * A local entry verified once is served from its stamp afterwards (see [`stamp`]).
//! * How the local directory is laid out, scanned, checked and pruned: [`layout`].
pub mod layout;
mod stamp;
mod trust;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use cache_proto::RedactedUrl;
use cache_proto::nar::NarLimits;
use cache_proto::narinfo::NarInfo;
use cache_proto::signing::{PublicKey, SecretKey};
use cache_proto::store::{
    FileStore, HttpConfig, HttpStore, PublishOutcome, S3Config, S3Location, S3Store, Store, Trust,
    resolve_credentials,
};
use cache_proto::store_path::StorePath;

use crate::exit::{usage, usage_hint};
use crate::fsutil::write_atomic;
use crate::manifest::InputHash;
use crate::result::StoredResult;

pub use layout::{
    EntryError, Expect, FINGERPRINT_DIR, Layout, PENDING_DIR, RAN_HERE_DIR, STAMP_DIR,
    ran_here_path, stamp_path,
};
pub use stamp::Origin;
use stamp::Stamps;
pub(crate) use trust::mark_ran_here;
pub use trust::{TrustPolicy, check_private, ensure_private, no_cache_dir};

pub use crate::config::Accept;

/// Largest result NAR a lookup reads. A result is `result.json`, the manifest and a log that
/// is capped at 8 MiB, so this is generous; it bounds the memory and time a hostile but validly
/// signed entry (a decompression bomb whose `NarSize` tells the truth) can cost a lookup.
pub const MAX_RESULT_NAR: u64 = 256 << 20;

/// The limits applied to every result NAR read from a cache.
pub fn result_limits() -> NarLimits {
    NarLimits {
        max_total: MAX_RESULT_NAR,
        max_file: MAX_RESULT_NAR,
        ..NarLimits::default()
    }
}

/// A trusted public key and its label (`ci`, `developer`, … or none).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub label: Option<String>,
}

/// Everything needed to open the caches, merged from checkdef.toml and `CHECKDEF_*` variables.
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {
    pub local_dir: PathBuf,
    pub remote: Option<String>,
    pub trusted_keys: Vec<TrustedKey>,
    pub accept: Accept,
    pub secret_key: Option<SecretKey>,
    /// Budget for all remote lookups of one round together (see [`Caches::begin_lookups`]).
    pub remote_budget: Duration,
    pub netrc: Option<PathBuf>,
    pub bearer_token: Option<String>,
    /// The environment S3 credentials are resolved from (`AWS_*`, the shared credentials
    /// file under `HOME`).
    pub env: crate::context::Env,
}

/// The local cache directory of `settings` ([`crate::context::CacheDir`]), created when
/// missing and checked to be private ([`ensure_private`]); a usage error (exit 2) when there is
/// none or it is not private.
pub fn private_local_dir(settings: &crate::context::Settings) -> Result<PathBuf> {
    let dir = settings
        .cache_path()
        .ok_or_else(no_cache_dir)?
        .to_path_buf();
    ensure_private(&dir)?;
    Ok(dir)
}

/// Read a Nix-format secret key file, refusing files others can read.
pub fn load_secret_key(path: &Path) -> Result<SecretKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        usage(format!(
            "cannot read secret key file {}: {e}",
            path.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(usage_hint(
            format!(
                "secret key file {} is readable by others (mode {mode:o})",
                path.display()
            ),
            format!("chmod 600 {}", path.display()),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read secret key file {}: {e}",
            path.display()
        ))
    })?;
    SecretKey::parse(text.trim()).map_err(|e| {
        usage_hint(
            format!(
                "secret key file {} is not a Nix secret key ({e})",
                path.display()
            ),
            "create one with `checkdef keygen NAME --out FILE`",
        )
    })
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Remote,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Remote => "remote",
        }
    }
}

/// A verified, valid cached PASS.
#[derive(Debug, Clone)]
pub struct Hit {
    pub source: Source,
    /// The stored result. A local hit served from its stamp (when the caller did not ask for
    /// the log) has only the record: its manifest and log are empty.
    pub result: StoredResult,
    /// Name (and label) of the key whose signature was verified; `None` for results this
    /// machine ran.
    pub signed_by: Option<String>,
}

/// The outcome of looking one segment up.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub hit: Option<Hit>,
    /// One line each: why a cache entry that existed was not used.
    pub warnings: Vec<String>,
}

/// Open caches for one invocation.
pub struct Caches {
    pub settings: CacheSettings,
    local: Store,
    remote: Option<Store>,
    remote_down: AtomicBool,
    /// Pushes go one at a time (while checks go on): after a push finds the remote down, the
    /// next does not try again.
    push_turn: tokio::sync::Mutex<()>,
    /// All remote lookups of the current round must finish by then; later ones count as misses.
    remote_deadline: std::sync::Mutex<tokio::time::Instant>,
    limits: NarLimits,
    stamps: Stamps,
    layout: Layout,
    trust: TrustPolicy,
    /// The keys whose signatures a local entry's must verify when it carries them: the trusted
    /// keys and this machine's signing key (see [`Layout::judge`]).
    known_keys: Vec<PublicKey>,
    /// Results this process uploaded to the remote (new there), and how many of them were
    /// retries of uploads that failed in an earlier invocation.
    uploaded: AtomicUsize,
    retried: AtomicUsize,
}

/// What [`Caches::upload_local`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// Uploaded (or, dry, would be).
    Uploaded,
    /// The remote already has a narinfo for the path.
    AlreadyThere,
    /// The local cache has no valid entry for the path.
    NotLocal,
}

impl Caches {
    pub fn open(settings: CacheSettings) -> Result<Arc<Caches>> {
        ensure_private(&settings.local_dir)?;
        let trust = TrustPolicy::new(&settings);
        let local = Store::File(
            // Its readers check what they read, so a crash costs misses, not wrong hits;
            // an fsync per file cost seconds per stored result on a busy disk.
            FileStore::new(settings.local_dir.clone())
                .without_fsync()
                .with_trust(Trust::Local),
        );
        let stamps = Stamps::new(settings.local_dir.clone());
        let layout = Layout::new(settings.local_dir.clone());
        let mut known_keys: Vec<PublicKey> = settings
            .trusted_keys
            .iter()
            .map(|k| k.key.clone())
            .collect();
        known_keys.extend(settings.secret_key.as_ref().map(SecretKey::to_public));
        let remote = open_remote(&settings)?;
        let settings_budget = settings.remote_budget;
        Ok(Arc::new(Caches {
            settings,
            local,
            remote,
            remote_down: AtomicBool::new(false),
            push_turn: tokio::sync::Mutex::new(()),
            remote_deadline: std::sync::Mutex::new(tokio::time::Instant::now() + settings_budget),
            limits: result_limits(),
            stamps,
            layout,
            known_keys,
            uploaded: AtomicUsize::new(0),
            retried: AtomicUsize::new(0),
            trust,
        }))
    }

    /// Start a round of lookups (one engine run: `checkdef run`, or one pushed commit in the
    /// pre-push hook): the remote gets a fresh time budget, so time spent running checks between
    /// rounds is never charged to the cache. A remote already marked down stays down, so an
    /// outage still costs at most one budget per invocation.
    pub fn begin_lookups(&self) {
        *self.remote_deadline.lock().expect("deadline lock") =
            tokio::time::Instant::now() + self.settings.remote_budget;
    }

    pub fn has_remote(&self) -> bool {
        self.remote.is_some()
    }

    pub fn remote_url(&self) -> Option<String> {
        self.remote.as_ref().map(|r| r.url())
    }

    /// Look a result up in the local cache (`crate::run::lookup_all` looks every segment up:
    /// local first, then the remote for the misses). With `need_log`, a hit always carries its
    /// log and manifest (read from the NAR); without, a stamped entry is served from its
    /// stamp, which costs three `stat`s and a small read.
    pub async fn lookup_local(
        &self,
        path: &StorePath,
        segment: &str,
        input_hash: &InputHash,
        need_log: bool,
    ) -> Lookup {
        // A stamp vouches for the files and records where the entry came from; whether that
        // origin still counts is decided now (a copy's key may have been removed since).
        if !need_log
            && let Some((record, origin)) = self.stamps.check(path)
            && let Some(signed_by) = self.trust.still_trusted(&origin)
        {
            let result = StoredResult {
                record,
                manifest: String::new(),
                log: Vec::new(),
            };
            // The stamp was written after the same checks; repeating the ones on the record
            // costs nothing and keeps a stamp from ever widening what counts as a hit.
            if result.validate_record(segment, input_hash).is_ok() {
                return Lookup {
                    hit: Some(Hit {
                        source: Source::Local,
                        result,
                        signed_by,
                    }),
                    warnings: Vec::new(),
                };
            }
        }
        let mut warnings = Vec::new();
        let started = SystemTime::now();
        match self
            .fetch_from(&self.local, path, segment, input_hash)
            .await
        {
            Ok(Some((result, fetched))) => {
                match self
                    .layout
                    .judge(&self.trust, &self.known_keys, &fetched.narinfo)
                {
                    Ok(origin) => {
                        self.stamps.write(
                            path,
                            &fetched.narinfo.url,
                            &result.record,
                            &origin,
                            Some(started),
                        );
                        let signed_by = self.trust.still_trusted(&origin).flatten();
                        return Lookup {
                            hit: Some(Hit {
                                source: Source::Local,
                                result,
                                signed_by,
                            }),
                            warnings,
                        };
                    }
                    // Kept: the key may be trusted again; a pass of this machine replaces it.
                    Err(why) => warnings.push(format!(
                        "local copy of a remote result for {segment} ignored: {why}"
                    )),
                }
            }
            Ok(None) => {}
            Err(e) => {
                // A broken entry would otherwise stay forever: publishing skips a path whose
                // narinfo exists, so the rerun's result could never replace it.
                let removed = e.is_broken_entry() && self.unpublish_local(path);
                warnings.push(format!(
                    "local cache entry for {segment} ignored{}: {}",
                    if removed { " and removed" } else { "" },
                    e.describe()
                ));
            }
        }
        Lookup {
            hit: None,
            warnings,
        }
    }

    /// Look a result up in the remote, if configured and not marked down, after a local miss
    /// that produced `warnings`. A hit is copied into the local cache.
    pub async fn lookup_remote(
        &self,
        path: &StorePath,
        segment: &str,
        input_hash: &InputHash,
        mut warnings: Vec<String>,
    ) -> Lookup {
        let Some(remote) = &self.remote else {
            return Lookup {
                hit: None,
                warnings,
            };
        };
        if self.remote_down.load(Ordering::Relaxed) {
            return Lookup {
                hit: None,
                warnings,
            };
        }
        let deadline = *self.remote_deadline.lock().expect("deadline lock");
        let fetched =
            tokio::time::timeout_at(deadline, self.fetch_from(remote, path, segment, input_hash))
                .await;
        let Ok(fetched) = fetched else {
            if !self.remote_down.swap(true, Ordering::Relaxed) {
                warnings.push(format!(
                    "remote cache {} too slow (over {:.0?} for all lookups); running checks locally",
                    remote.url(),
                    self.settings.remote_budget
                ));
            }
            return Lookup {
                hit: None,
                warnings,
            };
        };
        match fetched {
            Ok(Some((result, fetched))) => {
                let signed_by = fetched
                    .signed_by
                    .as_ref()
                    .map(|name| self.trust.describe(name));
                self.keep_local_copy(path, &result, &fetched).await;
                Lookup {
                    hit: Some(Hit {
                        source: Source::Remote,
                        result,
                        signed_by,
                    }),
                    warnings,
                }
            }
            Ok(None) => Lookup {
                hit: None,
                warnings,
            },
            Err(e) => {
                if e.is_unavailable() {
                    if !self.remote_down.swap(true, Ordering::Relaxed) {
                        warnings.push(format!(
                            "remote cache {} unavailable ({}); running checks locally",
                            remote.url(),
                            e.describe()
                        ));
                    }
                } else {
                    let why = if self.settings.accept == Accept::CiOnly
                        && matches!(
                            e,
                            EntryError::Store(cache_proto::store::StoreError::Untrusted { .. })
                        ) {
                        " (accept = \"ci-only\": only keys labelled ci count)"
                    } else {
                        ""
                    };
                    warnings.push(format!(
                        "remote result for {segment} ignored: {}{why}",
                        e.describe()
                    ));
                }
                Lookup {
                    hit: None,
                    warnings,
                }
            }
        }
    }

    /// Keep a local copy of a remote hit so the next lookup costs no network: the remote's
    /// bytes and signatures as they are (nothing to recompress), when its signer is trusted
    /// here. Failing to is not worth a warning: the next lookup asks the remote again.
    async fn keep_local_copy(
        &self,
        path: &StorePath,
        result: &StoredResult,
        fetched: &cache_proto::store::Fetched,
    ) {
        let origin = fetched
            .signed_by
            .as_deref()
            .and_then(|name| self.trust.signed_by(name));
        if let Some(origin) = origin {
            let mut outcome = self.local.import(fetched).await;
            if let Ok(PublishOutcome::AlreadyPresent) = outcome
                && self.replace_untrusted_local(path)
            {
                outcome = self.local.import(fetched).await;
            }
            if let Ok(PublishOutcome::Uploaded) = outcome {
                self.stamp_written(path, result, &origin);
            }
        }
    }

    /// Read `path` from `store` with the checks every reader applies (see
    /// [`layout::check_result`]), for this segment and input hash.
    async fn fetch_from(
        &self,
        store: &Store,
        path: &StorePath,
        segment: &str,
        input_hash: &InputHash,
    ) -> Result<Option<(StoredResult, cache_proto::store::Fetched)>, EntryError> {
        let expect = Expect {
            segment: Some(segment),
            input_hash: Some(input_hash),
        };
        Layout::read_result(store, path, &self.limits, expect).await
    }

    /// Remove a local entry's narinfo (readers then see a miss; `cache verify` sweeps the NAR).
    fn unpublish_local(&self, path: &StorePath) -> bool {
        self.layout.unpublish(path.hash_part()).is_some()
    }

    fn local_narinfo(&self, path: &StorePath) -> Option<NarInfo> {
        self.layout.read_narinfo(path.hash_part())
    }

    /// The most recently used valid result of `segment` in the local cache, other than
    /// `current` (what `checkdef explain` compares with): the entries named
    /// `checkdef-<segment>`, latest use first ([`Layout::last_used`], the order `cache gc` keeps
    /// them by), the first that passes the checks a lookup applies and counts here. Must not be
    /// called from inside a tokio runtime.
    pub fn previous_result(&self, segment: &str, current: &StorePath) -> Option<Previous> {
        let mut candidates: Vec<(SystemTime, StorePath)> = self
            .layout
            .entries()
            .ok()?
            .into_iter()
            .filter(|e| e.segment() == Some(segment) && e.hash_part != current.hash_part())
            .filter_map(|e| {
                let path = e.store_path.clone()?;
                (path.hash_part() == e.hash_part).then(|| (self.layout.last_used(&e), path))
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        // Latest use first; equal times by path so the choice is stable.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let expect = Expect {
            segment: Some(segment),
            input_hash: None,
        };
        for (used, path) in candidates {
            let read = Layout::read_result(&self.local, &path, &self.limits, expect);
            let Ok(Some((result, fetched))) = rt.block_on(read) else {
                continue;
            };
            if self
                .layout
                .judge(&self.trust, &self.known_keys, &fetched.narinfo)
                .is_ok()
            {
                return Some(Previous {
                    store_path: path,
                    result,
                    used,
                });
            }
        }
        None
    }

    /// Unpublish the local entry of `path` when it is a copy that does not count now (its key
    /// is no longer accepted), so that a result that does count can take its place.
    fn replace_untrusted_local(&self, path: &StorePath) -> bool {
        match self.local_narinfo(path) {
            Some(info)
                if self
                    .layout
                    .judge(&self.trust, &self.known_keys, &info)
                    .is_err() =>
            {
                self.unpublish_local(path)
            }
            _ => false,
        }
    }

    /// Stamp an entry this process has just written to the local cache, so that the next
    /// lookup costs a few `stat`s.
    fn stamp_written(&self, path: &StorePath, result: &StoredResult, origin: &Origin) {
        if let Some(info) = self.local_narinfo(path) {
            self.stamps
                .write(path, &info.url, &result.record, origin, None);
        }
    }

    /// Stamp an entry this process has just stored from its own run.
    fn stamp_ran_here(&self, path: &StorePath, result: &StoredResult) {
        if let Some(info) = self.local_narinfo(path)
            && trust::ran_here(&self.settings.local_dir, &info)
        {
            self.stamps
                .write(path, &info.url, &result.record, &Origin::RanHere, None);
        }
    }

    /// Store a passing result locally and, when allowed and configured, push it signed.
    /// A push failure never fails the run: it comes back as [`Stored::PushFailed`].
    pub async fn store(
        &self,
        path: &StorePath,
        result: &StoredResult,
        push: bool,
    ) -> Result<Stored> {
        debug_assert_eq!(result.record.status, crate::result::Status::Passed);
        let nar = result.to_nar().to_bytes()?;
        let keys: Vec<SecretKey> = self.settings.secret_key.iter().cloned().collect();
        // Recorded first: a reader that sees the narinfo sees the record too.
        mark_ran_here(&self.settings.local_dir, path, &nar);
        let publish = || async {
            self.local
                .publish(path, &nar, &[], &keys)
                .await
                .with_context(|| format!("storing {} in the local cache", result.record.segment))
        };
        let mut outcome = publish().await?;
        // A copy whose key no longer counts is why this check ran: this pass replaces it.
        if outcome == PublishOutcome::AlreadyPresent && self.replace_untrusted_local(path) {
            outcome = publish().await?;
        }
        if outcome == PublishOutcome::Uploaded {
            self.stamp_ran_here(path, result);
        }
        if !push {
            return Ok(Stored::Local);
        }
        let (Some(remote), Some(key)) = (&self.remote, &self.settings.secret_key) else {
            return Ok(Stored::Local);
        };
        let _turn = self.push_turn.lock().await;
        if self.remote_down.load(Ordering::Relaxed) {
            // Down since the lookups (or an earlier push): the next run uploads it.
            self.remember_pending(path);
            return Ok(Stored::Local);
        }
        match remote.publish(path, &nar, &[], &keys).await {
            Ok(outcome) => {
                if outcome == PublishOutcome::Uploaded {
                    self.uploaded.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Stored::Pushed {
                    signer: key.name().to_owned(),
                })
            }
            Err(e) => {
                // Each failed push costs the store's retries (three request timeouts when the
                // server stalls): after one, stop pushing for the rest of this invocation.
                let unavailable = store_unavailable(&e);
                if unavailable {
                    self.remote_down.store(true, Ordering::Relaxed);
                }
                self.remember_pending(path);
                Ok(Stored::PushFailed(format!(
                    "could not push {} to {}: {}; the next run retries it{}",
                    result.record.segment,
                    remote.url(),
                    describe_error(&e),
                    if unavailable {
                        "; not pushing other results"
                    } else {
                        ""
                    }
                )))
            }
        }
    }

    /// The directory of the uploads to the current remote that failed.
    fn pending_dir(&self) -> Option<PathBuf> {
        Some(self.layout.pending_dir(&self.remote.as_ref()?.url()))
    }

    pub(crate) fn remember_pending(&self, path: &StorePath) {
        if let Some(dir) = self.pending_dir() {
            // Losing the note only loses the retry (`checkdef cache push` still uploads it).
            let _ = write_atomic(&dir.join(path.base_name()), b"");
        }
    }

    pub(crate) fn forget_pending(&self, path: &StorePath) {
        if let Some(dir) = self.pending_dir() {
            let _ = std::fs::remove_file(dir.join(path.base_name()));
        }
    }

    /// The store paths whose upload to the current remote failed in an earlier invocation.
    pub fn pending(&self) -> Vec<StorePath> {
        let Some(dir) = self.pending_dir() else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<StorePath> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                match StorePath::parse(&format!("{}/{name}", cache_proto::STORE_DIR)) {
                    Ok(p) => Some(p),
                    Err(_) => {
                        // A temporary file of a killed writer, or junk: not an upload.
                        let _ = std::fs::remove_file(e.path());
                        None
                    }
                }
            })
            .collect();
        out.sort_by_key(|p| p.to_string());
        out
    }

    /// Retry the uploads that failed in earlier invocations (when pushing is possible and the
    /// remote is not down). Failures stay remembered; the first unavailable answer stops.
    pub async fn retry_pending(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.can_push() || self.remote_down.load(Ordering::Relaxed) {
            return warnings;
        }
        for path in self.pending() {
            match self.upload_local(&path, false).await {
                Ok(outcome) => {
                    if outcome == Upload::Uploaded {
                        self.retried.fetch_add(1, Ordering::Relaxed);
                    }
                    self.forget_pending(&path);
                }
                Err(e) => {
                    warnings.push(format!("{e:#}; the next run retries it"));
                    if self.remote_down.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
        warnings
    }

    /// Upload the local result at `path` to the remote, unless the remote has it: the local
    /// entry as stored (hashes checked, result validated), its narinfo signed with the secret
    /// key. Idempotent. With `dry_run`, only say what would happen (no key needed).
    pub async fn upload_local(&self, path: &StorePath, dry_run: bool) -> Result<Upload> {
        let remote = self
            .remote
            .as_ref()
            .context("no remote cache is configured")?;
        // Only a valid passing result is ever signed and shared.
        let read = Layout::read_result(&self.local, path, &self.limits, Expect::ANY).await;
        let (result, mut fetched) = match read {
            Ok(Some(found)) => found,
            Ok(None) | Err(EntryError::Result(_) | EntryError::StorePath(_)) => {
                return Ok(Upload::NotLocal);
            }
            Err(EntryError::Store(e)) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("reading {path} from the local cache"));
            }
            Err(e @ EntryError::Nar(_)) => {
                return Err(anyhow::Error::new(e)).with_context(|| format!("local entry {path}"));
            }
        };
        let record = &result.record;
        let present = match remote.narinfo(path).await {
            Ok(found) => found.is_some(),
            // There, but signed by no key this machine trusts: it is there all the same
            // (published narinfos are never replaced).
            Err(cache_proto::store::StoreError::Untrusted { .. }) => true,
            Err(e) => {
                if store_unavailable(&e) {
                    self.remote_down.store(true, Ordering::Relaxed);
                }
                return Err(anyhow::anyhow!(
                    "could not upload {} to {}: {}",
                    record.segment,
                    remote.url(),
                    describe_error(&e)
                ));
            }
        };
        if present {
            return Ok(Upload::AlreadyThere);
        }
        if dry_run {
            return Ok(Upload::Uploaded);
        }
        let key = self
            .settings
            .secret_key
            .as_ref()
            .context("no secret key (CHECKDEF_SECRET_KEY_FILE) to sign uploads with")?;
        fetched.narinfo.sign(key);
        match remote.import(&fetched).await {
            Ok(PublishOutcome::Uploaded) => Ok(Upload::Uploaded),
            Ok(PublishOutcome::AlreadyPresent) => Ok(Upload::AlreadyThere),
            Err(e) => {
                if store_unavailable(&e) {
                    self.remote_down.store(true, Ordering::Relaxed);
                }
                Err(anyhow::anyhow!(
                    "could not upload {} to {}: {}",
                    record.segment,
                    remote.url(),
                    describe_error(&e)
                ))
            }
        }
    }

    /// `uploaded N results to URL` for what was uploaded since the last call, or `None` for
    /// nothing.
    pub fn upload_summary(&self) -> Option<String> {
        let url = self.remote_url()?;
        // Taken, so that each round of the pre-push hook reports its own uploads.
        let retried = self.retried.swap(0, Ordering::Relaxed);
        let n = self.uploaded.swap(0, Ordering::Relaxed) + retried;
        if n == 0 {
            return None;
        }
        Some(format!(
            "uploaded {n} result{} to {url}{}",
            if n == 1 { "" } else { "s" },
            if retried > 0 {
                format!(" ({retried} from earlier runs whose upload had failed)")
            } else {
                String::new()
            }
        ))
    }

    /// Whether results will be pushed (a remote and a secret key are configured).
    pub fn can_push(&self) -> bool {
        self.remote.is_some() && self.settings.secret_key.is_some()
    }
}

/// An earlier result of a segment, read from the local cache (see [`Caches::previous_result`]).
#[derive(Debug, Clone)]
pub struct Previous {
    pub store_path: StorePath,
    pub result: StoredResult,
    /// When it was last used.
    pub used: SystemTime,
}

/// What [`Caches::store`] did with a passing result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored in the local cache only (no remote, no key, `--no-push`, or the remote is down).
    Local,
    /// Stored locally and pushed to the remote, signed by `signer`.
    Pushed { signer: String },
    /// Stored locally; the push failed (the message says why).
    PushFailed(String),
}

impl EntryError {
    /// The error and its causes on one line (`outer: cause: root cause`), so a warning names
    /// the actual problem (a bad entry name, a reset connection) and not only the entry.
    fn describe(&self) -> String {
        describe_error(self)
    }

    /// The cache could not be reached or answered with a server-side failure (after the store's
    /// own retries): stop asking it for the rest of this invocation.
    fn is_unavailable(&self) -> bool {
        match self {
            EntryError::Store(e) => store_unavailable(e),
            _ => false,
        }
    }
}

/// An error and its causes on one line (`outer: cause: root cause`).
pub fn describe_error(top: &dyn std::error::Error) -> String {
    let mut s = top.to_string();
    let mut cause = top.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s.replace(['\n', '\r'], " ")
}

/// The cache could not be reached, timed out or answered with a server-side failure (after the
/// store's own retries).
fn store_unavailable(e: &cache_proto::store::StoreError) -> bool {
    use cache_proto::store::StoreError as E;
    match e {
        E::Http { .. } | E::Timeout { .. } => true,
        E::Status { status, .. } => *status >= 500 || *status == 429,
        // An S3 refusal (bad signature, unknown key, expired token, a read-only key, wrong
        // region) or a missing bucket is about the whole store, not one entry.
        E::S3 { .. } | E::NoSuchBucket { .. } | E::Credentials { .. } => true,
        _ => false,
    }
}

/// The remote of `settings` (none when not configured), with lookups and pushes bounded by the
/// remote budget: 2 s to connect, at most 10 s a request, 2 retries. `file://` and paths are
/// directories, `s3://` a bucket (credentials from the environment or the shared credentials
/// file), anything else an HTTP cache.
pub fn open_remote(settings: &CacheSettings) -> Result<Option<Store>> {
    let Some(url) = &settings.remote else {
        return Ok(None);
    };
    let keys = Trust::Keys(accepted_keys(settings));
    let connect_timeout = Duration::from_secs(2);
    let request_timeout = settings.remote_budget.min(Duration::from_secs(10));
    let user_agent = format!("checkdef/{}", env!("CARGO_PKG_VERSION"));
    let store = if url.starts_with("file://") || url.starts_with('/') {
        Store::open(url)
            .map_err(|e| usage(format!("remote cache {}: {e}", RedactedUrl::new(url))))?
    } else if url.starts_with("s3://") {
        let bad = |e: cache_proto::store::StoreError| {
            usage(format!("remote cache {}: {e}", RedactedUrl::new(url)))
        };
        let loc = S3Location::parse(url).map_err(bad)?;
        // Unusable credentials are not a usage error: like a refused request they make the
        // remote unavailable, with one warning, and never block a push.
        let resolved = resolve_credentials(loc.profile.as_deref(), &settings.env.lookup());
        let mut cfg = S3Config::new(url.clone()).with_resolved(resolved);
        cfg.connect_timeout = connect_timeout;
        cfg.request_timeout = request_timeout;
        cfg.retries = 2;
        cfg.user_agent = user_agent;
        Store::S3(S3Store::new(cfg).map_err(bad)?)
    } else {
        let cfg = HttpConfig {
            url: url.clone(),
            connect_timeout,
            request_timeout,
            retries: 2,
            netrc: settings.netrc.clone(),
            bearer_token: settings.bearer_token.clone(),
            user_agent,
        };
        Store::Http(
            HttpStore::new(cfg)
                .map_err(|e| usage(format!("remote cache {}: {e}", RedactedUrl::new(url))))?,
        )
    };
    Ok(Some(store.with_trust(keys)))
}

fn accepted_keys(settings: &CacheSettings) -> Vec<PublicKey> {
    settings
        .trusted_keys
        .iter()
        .filter(|k| settings.accept == Accept::Trusted || k.label.as_deref() == Some("ci"))
        .map(|k| k.key.clone())
        .collect()
}

/// Merge `[cache]` from checkdef.toml with the `CHECKDEF_*` variables of `settings` (see
/// [`crate::context::RemoteEnv`]): `CHECKDEF_REMOTE` (overrides `remote`; empty disables it),
/// `CHECKDEF_TRUSTED_PUBLIC_KEYS` (space-separated, added to `trusted-public-keys`),
/// `CHECKDEF_SECRET_KEY_FILE` (signs pushes), `CHECKDEF_NETRC_FILE` (default `~/.netrc` when it
/// exists), `CHECKDEF_REMOTE_TOKEN` (bearer).
pub fn settings_from(
    config: &crate::config::CacheConfig,
    settings: &crate::context::Settings,
) -> Result<CacheSettings> {
    let vars = &settings.remote;
    let remote = vars
        .remote_url(config.remote.as_deref())
        .map(|(url, _)| url.to_owned());
    let mut trusted_keys = Vec::new();
    for k in &config.trusted_public_keys {
        let key = PublicKey::parse(&k.key).map_err(|e| {
            usage_hint(
                format!(
                    "trusted public key `{}` in checkdef.toml is invalid: {e}",
                    k.key
                ),
                "use the `name:base64` form printed by `checkdef keygen` or `nix key convert-secret-to-public`",
            )
        })?;
        trusted_keys.push(TrustedKey {
            key,
            label: k.label.clone(),
        });
    }
    if let Some(list) = &vars.trusted_public_keys {
        for k in list.split_whitespace() {
            let key = PublicKey::parse(k).map_err(|e| {
                usage(format!(
                    "CHECKDEF_TRUSTED_PUBLIC_KEYS: key `{k}` is invalid: {e}"
                ))
            })?;
            trusted_keys.push(TrustedKey { key, label: None });
        }
    }
    // A signature names its key (`name:base64`) and is shown as signed by that name and the
    // label of the trusted key with that name, so two different keys under one name would let
    // one pass for the other (a developer key named like the CI key shown as `(ci)`). The same
    // key listed twice (checkdef.toml and the environment) is fine: the first entry counts.
    let mut distinct: Vec<TrustedKey> = Vec::new();
    for k in trusted_keys {
        match distinct.iter().find(|d| d.key.name() == k.key.name()) {
            Some(d) if d.key.to_string() == k.key.to_string() => {}
            Some(d) => {
                return Err(usage_hint(
                    format!(
                        "two different trusted public keys are named `{}`: {} and {}",
                        k.key.name(),
                        d.key,
                        k.key
                    ),
                    "key names must be unique (checkdef.toml `trusted-public-keys` and CHECKDEF_TRUSTED_PUBLIC_KEYS together)",
                ));
            }
            None => distinct.push(k),
        }
    }
    let trusted_keys = distinct;
    let secret_key = match &vars.secret_key_file {
        Some(p) => Some(load_secret_key(p)?),
        None => None,
    };
    let netrc = vars.netrc().map(|(p, _)| p);
    Ok(CacheSettings {
        local_dir: settings
            .cache_path()
            .ok_or_else(no_cache_dir)?
            .to_path_buf(),
        remote,
        trusted_keys,
        accept: config.accept,
        secret_key,
        remote_budget: config.timeout(),
        netrc,
        bearer_token: vars.token.clone(),
        env: settings.env.clone(),
    })
}
