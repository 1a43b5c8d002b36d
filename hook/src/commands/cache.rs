//! `checkdef cache verify` and `checkdef cache gc --max-size SIZE`: maintenance of the local
//! cache directory (a Nix `file://` binary cache, which may be shared with Nix itself).
//!
//! Both touch only what checkdef wrote: entries whose store path is a checkdef result
//! (`…-checkdef-<segment>`), their NARs when no other narinfo names them, checkdef's own
//! directories (`checkdef-stamps/`, `checkdef-ran-here/`, `checkdef-fingerprints/`), its
//! temporary files (`.<name>.tmp-…`), and orphaned `.nar.zst` files. Other narinfos (what
//! `nix copy --to file://…` wrote), their NARs, `log/`, `realisations/`, `.ls` listings and
//! Nix's temporary files are left alone, and not counted by gc.
//!
//! * verify: every checkdef narinfo must parse, name its own file, point at a NAR whose hash and
//!   size match, carry only signatures that verify when the key is known, hold a valid checkdef
//!   result (a pass whose manifest hashes to its input hash and whose store path follows from
//!   it), and count here: a result this machine ran, or a copy signed by a key trusted now
//!   (checkdef.toml of the repository verify runs in, and CHECKDEF_TRUSTED_PUBLIC_KEYS: the
//!   rule every lookup applies). Bad entries are removed, narinfo first so no reader sees a
//!   half-removed entry; orphaned NARs and temporary files left by killed writers are removed
//!   too. Stamps (`checkdef-stamps/`, see `cache::stamp`) and ran-here records of removed or
//!   missing entries go too, and kept fingerprint outputs (`checkdef-fingerprints/`) unused for
//!   30 days.
//! * gc: removes least-recently-used checkdef entries (a hit refreshes its stamp's mtime, at
//!   most once an hour; an entry without a stamp counts from its narinfo's mtime) until they
//!   take at most SIZE. Removal is narinfo-first, so a concurrent reader sees either the
//!   whole entry or a miss, never a corrupt hit.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use cache_proto::nar::{self, NarLimits};
use cache_proto::narinfo::NarInfo;
use cache_proto::signing::PublicKey;
use cache_proto::store::{FileStore, Store, Trust};
use cache_proto::store_path::{self, StorePath};

use crate::cache::{self, TrustPolicy, safe_rel};
use crate::cli::CacheCommand;
use crate::context::Context;
use crate::exit::{Code, usage};
use crate::fsutil::older_than;
use crate::printer::Printer;
use crate::result::StoredResult;

pub fn run(ctx: &Context, cmd: &CacheCommand) -> Result<Code> {
    match cmd {
        CacheCommand::Push(args) => push(ctx, args),
        CacheCommand::Verify => {
            let dir = cache::private_local_dir(&ctx.settings)?;
            let (trust, known) = trust_here(ctx)?;
            verify(ctx, &dir, &trust, &known)
        }
        CacheCommand::Gc { max_size } => {
            let max = parse_size(max_size).ok_or_else(|| {
                usage(format!(
                    "invalid size `{max_size}`\nhint: use bytes or a suffix: 500M, 2G, 750MiB"
                ))
            })?;
            gc(&ctx.printer, &cache::private_local_dir(&ctx.settings)?, max)
        }
    }
}

