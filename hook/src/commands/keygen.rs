//! `checkdef keygen NAME [--out FILE]`: a Nix-format ed25519 key pair. The secret key file is
//! created with mode 0600 and never overwritten; the public key goes to stdout, ready for
//! `trusted-public-keys` in checkdef.toml (or Nix's nix.conf). Without `--out` the secret goes
//! to the user's configuration directory (`$XDG_CONFIG_HOME/checkdef/keys/NAME.secret`, else
//! `~/.config/checkdef/keys/NAME.secret`, directory mode 0700): the current directory is
//! usually a repository's root, where a key file is one `git add -A` away from being published.
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result};
use cache_proto::signing::SecretKey;

use crate::cli::KeygenArgs;
use crate::exit::{Code, usage, usage_hint};

pub fn run(ctx: &crate::context::Context, args: &KeygenArgs) -> Result<Code> {
    let key = SecretKey::generate(&args.name).map_err(|e| {
        usage_hint(
            format!("invalid key name `{}`: {e}", args.name),
            "use letters, digits, dots and dashes, e.g. ci.example.org-1",
        )
    })?;
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            let dir = keys_dir(ctx.env()).ok_or_else(|| {
                usage_hint(
                    "neither XDG_CONFIG_HOME nor HOME is set, so there is no default place for the secret key",
                    "pass --out FILE (outside the repository)",
                )
            })?;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| {
                    usage_hint(
                        format!("cannot create {}: {e}", dir.display()),
                        "pass --out FILE",
                    )
                })?;
            dir.join(format!("{}.secret", args.name))
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                usage_hint(
                    format!(
                        "{} already exists; refusing to overwrite a key",
                        out.display()
                    ),
                    "pass --out with a new file name",
                )
            } else {
                usage(format!("cannot create {}: {e}", out.display()))
            }
        })?;
    writeln!(f, "{key}")
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    let public = key.to_public();
    let p = &ctx.printer;
    p.line(&format!(
        "checkdef: secret key written to {} (mode 0600; keep it out of the repository)",
        out.display()
    ));
    p.line(&format!(
        "checkdef: sign results with it: export CHECKDEF_SECRET_KEY_FILE={}",
        out.display()
    ));
    p.line("checkdef: add the public key below to `trusted-public-keys` in checkdef.toml");
    p.stdout(format!("{public}\n"))?;
    Ok(Code::Success)
}

/// `$XDG_CONFIG_HOME/checkdef/keys`, else `~/.config/checkdef/keys`.
fn keys_dir(env: &crate::context::Env) -> Option<PathBuf> {
    env.path("XDG_CONFIG_HOME")
        .or_else(|| env.path("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("checkdef").join("keys"))
}
