//! `checkdef cache verify` and `checkdef cache gc --max-size SIZE`: maintenance of the local
//! cache directory (a Nix `file://` binary cache).
//!
//! * verify: every narinfo must parse, name its own file, point at a NAR whose hash and size
//!   match, carry only signatures that verify when the key is known, and hold a valid checkdef
//!   result (a pass whose manifest hashes to its input hash and whose store path follows from
//!   it). Bad entries are removed, narinfo first so no reader sees a half-removed entry;
//!   unreferenced NARs and temporary files left by killed writers are removed too.
//!   Stamps (`checkdef-stamps/`, see `cache::stamp`) of removed or missing entries go too, and
//!   kept fingerprint outputs (`checkdef-fingerprints/`) unused for 30 days.
//! * gc: removes least-recently-used entries (a hit refreshes its stamp's mtime, at most once an
//!   hour; an entry without a stamp counts from its narinfo's mtime) until the cache is at most
//!   SIZE. Removal is narinfo-first, so a concurrent reader sees either the
//!   whole entry or a miss, never a corrupt hit.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use cache_proto::nar::{self, NarLimits};
use cache_proto::narinfo::NarInfo;
use cache_proto::signing::PublicKey;
use cache_proto::store::{FileStore, Store, Trust};
use cache_proto::store_path;

use crate::cache::{self, default_local_dir, older_than, safe_rel};
use crate::cli::CacheCommand;
use crate::exit::{Code, usage};
use crate::result::StoredResult;

pub fn run(config_flag: Option<&Path>, cmd: &CacheCommand) -> Result<Code> {
    match cmd {
        CacheCommand::Push(args) => push(config_flag, args),
        CacheCommand::Verify => verify(&default_local_dir()),
        CacheCommand::Gc { max_size } => {
            let max = parse_size(max_size).ok_or_else(|| {
                usage(format!(
                    "invalid size `{max_size}`\nhint: use bytes or a suffix: 500M, 2G, 750MiB"
                ))
            })?;
            gc(&default_local_dir(), max)
        }
    }
}

