//! Which local entries count, decided when they are used; and a local cache only its owner can
//! write.
//!
//! A local entry is either a result this machine ran (trusted as it is) or a copy of another
//! machine's result taken from a remote (trusted only while a key accepted *now* signed it). The
//! difference is recorded when checkdef stores its own result, before it publishes the narinfo:
//! an empty file `checkdef-ran-here/<hash part>-<NarHash>`. An entry is this machine's when
//! such a record names its `NarHash` (one `stat`), or when its narinfo has no signature at all (checkdef copies nothing unsigned
//! from anywhere, so an unsigned entry was written here — also by checkdef versions that kept no
//! record). Everything else must carry a valid signature by an accepted key: the trusted keys,
//! or only those labelled `ci` under `accept = "ci-only"`.
//!
//! Losing a record costs at most a rerun (the entry then looks like a signed copy; when its key
//! is not trusted, the check runs and this machine's result replaces it); a record can never
//! make a copy trusted, as it must name the copy's exact `NarHash`, which only a result this
//! machine stored has. One record per `NarHash` (not one per path) lets two processes that ran
//! the same check at once each record theirs, whichever narinfo wins.
//!
//! The local cache is trusted without signatures, so it must be private: a directory owned by
//! another user, or writable by its group or by others, is refused (exit 2), and checkdef
//! creates its directory with mode 0700. There is no fallback to a shared path when no home
//! directory is known.
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use cache_proto::hash::Sha256Hash;
use cache_proto::narinfo::NarInfo;
use cache_proto::signing::PublicKey;
use cache_proto::store_path::StorePath;

use super::layout::ran_here_path;
use super::stamp::Origin;
use super::{Accept, CacheSettings, TrustedKey};
use crate::exit::{Hinted, usage_hint};

/// Record that this machine is storing `nar` as the entry of `path` (before its narinfo is
/// published, so a reader never sees the entry without the record). Best effort: without it the
/// entry only needs a trusted signature.
pub(crate) fn mark_ran_here(cache_dir: &Path, path: &StorePath, nar: &[u8]) {
    let _ = crate::fsutil::write_atomic(
        &ran_here_path(cache_dir, path.hash_part(), &Sha256Hash::digest(nar)),
        b"",
    );
}

/// Whether this machine stored the entry whose narinfo is `info` (see the module docs).
pub(crate) fn ran_here(cache_dir: &Path, info: &NarInfo) -> bool {
    info.sigs.is_empty()
        || ran_here_path(cache_dir, info.store_path.hash_part(), &info.nar_hash).is_file()
}

/// The keys whose signatures count now, and how to name them.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    accept: Accept,
    /// Every trusted key, accepted or not (for labels in messages).
    trusted: Vec<TrustedKey>,
    /// The keys that count: all trusted keys, or those labelled `ci` under `ci-only`.
    accepted: Vec<PublicKey>,
    /// `accepted` as `name:base64`, for checking a stamp's [`Origin`] without parsing.
    accepted_text: Vec<String>,
}

impl TrustPolicy {
    pub fn new(settings: &CacheSettings) -> TrustPolicy {
        let accepted: Vec<PublicKey> = settings
            .trusted_keys
            .iter()
            .filter(|k| settings.accept == Accept::Trusted || k.label.as_deref() == Some("ci"))
            .map(|k| k.key.clone())
            .collect();
        TrustPolicy {
            accept: settings.accept,
            trusted: settings.trusted_keys.clone(),
            accepted_text: accepted.iter().map(ToString::to_string).collect(),
            accepted,
        }
    }

    /// The keys a remote result must be signed by.
    pub fn accepted(&self) -> &[PublicKey] {
        &self.accepted
    }

    /// `name` and its label: `ci.example.org-1 (ci)`.
    pub fn describe(&self, name: &str) -> String {
        match self
            .trusted
            .iter()
            .find(|k| k.key.name() == name)
            .and_then(|k| k.label.as_deref())
        {
            Some(label) => format!("{name} ({label})"),
            None => name.to_owned(),
        }
    }

