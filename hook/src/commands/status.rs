//! `checkdef status`: everything checkdef would use here, on stderr, one topic per line —
//! the repository, the pre-push hook (`installer::status`), the configuration (path, segment
//! count), the local cache (where, why there, entries and their total size), the remote (URL,
//! where it was configured, whether it answers `GET nix-cache-info` within a few seconds, which
//! credentials would be sent), the trusted keys with their labels, and the signing key (set?
//! readable? safe permissions? its name). Never fails because of what it finds: problems are
//! reported, and the exit code is 0.
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::context::{Context, RemoteEnv};

use anyhow::Result;
use cache_proto::RedactedUrl;
use cache_proto::store::{
    HttpConfig, HttpStore, S3Config, S3Location, S3Store, Store, resolve_credentials,
};
use installer::HookState;

use crate::cache::{Layout, check_private};
use crate::config::{Accept, CacheConfig};
use crate::exit::Code;
use crate::git::Repo;

/// How long the remote gets to answer `GET nix-cache-info`.
pub const REMOTE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(ctx: &Context) -> Result<Code> {
    let vars = &ctx.settings.remote;
    let mut out = String::new();
    let _ = writeln!(out, "checkdef {}", env!("CARGO_PKG_VERSION"));
    let cwd = std::env::current_dir()?;
    let repo = Repo::discover(&cwd).ok();
    row(&mut out, "repository", &repository(repo.as_ref()));
    for (i, line) in hook_lines(&cwd).into_iter().enumerate() {
        row(&mut out, if i == 0 { "hook" } else { "" }, &line);
    }
    let config = match &repo {
        Some(r) => match ctx.load_config(r) {
            Ok(c) => {
                let names: Vec<&str> = c.segments.iter().map(|s| s.name.as_str()).collect();
                let shown = if names.len() > 6 {
                    format!("{}, …", names[..6].join(", "))
                } else {
                    names.join(", ")
                };
                row(
                    &mut out,
                    "config",
                    &format!(
                        "{}: {} segment{} ({shown})",
                        c.path.display(),
                        c.segments.len(),
                        if c.segments.len() == 1 { "" } else { "s" }
                    ),
                );
                Some(c)
            }
            Err(e) if e.is_not_found() => {
                row(
                    &mut out,
                    "config",
                    "no checkdef.toml at the repository root; `checkdef init` drafts one",
                );
                None
            }
            Err(e) => {
                row(&mut out, "config", &format!("invalid: {e}"));
                None
            }
        },
        None => {
            row(&mut out, "config", "none (not in a git repository)");
            None
        }
    };
    let cache_cfg = config.map(|c| c.cache).unwrap_or_default();
    row(&mut out, "local cache", &local_cache_line(ctx));
    row(
        &mut out,
        "sandbox",
        &crate::run::sandbox::isolation(&ctx.settings.sandbox).describe(),
    );
    for (i, line) in remote_lines(ctx, &cache_cfg).into_iter().enumerate() {
        row(&mut out, if i == 0 { "remote" } else { "" }, &line);
    }
    row(
        &mut out,
        "trusted keys",
        &trusted_keys_line(vars, &cache_cfg),
    );
    row(&mut out, "secret key", &secret_key_line(vars, &cache_cfg));
    let background = super::warm::status_lines(ctx, 8);
    if background.is_empty() {
        row(
            &mut out,
            "background",
            "none (checkdef warm, or a push's deferred checks)",
        );
    }
    for (i, line) in background.into_iter().enumerate() {
        row(&mut out, if i == 0 { "background" } else { "" }, &line);
    }
    ctx.printer.text(&out);
    Ok(Code::Success)
}

fn row(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "{label:<13} {value}");
}

fn repository(repo: Option<&Repo>) -> String {
    let Some(repo) = repo else {
        return "none: not inside a git repository".to_owned();
    };
    let head = match repo.head_commit() {
        Ok(Some(c)) => format!("HEAD {}", &c.to_string()[..12]),
        Ok(None) => "no commits yet".to_owned(),
        Err(e) => format!("HEAD unreadable: {e}"),
    };
    format!("{} ({head})", repo.root().display())
}