/// `checkdef cache push [--rev REV] [--dry-run]`: upload the local results of this
/// repository's segments (for the snapshot) that the remote lacks, and the results whose upload
/// failed in earlier runs, each signed with the secret key. Idempotent: what the remote has is
/// never uploaded again. Exit 1 when an upload failed (it is retried by the next run).
fn push(config_flag: Option<&Path>, args: &crate::cli::PushArgs) -> Result<Code> {
    use crate::cache::{Caches, Upload};
    use crate::commands::plan::{open_context, plan_error, resolve_target};
    let ctx = open_context(config_flag)?;
    let target = resolve_target(&ctx.repo, &args.target)?;
    let plan = crate::plan::build_plan_filtered(&ctx.repo, &ctx.config, &target, None, |_| true)
        .map_err(plan_error)?;
    let settings = cache::settings_from(&ctx.config.cache)?;
    if settings.remote.is_none() {
        return Err(usage(
            "no remote cache is configured, so there is nowhere to upload to\nhint: set `remote` in [cache] of checkdef.toml or CHECKDEF_REMOTE (docs/cache.md)",
        ));
    }
    if settings.secret_key.is_none() && !args.dry_run {
        return Err(usage(
            "no secret key to sign the uploads with\nhint: set CHECKDEF_SECRET_KEY_FILE to a key file (create one with `checkdef keygen NAME`); --dry-run needs none",
        ));
    }
    let caches = Caches::open(settings)?;
    let url = caches.remote_url().unwrap_or_default();
    // This snapshot's results, then the remembered failures (of any snapshot).
    let pending = caches.pending();
    let mut paths: Vec<(String, store_path::StorePath, bool)> = Vec::new();
    for s in &plan.segments {
        if let Ok(p) = store_path::StorePath::parse(&s.store_path) {
            paths.push((s.name.clone(), p, false));
        }
    }
    for p in pending {
        if !paths.iter().any(|(_, known, _)| *known == p) {
            let name = p
                .name()
                .strip_prefix("checkdef-")
                .unwrap_or(p.name())
                .to_owned();
            paths.push((name, p, true));
        }
    }
    let rt = crate::commands::run::runtime()?;
    let (mut uploaded, mut there, mut missing, mut failed) = (0usize, 0usize, 0usize, 0usize);
    rt.block_on(async {
        for (name, p, _) in &paths {
            match caches.upload_local(p, args.dry_run).await {
                Ok(outcome) => {
                    match outcome {
                        Upload::Uploaded => {
                            uploaded += 1;
                            let verb = if args.dry_run {
                                "would upload"
                            } else {
                                "uploaded"
                            };
                            eprintln!("  {verb:<13} {name}  {p}");
                        }
                        Upload::AlreadyThere => there += 1,
                        Upload::NotLocal => missing += 1,
                    }
                    if !args.dry_run {
                        caches.forget_pending(p);
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("checkdef: warning: {e:#}");
                    if !args.dry_run {
                        caches.remember_pending(p);
                    }
                }
            }
        }
    });
    let verb = if args.dry_run {
        "would upload"
    } else {
        "uploaded"
    };
    eprintln!(
        "checkdef: {verb} {uploaded} result{} to {url}; {there} already there, {missing} not in the local cache{}",
        if uploaded == 1 { "" } else { "s" },
        if failed > 0 {
            format!(", {failed} failed (retried by the next run)")
        } else {
            String::new()
        }
    );
    Ok(if failed > 0 {
        Code::Failed
    } else {
        Code::Success
    })
}

/// `500M`, `2G`, `750MiB`, `1024` → bytes (K/M/G/T are powers of 1024, as `du` prints them).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn narinfos(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".narinfo") && !name.starts_with('.') {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Keys whose signatures `verify` can judge: the trusted keys and our own signing key.
fn known_keys() -> Vec<PublicKey> {
    let mut keys = Vec::new();
    let cfg = crate::commands::plan::open_context(None)
        .ok()
        .map(|c| c.config.cache)
        .unwrap_or_default();
    if let Ok(s) = cache::settings_from(&cfg) {
        keys.extend(s.trusted_keys.into_iter().map(|k| k.key));
        keys.extend(s.secret_key.map(|k| k.to_public()));
    }
    keys
}

fn check_entry(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    narinfo_path: &Path,
    keys: &[PublicKey],
) -> Result<String, String> {
    let text = std::fs::read_to_string(narinfo_path).map_err(|e| format!("unreadable: {e}"))?;
    let info = NarInfo::parse(&text).map_err(|e| format!("corrupt narinfo: {e}"))?;
    let stem = narinfo_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    if info.store_path.hash_part() != stem {
        return Err(format!(
            "names {} but is stored as {stem}.narinfo",
            info.store_path
        ));
    }
    for sig in &info.sigs {
        let name = sig.split(':').next().unwrap_or("");
        if keys.iter().any(|k| k.name() == name) && info.verify(keys).is_none() {
            return Err(format!("signature by known key {name} does not verify"));
        }
    }
    let limits = NarLimits::default();
    let fetched = rt
        .block_on(store.fetch(&info.store_path, &limits))
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| "vanished while checking".to_owned())?;
    let node = nar::parse(&fetched.nar[..], &limits).map_err(|e| format!("bad NAR: {e}"))?;
    let result = StoredResult::from_nar(node).map_err(|e| format!("not a checkdef result: {e}"))?;
    let seg = &result.record.segment;
    result
        .validate_hit(seg, &result.record.input_hash)
        .map_err(|e| e.to_string())?;
    let expect = store_path::for_input_key(
        &format!("checkdef-v1:{}", result.record.input_hash),
        &format!("checkdef-{seg}"),
    )
    .map_err(|e| e.to_string())?;
    if expect != info.store_path {
        return Err(format!(
            "store path {} does not follow from its input hash",
            info.store_path
        ));
    }
    Ok(info.url)
}

/// Remove an entry: the narinfo first (atomically unpublishing it), then its NAR.
fn remove_entry(dir: &Path, narinfo_path: &Path) -> u64 {
    let (mut freed, url) = unpublish(narinfo_path);
    if let Some(url) = url.filter(|u| safe_rel(u)) {
        let nar = dir.join(&url);
        if let Ok(m) = std::fs::metadata(&nar) {
            freed += m.len();
        }
        let _ = std::fs::remove_file(nar);
    }
    freed
}

/// The stamp of the entry whose narinfo is `narinfo_path`.
fn stamp_of(narinfo_path: &Path) -> Option<PathBuf> {
    let dir = narinfo_path.parent()?;
    let hash_part = narinfo_path
        .file_name()?
        .to_str()?
        .strip_suffix(".narinfo")?;
    Some(cache::stamp_path(dir, hash_part))
}

/// Remove a narinfo (and its stamp); returns its size and the NAR URL it named (if it parsed).
fn unpublish(narinfo_path: &Path) -> (u64, Option<String>) {
    if let Some(stamp) = stamp_of(narinfo_path) {
        let _ = std::fs::remove_file(stamp);
    }
    let url = std::fs::read_to_string(narinfo_path)
        .ok()
        .and_then(|t| NarInfo::parse(&t).ok())
        .map(|i| i.url);
    let size = std::fs::metadata(narinfo_path)
        .map(|m| m.len())
        .unwrap_or(0);
    let _ = std::fs::remove_file(narinfo_path);
    (size, url)
}