    /// Whether an entry of this origin still counts, and who signed it (`None` when this
    /// machine ran it): `None` when its key is no longer accepted.
    pub fn still_trusted(&self, origin: &Origin) -> Option<Option<String>> {
        match origin {
            Origin::RanHere => Some(None),
            Origin::SignedBy(key) => {
                if !self.accepted_text.iter().any(|k| k == key) {
                    return None;
                }
                let name = key.split(':').next().unwrap_or(key);
                Some(Some(self.describe(name)))
            }
        }
    }

    /// The origin of the remote result a key named `name` signed (a lookup just verified it).
    pub fn signed_by(&self, name: &str) -> Option<Origin> {
        self.accepted
            .iter()
            .find(|k| k.name() == name)
            .map(|k| Origin::SignedBy(k.to_string()))
    }

    /// Judge a local entry by its narinfo: this machine's, or a copy signed by an accepted key;
    /// otherwise why it does not count.
    pub fn judge(&self, cache_dir: &Path, info: &NarInfo) -> Result<Origin, String> {
        if ran_here(cache_dir, info) {
            return Ok(Origin::RanHere);
        }
        if let Some(name) = info.verify(&self.accepted) {
            return self
                .signed_by(&name)
                .ok_or_else(|| format!("no accepted key is named {name}"));
        }
        let mut signers: Vec<&str> = info
            .sigs
            .iter()
            .map(|s| s.split(':').next().unwrap_or(""))
            .collect();
        signers.dedup();
        Err(format!(
            "it is not signed by a key trusted now (signed by {}){}",
            signers.join(", "),
            match self.accept {
                Accept::CiOnly => " (accept = \"ci-only\": only keys labelled ci count)",
                Accept::Trusted => "",
            }
        ))
    }
}

/// Why a directory cannot be the local cache.
fn not_private(dir: &Path, meta: &std::fs::Metadata) -> Option<Hinted> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Some(Hinted {
            message: format!(
                "the local cache {} is owned by uid {}, not by you (uid {me}): its entries decide which checks pass without signatures",
                dir.display(),
                meta.uid()
            ),
            hint: "use a directory of your own (set CHECKDEF_CACHE_DIR), or chown it to yourself"
                .to_owned(),
        });
    }
    let mode = meta.permissions().mode();
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and others",
        (true, false) => "its group",
        (false, true) => "others",
        (false, false) => return None,
    };
    Some(Hinted {
        message: format!(
            "the local cache {} is writable by {who} (mode {:o}): anyone who can write it decides which checks pass",
            dir.display(),
            mode & 0o7777
        ),
        hint: format!(
            "chmod go-w {} (or set CHECKDEF_CACHE_DIR to a private directory)",
            dir.display()
        ),
    })
}

/// Check, without creating anything, that `dir` could be used as the local cache: `Ok(false)`
/// when it does not exist yet.
pub fn check_private(dir: &Path) -> Result<bool, Hinted> {
    let own = || "set CHECKDEF_CACHE_DIR to a directory of your own".to_owned();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Hinted {
            message: format!("the local cache {} is not a directory", dir.display()),
            hint: own(),
        }),
        Ok(m) => not_private(dir, &m).map_or(Ok(true), Err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Hinted {
            message: format!("cannot read the local cache {}: {e}", dir.display()),
            hint: own(),
        }),
    }
}

/// Create `dir` (mode 0700, with any missing parents) unless it exists, and check that it is
/// private; a usage error (exit 2) with a hint otherwise.
pub fn ensure_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if !check_private(dir)? {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                usage_hint(
                    format!("cannot create the local cache {}: {e}", dir.display()),
                    "set CHECKDEF_CACHE_DIR to a writable directory of your own",
                )
            })?;
        check_private(dir)?;
    }
    Ok(())
}

/// The error when no local cache directory can be chosen.
pub fn no_cache_dir() -> anyhow::Error {
    usage_hint(
        "no local cache directory: HOME is not set (nor CHECKDEF_CACHE_DIR or XDG_CACHE_HOME), and checkdef never falls back to a shared directory",
        "set CHECKDEF_CACHE_DIR to a directory of your own (or set HOME)",
    )
}