fn hook_lines(cwd: &Path) -> Vec<String> {
    let loc = match installer::locate(cwd) {
        Ok(l) => l,
        Err(e) => return vec![format!("unknown ({e})")],
    };
    let status = match installer::status(&loc) {
        Ok(s) => s,
        Err(e) => return vec![format!("unknown ({e})")],
    };
    let hook = status.hook.display();
    let mut lines = vec![match &status.state {
        HookState::Absent => match loc.shared() {
            Some(scope) => format!(
                "not installed ({hook} does not exist; core.hooksPath from the {scope} git configuration shares it with other repositories: `checkdef install` explains)"
            ),
            None => format!("not installed ({hook} does not exist); `checkdef install` adds it"),
        },
        HookState::Foreign { .. } => format!(
            "not installed: {hook} is another hook; `checkdef install` keeps it as pre-push.local and runs it first"
        ),
        HookState::Ours {
            checkdef_exe,
            exe_exists,
            modified,
            executable,
            ..
        } => {
            let mut s = format!("installed at {hook}");
            match checkdef_exe {
                Some(exe) if *exe_exists => {
                    let _ = write!(s, ", calls {}", exe.display());
                }
                Some(exe) => {
                    let _ = write!(
                        s,
                        ", calls {} (missing: falls back to checkdef on PATH)",
                        exe.display()
                    );
                }
                None => s.push_str(", edited: the binary it calls is unknown"),
            }
            if *modified {
                s.push_str("; edited after install");
            }
            if !*executable {
                s.push_str("; NOT executable, so git skips it (run `checkdef install`)");
            }
            s
        }
    }];
    if let Some((p, exec)) = &status.chained {
        lines.push(format!(
            "chained: {} {}",
            p.display(),
            if *exec {
                "runs first"
            } else {
                "is not executable (skipped)"
            }
        ));
    }
    for d in &status.managers {
        lines.push(format!(
            "hook manager detected: {} ({})",
            d.manager.name(),
            d.evidence
        ));
    }
    lines
}

fn local_cache_line(ctx: &Context) -> String {
    let Some(cache_dir) = &ctx.settings.cache_dir else {
        return "none: HOME is not set (nor CHECKDEF_CACHE_DIR or XDG_CACHE_HOME), so run, plan and the hook refuse to start (checkdef never falls back to a shared directory); set CHECKDEF_CACHE_DIR".to_owned();
    };
    let dir = &cache_dir.path;
    let why = cache_dir.origin.describe();
    match check_private(dir) {
        Err(e) => {
            let e = e.to_string().replace('\n', "; ");
            return format!("{} ({why}): REFUSED: {e}", dir.display());
        }
        Ok(false) => {
            return format!(
                "{} ({why}): not created yet (the first run creates it, mode 700)",
                dir.display()
            );
        }
        Ok(true) => {}
    }
    let (entries, others, bytes) = cache_usage(dir);
    let plural = |n: usize| if n == 1 { "y" } else { "ies" };
    format!(
        "{} ({why}): {entries} entr{}, {}{}",
        dir.display(),
        plural(entries),
        human_size(bytes),
        if others > 0 {
            format!(
                "; {others} entr{} of other tools (not checkdef results)",
                plural(others)
            )
        } else {
            String::new()
        }
    )
}

/// The checkdef results in a local cache, the entries of other tools (counted as `cache gc`
/// and `cache verify` count them, see [`Layout::entries`]), and the total size of the cache's
/// files (narinfos, NARs, `nix-cache-info`).
pub fn cache_usage(dir: &Path) -> (usize, usize, u64) {
    let u = Layout::new(dir).usage();
    (u.results, u.others, u.bytes)
}