/// `checkdef cache push [--rev REV] [--dry-run]`: upload the local results of this
/// repository's segments (for the snapshot) that the remote lacks, and the results whose upload
/// failed in earlier runs, each signed with the secret key. Idempotent: what the remote has is
/// never uploaded again. Exit 1 when an upload failed (it is retried by the next run).
fn push(ctx: &Context, args: &crate::cli::PushArgs) -> Result<Code> {
    use crate::cache::{Caches, Upload};
    use crate::context::{plan_error, resolve_target};
    let printer = &ctx.printer;
    let ws = ctx.open_workspace()?;
    let target = resolve_target(&ws.repo, &args.target)?;
    let plan = crate::plan::build_plan(&ws.repo, &ws.config, ctx.env(), &target, None)
        .map_err(plan_error)?;
    let settings = ctx.cache_settings(&ws.config.cache)?;
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
    let rt = ctx.runtime()?;
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
                            printer.line(&format!("  {verb:<13} {name}  {p}"));
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
                    printer.warn(&format!("{e:#}"));
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
    printer.line(&format!(
        "checkdef: {verb} {uploaded} result{} to {url}; {there} already there, {missing} not in the local cache{}",
        if uploaded == 1 { "" } else { "s" },
        if failed > 0 {
            format!(", {failed} failed (retried by the next run)")
        } else {
            String::new()
        }
    ));
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

/// A narinfo of the cache directory, read leniently: whose it is and which NAR it names, even
/// when it does not parse (so that no one's NAR is swept for want of a strict parse).
struct Listed {
    path: PathBuf,
    /// Its `StorePath` is a checkdef result (`…-checkdef-<segment>`): checkdef wrote it.
    ours: bool,
    /// Its `URL`, when it has one.
    url: Option<String>,
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn list(dir: &Path) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for path in narinfos(dir)? {
        let text = std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let ours = field(&text, "StorePath")
            .and_then(|p| StorePath::parse(p).ok())
            .is_some_and(|p| p.name().starts_with("checkdef-"));
        let url = field(&text, "URL").map(str::to_owned);
        out.push(Listed { path, ours, url });
    }
    Ok(out)
}

/// How many narinfos name each NAR.
fn references(listed: &[Listed]) -> HashMap<String, usize> {
    let mut refs = HashMap::new();
    for l in listed {
        if let Some(u) = &l.url {
            *refs.entry(u.clone()).or_insert(0) += 1;
        }
    }
    refs
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

/// The trust rule lookups apply here (checkdef.toml of the repository around the current
/// directory, if any, and the `CHECKDEF_*` variables), and the keys whose signatures `verify`
/// can judge: the trusted keys and our own signing key. A configuration that does not load is
/// an error: judging by no keys would remove every copy of a remote result.
fn trust_here(ctx: &Context) -> Result<(TrustPolicy, Vec<PublicKey>)> {
    let cwd = std::env::current_dir()
        .map_err(|e| usage(format!("cannot read the current directory: {e}")))?;
    let explicit = ctx.settings.config_flag.is_some();
    let cfg = match crate::git::Repo::discover(&cwd) {
        Err(_) if !explicit => crate::config::CacheConfig::default(),
        Err(_) => ctx.open_workspace()?.config.cache,
        Ok(repo) => match ctx.load_config(&repo) {
            Ok(c) => c.cache,
            // No checkdef.toml here: no trusted keys. A --config that names no file is a
            // mistake, not an empty trust list.
            Err(e) if e.is_not_found() && !explicit => crate::config::CacheConfig::default(),
            Err(e) => {
                return Err(usage(format!(
                    "{e}\nhint: cache verify judges copies of remote results by the trusted keys of checkdef.toml; fix it first"
                )));
            }
        },
    };
    let settings = ctx.cache_settings(&cfg)?;
    let trust = TrustPolicy::new(&settings);
    let mut keys: Vec<PublicKey> = settings.trusted_keys.into_iter().map(|k| k.key).collect();
    keys.extend(settings.secret_key.map(|k| k.to_public()));
    Ok((trust, keys))
}

fn check_entry(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    narinfo_path: &Path,
    trust: &TrustPolicy,
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
    trust.judge(dir, &info)?;
    Ok(info.url)
}

/// Remove an entry: the narinfo first (atomically unpublishing it), then its NAR unless another
/// narinfo still names it (`refs` counts them).
fn remove_entry(dir: &Path, listed: &Listed, refs: &mut HashMap<String, usize>) -> u64 {
    let mut freed = unpublish(&listed.path);
    if let Some(url) = listed.url.as_deref().filter(|u| safe_rel(u)) {
        let left = refs.get_mut(url).map_or(0, |n| {
            *n = n.saturating_sub(1);
            *n
        });
        let nar = dir.join(url);
        if left == 0 {
            if let Ok(m) = std::fs::metadata(&nar) {
                freed += m.len();
            }
            let _ = std::fs::remove_file(nar);
        }
    }
    freed
}

/// The hash part of the entry whose narinfo is `narinfo_path`.
fn hash_part_of(narinfo_path: &Path) -> Option<&str> {
    narinfo_path.file_name()?.to_str()?.strip_suffix(".narinfo")
}

/// The stamp of the entry whose narinfo is `narinfo_path`.
fn stamp_of(narinfo_path: &Path) -> Option<PathBuf> {
    Some(cache::stamp_path(
        narinfo_path.parent()?,
        hash_part_of(narinfo_path)?,
    ))
}

/// Remove a narinfo, its stamp and its ran-here record; returns the narinfo's size.
fn unpublish(narinfo_path: &Path) -> u64 {
    if let (Some(dir), Some(hash_part)) = (narinfo_path.parent(), hash_part_of(narinfo_path)) {
        let _ = std::fs::remove_file(cache::stamp_path(dir, hash_part));
        if let Some(info) = std::fs::read_to_string(narinfo_path)
            .ok()
            .and_then(|t| NarInfo::parse(&t).ok())
        {
            cache::forget_ran_here(dir, hash_part, &info);
        }
    }
    let size = std::fs::metadata(narinfo_path)
        .map(|m| m.len())
        .unwrap_or(0);
    let _ = std::fs::remove_file(narinfo_path);
    size
}

fn verify(ctx: &Context, dir: &Path, trust: &TrustPolicy, keys: &[PublicKey]) -> Result<Code> {
    let printer = &ctx.printer;
    let rt = ctx.runtime()?;
    let store = Store::File(FileStore::new(dir).with_trust(Trust::Local));
    let (mut good, mut bad) = (0usize, 0usize);
    let listed = list(dir)?;
    let mut refs = references(&listed);
    let others = listed.iter().filter(|l| !l.ours).count();
    for l in listed.iter().filter(|l| l.ours) {
        match check_entry(&store, &rt, dir, &l.path, trust, keys) {
            Ok(_) => good += 1,
            Err(why) => {
                bad += 1;
                printer.line(&format!("checkdef: removing {}: {why}", l.path.display()));
                // A bad narinfo may name the NAR of a valid entry (a copied or misnamed
                // narinfo): its NAR goes only when no other narinfo names it.
                remove_entry(dir, l, &mut refs);
            }
        }
    }
    let referenced: HashSet<String> = refs
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(u, _)| u)
        .collect();
    let strays = sweep_strays(dir, &referenced)?;
    if others > 0 {
        printer.line(&format!(
            "checkdef: left {others} entr{} of other tools alone (not checkdef results)",
            if others == 1 { "y" } else { "ies" }
        ));
    }
    printer.line(&format!(
        "checkdef: {} — {good} valid entries, {bad} bad entries removed, {strays} stray files removed",
        dir.display()
    ));
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
    // Stamps and ran-here records of entries that no longer exist (removed by hand, or by an
    // older checkdef).
    for sub in [cache::STAMP_DIR, cache::RAN_HERE_DIR] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // A ran-here record is `<hash part>-<NarHash>`.
            let hash_part = name.split('-').next().unwrap_or(&name);
            let orphan = if name.starts_with('.') {
                old(&e.path())
            } else {
                !dir.join(format!("{hash_part}.narinfo")).exists()
            };
            // Orphaned ran-here records are bookkeeping (a removed entry whose narinfo could not
            // be read leaves its record): removed, not counted as strays.
            if orphan && std::fs::remove_file(e.path()).is_ok() && sub == cache::STAMP_DIR {
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
            // checkdef's temporary files are `.<name>.tmp-…` (Nix's are `<name>.tmp.<pid>`).
            let is_tmp = name.starts_with('.') && name.contains(".tmp-");
            // Only the kind of NAR checkdef writes: an orphaned `.nar.xz` may be a `nix copy`
            // between its NAR and its narinfo.
            let is_orphan_nar = !sub.is_empty()
                && !is_tmp
                && name.ends_with(".nar.zst")
                && !referenced.contains(&rel);
            if (is_tmp || is_orphan_nar) && old(&e.path()) && std::fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn gc(printer: &Printer, dir: &Path, max: u64) -> Result<Code> {
    let listed = list(dir)?;
    let mut refs = references(&listed);
    let mut entries = Vec::new();
    let mut total = 0u64;
    for l in listed.iter().filter(|l| l.ours) {
        let Ok(meta) = std::fs::metadata(&l.path) else {
            continue;
        };
        let mut size = meta.len();
        if let Some(url) = l.url.as_deref().filter(|u| safe_rel(u)) {
            size += std::fs::metadata(dir.join(url))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        total += size;
        // A stamp's mtime is the entry's last use (touching the narinfo instead would change
        // its ctime and so void the stamp); the narinfo's mtime is when it was written.
        let used = [
            Some(meta),
            stamp_of(&l.path).and_then(|s| std::fs::metadata(s).ok()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|m| m.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push((used, size, l));
    }
    entries.sort_by(|a, b| (a.0, a.1, &a.2.path).cmp(&(b.0, b.1, &b.2.path)));
    let before = total;
    let mut removed = 0usize;
    for (_, size, l) in &entries {
        if total <= max {
            break;
        }
        remove_entry(dir, l, &mut refs);
        total = total.saturating_sub(*size);
        removed += 1;
    }
    let others = listed.len() - entries.len();
    printer.line(&format!(
        "checkdef: {} — {} entries, {} → {} bytes; removed {removed} least recently used{}",
        dir.display(),
        entries.len(),
        before,
        total,
        if others > 0 {
            format!(" ({others} entries of other tools left alone, not counted)")
        } else {
            String::new()
        }
    ));
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