fn verify(dir: &Path) -> Result<Code> {
    let rt = crate::commands::run::runtime()?;
    let store = Store::File(FileStore::new(dir).with_trust(Trust::Local));
    let keys = known_keys();
    let (mut good, mut bad) = (0usize, 0usize);
    let mut referenced = HashSet::new();
    let mut unreferenced = Vec::new();
    for p in narinfos(dir)? {
        match check_entry(&store, &rt, &p, &keys) {
            Ok(url) => {
                good += 1;
                referenced.insert(url);
            }
            Err(why) => {
                bad += 1;
                eprintln!("checkdef: removing {}: {why}", p.display());
                unreferenced.extend(unpublish(&p).1);
            }
        }
    }
    // A bad narinfo may name the NAR of a valid entry (a copied or misnamed narinfo): remove
    // only NARs that no valid entry uses.
    for url in unreferenced {
        if safe_rel(&url) && !referenced.contains(&url) {
            let _ = std::fs::remove_file(dir.join(url));
        }
    }
    let strays = sweep_strays(dir, &referenced)?;
    eprintln!(
        "checkdef: {} — {good} valid entries, {bad} bad entries removed, {strays} stray files removed",
        dir.display()
    );
    Ok(Code::Success)
}

/// Unreferenced NARs and temporary files older than an hour (younger ones may belong to a
/// writer that is still running).
fn sweep_strays(dir: &Path, referenced: &HashSet<String>) -> Result<usize> {
    let modified_before = |p: &Path, age: Duration| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| older_than(t, age))
    };
    let hour = Duration::from_secs(3600);
    let old = |p: &Path| modified_before(p, hour);
    let mut n = 0;
    // Stamps of entries that no longer exist (removed by hand, or by an older checkdef).
    if let Ok(rd) = std::fs::read_dir(dir.join(cache::STAMP_DIR)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let orphan = if name.starts_with('.') {
                old(&e.path())
            } else {
                !dir.join(format!("{name}.narinfo")).exists()
            };
            if orphan && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    // Kept fingerprint outputs unused for a month (a use refreshes the time daily): the next
    // use runs the command again.
    if let Ok(rd) = std::fs::read_dir(dir.join(crate::plan::FINGERPRINT_DIR)) {
        for e in rd.flatten() {
            let limit = if e.file_name().to_string_lossy().starts_with('.') {
                hour
            } else {
                crate::plan::FINGERPRINT_UNUSED_FOR
            };
            if modified_before(&e.path(), limit) && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
    }
    for sub in ["", "nar"] {
        let d = dir.join(sub);
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if sub.is_empty() {
                name.clone()
            } else {
                format!("{sub}/{name}")
            };
            let is_tmp = name.starts_with('.') && name.contains(".tmp-");
            let is_orphan_nar = !sub.is_empty() && !is_tmp && !referenced.contains(&rel);
            if (is_tmp || is_orphan_nar) && old(&e.path()) && std::fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn gc(dir: &Path, max: u64) -> Result<Code> {
    let mut entries = Vec::new();
    let mut total = 0u64;
    for p in narinfos(dir)? {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let mut size = meta.len();
        if let Some(url) = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| NarInfo::parse(&t).ok())
            .map(|i| i.url)
            && safe_rel(&url)
        {
            size += std::fs::metadata(dir.join(url))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        total += size;
        // A stamp's mtime is the entry's last use (touching the narinfo instead would change
        // its ctime and so void the stamp); the narinfo's mtime is when it was written.
        let used = [
            Some(meta),
            stamp_of(&p).and_then(|s| std::fs::metadata(s).ok()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|m| m.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push((used, size, p));
    }
    entries.sort();
    let before = total;
    let mut removed = 0usize;
    for (_, size, p) in &entries {
        if total <= max {
            break;
        }
        remove_entry(dir, p);
        total = total.saturating_sub(*size);
        removed += 1;
    }
    eprintln!(
        "checkdef: {} — {} entries, {} → {} bytes; removed {removed} least recently used",
        dir.display(),
        entries.len(),
        before,
        total
    );
    Ok(Code::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2K"), Some(2048));
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999T"), None);
    }

    #[test]
    fn urls_outside_the_cache_are_never_touched() {
        assert!(safe_rel("nar/abc.nar.zst"));
        assert!(!safe_rel("../etc/passwd"));
        assert!(!safe_rel("/etc/passwd"));
        assert!(!safe_rel("nar//x"));
    }
}