/// `1.5 KiB`-style sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn remote_lines(ctx: &Context, cfg: &CacheConfig) -> Vec<String> {
    let vars = &ctx.settings.remote;
    if vars.remote == crate::context::RemoteOverride::Disabled {
        return vec!["none (disabled by an empty CHECKDEF_REMOTE)".to_owned()];
    }
    let Some((url, from)) = vars.remote_url(cfg.remote.as_deref()) else {
        return vec![
            "none: results stay on this machine ([cache] remote or CHECKDEF_REMOTE shares them; docs/cache.md)"
                .to_owned(),
        ];
    };
    let url = url.to_owned();
    let shown = RedactedUrl::new(&url);
    let mut lines = vec![format!("{shown} (from {from}): {}", probe(ctx, &url))];
    if url.starts_with("http://") || url.starts_with("https://") {
        let auth = if vars.token.is_some() {
            "bearer token from CHECKDEF_REMOTE_TOKEN".to_owned()
        } else if url_has_user_info(&url) {
            "basic auth from the user info in the URL (shown as ***; a netrc file keeps it out of checkdef.toml)"
                .to_owned()
        } else {
            match vars.netrc() {
                Some((p, true)) => {
                    format!("netrc {} (basic auth when it has the host)", p.display())
                }
                Some((p, false)) => format!("none (netrc {} does not exist)", p.display()),
                None => "none".to_owned(),
            }
        };
        lines.push(format!("credentials: {auth}"));
    }
    if url.starts_with("s3://") {
        let creds = match S3Location::parse(&url) {
            Ok(loc) => match resolve_credentials(loc.profile.as_deref(), &ctx.env().lookup()) {
                Ok((_, source)) => source.to_string(),
                Err(e) => format!("UNUSABLE ({e}); the remote is not used until this is fixed"),
            },
            Err(e) => format!("none ({e})"),
        };
        lines.push(format!("credentials: {creds}"));
    }
    lines
}

/// Whether `url` carries `user[:password]@` (checkdef then sends it as basic auth).
fn url_has_user_info(url: &str) -> bool {
    url.split_once("://").is_some_and(|(_, rest)| {
        rest.split(['/', '?', '#'])
            .next()
            .is_some_and(|authority| authority.contains('@'))
    })
}

/// Whether the cache answers `nix-cache-info` within [`REMOTE_PROBE_TIMEOUT`].
fn probe(ctx: &Context, url: &str) -> String {
    let vars = &ctx.settings.remote;
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return "not checked".to_owned();
    };
    let store = if url.starts_with("http://") || url.starts_with("https://") {
        let mut cfg = HttpConfig::new(url);
        cfg.connect_timeout = REMOTE_PROBE_TIMEOUT;
        cfg.request_timeout = REMOTE_PROBE_TIMEOUT;
        cfg.retries = 0;
        cfg.bearer_token = vars.token.clone();
        cfg.netrc = vars.netrc().map(|(p, _)| p);
        cfg.user_agent = format!("checkdef/{}", env!("CARGO_PKG_VERSION"));
        match HttpStore::new(cfg) {
            Ok(s) => Store::Http(s),
            Err(e) => return format!("invalid ({e})"),
        }
    } else if url.starts_with("s3://") {
        // Credentials resolved as `run` resolves them, from the same environment.
        let cfg = match S3Location::parse(url) {
            Ok(loc) => {
                let resolved = resolve_credentials(loc.profile.as_deref(), &ctx.env().lookup());
                let mut cfg = S3Config::new(url).with_resolved(resolved);
                cfg.connect_timeout = REMOTE_PROBE_TIMEOUT;
                cfg.request_timeout = REMOTE_PROBE_TIMEOUT;
                cfg.retries = 0;
                cfg.user_agent = format!("checkdef/{}", env!("CARGO_PKG_VERSION"));
                cfg
            }
            Err(e) => return format!("invalid ({e})"),
        };
        match S3Store::new(cfg) {
            Ok(s) => Store::S3(s),
            Err(e) => return format!("invalid ({e})"),
        }
    } else {
        match Store::open(url) {
            Ok(s) => s,
            Err(e) => return format!("invalid ({e})"),
        }
    };
    let res = rt.block_on(async {
        tokio::time::timeout(
            REMOTE_PROBE_TIMEOUT + Duration::from_secs(1),
            store.cache_info(),
        )
        .await
    });
    match res {
        Ok(Ok(Some(info))) => {
            let prio = info
                .priority
                .map(|p| format!(", priority {p}"))
                .unwrap_or_default();
            format!(
                "reachable (nix-cache-info: StoreDir {}{prio})",
                info.store_dir
            )
        }
        Ok(Ok(None)) => "reachable, no nix-cache-info yet (the first push writes it)".to_owned(),
        Ok(Err(e)) => format!("UNREACHABLE ({e}); checks run locally until it answers"),
        Err(_) => format!(
            "UNREACHABLE (no answer within {}s); checks run locally until it answers",
            REMOTE_PROBE_TIMEOUT.as_secs()
        ),
    }
}

