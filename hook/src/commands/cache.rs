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
use std::path::Path;

use anyhow::{Context as _, Result};
use cache_proto::narinfo::NarInfo;
use cache_proto::signing::PublicKey;
use cache_proto::store::{FileStore, Store, Trust};
use cache_proto::store_path;

use crate::cache::layout::{Entry, Expect, Layout, References};
use crate::cache::{self, TrustPolicy};
use crate::cli::CacheCommand;
use crate::context::Context;
use crate::exit::{Code, usage, usage_hint, usage_hints};
use crate::printer::Printer;

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
                usage_hint(
                    format!("invalid size `{max_size}`"),
                    "use bytes or a suffix: 500M, 2G, 750MiB",
                )
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
    let plan = ctx
        .plan(&ws.repo, &ws.config, &target, None, |_| true)
        .map_err(plan_error)?;
    let settings = ctx.cache_settings(&ws.config.cache)?;
    if settings.remote.is_none() {
        return Err(usage_hint(
            "no remote cache is configured, so there is nowhere to upload to",
            "set `remote` in [cache] of checkdef.toml or CHECKDEF_REMOTE (docs/cache.md)",
        ));
    }
    if settings.secret_key.is_none() && !args.dry_run {
        return Err(usage_hint(
            "no secret key to sign the uploads with",
            "set CHECKDEF_SECRET_KEY_FILE to a key file (create one with `checkdef keygen NAME`); --dry-run needs none",
        ));
    }
    let caches = Caches::open(settings)?;
    let url = caches.remote_url().unwrap_or_default();
    // This snapshot's results, then the remembered failures (of any snapshot).
    let pending = caches.pending();
    let mut paths: Vec<(String, store_path::StorePath, bool)> = Vec::new();
    for s in &plan.segments {
        paths.push((s.name.clone(), s.store_path.clone(), false));
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
                return Err(usage_hints(
                    e.without_hint(),
                    e.hints_then("cache verify judges copies of remote results by the trusted keys of checkdef.toml; fix it first"),
                ));
            }
        },
    };
    let settings = ctx.cache_settings(&cfg)?;
    let trust = TrustPolicy::new(&settings);
    let mut keys: Vec<PublicKey> = settings.trusted_keys.into_iter().map(|k| k.key).collect();
    keys.extend(settings.secret_key.map(|k| k.to_public()));
    Ok((trust, keys))
}

/// The one chain of checks (see [`Layout::read_result`] and [`Layout::judge`]) applied to the
/// entry stored as `entry`: its narinfo must parse and name its own file, and what it holds must
/// count here. Returns why not.
fn check_entry(
    layout: &Layout,
    store: &Store,
    rt: &tokio::runtime::Runtime,
    entry: &Entry,
    trust: &TrustPolicy,
    keys: &[PublicKey],
) -> Result<(), String> {
    let text = std::fs::read_to_string(&entry.narinfo).map_err(|e| format!("unreadable: {e}"))?;
    let info = NarInfo::parse(&text).map_err(|e| format!("corrupt narinfo: {e}"))?;
    if info.store_path.hash_part() != entry.hash_part {
        return Err(format!(
            "names {} but is stored as {}.narinfo",
            info.store_path, entry.hash_part
        ));
    }
    layout.judge(trust, keys, &info)?;
    rt.block_on(Layout::read_result(
        store,
        &info.store_path,
        &cache::result_limits(),
        Expect::ANY,
    ))
    .map_err(|e| cache::describe_error(&e))?
    .ok_or_else(|| "vanished while checking".to_owned())?;
    Ok(())
}

fn verify(ctx: &Context, dir: &Path, trust: &TrustPolicy, keys: &[PublicKey]) -> Result<Code> {
    let printer = &ctx.printer;
    let rt = ctx.runtime()?;
    let layout = Layout::new(dir);
    let store = Store::File(FileStore::new(dir).with_trust(Trust::Local));
    let (mut good, mut bad) = (0usize, 0usize);
    let entries = layout
        .entries()
        .with_context(|| format!("reading {}", dir.display()))?;
    let mut refs = References::count(&entries);
    let others = entries.iter().filter(|e| !e.is_result()).count();
    for e in entries.iter().filter(|e| e.is_result()) {
        match check_entry(&layout, &store, &rt, e, trust, keys) {
            Ok(()) => good += 1,
            Err(why) => {
                bad += 1;
                printer.line(&format!(
                    "checkdef: removing {}: {why}",
                    e.narinfo.display()
                ));
                // A bad narinfo may name the NAR of a valid entry (a copied or misnamed
                // narinfo): its NAR goes only when no other narinfo names it.
                layout.remove(e, &mut refs);
            }
        }
    }
    let strays = layout.sweep_strays(&refs);
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

/// How long `cache gc` keeps sandbox layers nobody uses (the fingerprint outputs' rule).
const LAYERS_MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

fn gc(printer: &Printer, dir: &Path, max: u64) -> Result<Code> {
    let layout = Layout::new(dir);
    let listed = layout
        .entries()
        .with_context(|| format!("reading {}", dir.display()))?;
    let mut refs = References::count(&listed);
    let mut entries = Vec::new();
    let mut total = 0u64;
    for e in listed.iter().filter(|e| e.is_result()) {
        if !e.narinfo.exists() {
            continue;
        }
        let size = layout.entry_size(e);
        total += size;
        entries.push((layout.last_used(e), size, e));
    }
    entries.sort_by(|a, b| (a.0, a.1, &a.2.narinfo).cmp(&(b.0, b.1, &b.2.narinfo)));
    let before = total;
    let mut removed = 0usize;
    for (_, size, e) in &entries {
        if total <= max {
            break;
        }
        layout.remove(e, &mut refs);
        total = total.saturating_sub(*size);
        removed += 1;
    }
    let layers = crate::run::view::prune_layers(dir, LAYERS_MAX_IDLE);
    let locks = crate::background::prune_locks(dir);
    if layers != crate::run::view::Pruned::default() || locks > 0 {
        printer.info(&format!(
            "checkdef: removed the sandbox layers of {} repositories that are gone or unused for {} days, {} layers of segments unused as long, {} lock files of killed runs",
            layers.stores,
            LAYERS_MAX_IDLE.as_secs() / 86_400,
            layers.layers,
            locks
        ));
    }
    let unlinked = crate::run::view::prune_unlinked(dir);
    if unlinked != crate::run::view::Unlinked::default() {
        printer.info(&format!(
            "checkdef: removed {} compiled modules and {} stored files no sandbox layer uses any more",
            unlinked.bytecode, unlinked.blobs
        ));
    }
    let others = listed.len() - entries.len();
    let layers = crate::run::view::layers_size(dir);
    printer.line(&format!(
        "checkdef: {} — {} entries, {} → {} bytes; removed {removed} least recently used{}{}",
        dir.display(),
        entries.len(),
        before,
        total,
        if others > 0 {
            format!(" ({others} entries of other tools left alone, not counted)")
        } else {
            String::new()
        },
        if layers > 0 {
            format!(
                "; sandbox layers {} (not counted: kept while their repository and segments are in use)",
                crate::commands::status::human_size(layers)
            )
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
}
