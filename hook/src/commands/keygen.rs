//! `checkdef keygen NAME [--out FILE]`: a Nix-format ed25519 key pair. The secret key file is
//! created with mode 0600 and never overwritten; the public key goes to stdout, ready for
//! `trusted-public-keys` in checkdef.toml (or Nix's nix.conf).
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cache_proto::signing::SecretKey;

use crate::cli::KeygenArgs;
use crate::exit::{Code, usage};

pub fn run(args: &KeygenArgs) -> Result<Code> {
    let key = SecretKey::generate(&args.name).map_err(|e| {
        usage(format!(
            "invalid key name `{}`: {e}\nhint: use letters, digits, dots and dashes, e.g. ci.example.org-1",
            args.name
        ))
    })?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.secret", args.name)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                usage(format!(
                    "{} already exists; refusing to overwrite a key\nhint: pass --out with a new file name",
                    out.display()
                ))
            } else {
                usage(format!("cannot create {}: {e}", out.display()))
            }
        })?;
    writeln!(f, "{key}")
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    let public = key.to_public();
    eprintln!(
        "checkdef: secret key written to {} (mode 0600; keep it out of the repository)",
        out.display()
    );
    eprintln!("checkdef: add the public key below to `trusted-public-keys` in checkdef.toml");
    println!("{public}");
    Ok(Code::Success)
}