fn trusted_keys_line(vars: &RemoteEnv, cfg: &CacheConfig) -> String {
    let mut keys: Vec<String> = cfg
        .trusted_public_keys
        .iter()
        .map(|k| match &k.label {
            Some(l) => format!("{} ({l})", k.name),
            None => k.name.clone(),
        })
        .collect();
    if let Some(extra) = &vars.trusted_public_keys {
        for k in extra.split_whitespace() {
            let name = k.split(':').next().unwrap_or(k);
            keys.push(format!("{name} (CHECKDEF_TRUSTED_PUBLIC_KEYS)"));
        }
    }
    if keys.is_empty() {
        return "none: no remote result is accepted (add trusted-public-keys to [cache])"
            .to_owned();
    }
    let accept = match cfg.accept {
        Accept::Trusted => "accept = trusted: any of them",
        Accept::CiOnly => "accept = ci-only: only keys labelled ci",
    };
    format!("{}; {accept}", keys.join(", "))
}

fn secret_key_line(vars: &RemoteEnv, cfg: &CacheConfig) -> String {
    let Some(path) = vars
        .secret_key_file
        .as_ref()
        .map(|p| p.display().to_string())
    else {
        return "not set (CHECKDEF_SECRET_KEY_FILE): results are stored locally and never pushed"
            .to_owned();
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => return format!("{path}: UNREADABLE ({e})"),
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return format!("{path}: UNSAFE mode {mode:o} (others can read it); run chmod 600 {path}");
    }
    match crate::cache::load_secret_key(Path::new(&path)) {
        Ok(k) => {
            let remote = vars.remote_url(cfg.remote.as_deref());
            let push = match remote {
                Some(_) => "passing results are signed with it and pushed",
                None => "passing results are signed with it (no remote to push to)",
            };
            format!(
                "{path}: key {}, mode {mode:o}; {push}; its public key is {}",
                k.name(),
                k.to_public()
            )
        }
        Err(e) => format!("{path}: INVALID ({e:#})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 20), "5.0 MiB");
    }

    #[test]
    fn usage_counts_entries_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("nar")).unwrap();
        std::fs::write(d.path().join("a.narinfo"), "12345").unwrap();
        std::fs::write(d.path().join(".tmp-x.narinfo"), "1").unwrap();
        std::fs::write(d.path().join("nix-cache-info"), "12").unwrap();
        std::fs::write(d.path().join("nar/x.nar.zst"), "1234567890").unwrap();
        assert_eq!(cache_usage(d.path()), (0, 1, 18));
        let ours = "StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-checkdef-foo\n";
        std::fs::write(d.path().join("b.narinfo"), ours).unwrap();
        assert_eq!(cache_usage(d.path()), (1, 1, 18 + ours.len() as u64));
        assert_eq!(cache_usage(&d.path().join("missing")), (0, 0, 0));
    }
}
