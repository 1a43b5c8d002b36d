//! The canonical input manifest of a segment and its input hash.
//!
//! The manifest is a UTF-8 text listing everything a segment's result depends on; the input
//! hash is the SHA-256 of its bytes, in lowercase hex. It is identical on every machine for the
//! same commit and configuration and changes exactly when a declared input changes. Format
//! version 1, one item per line, every line ending in `\n`:
//!
//! ```text
//! checkdef-manifest 1
//! segment foo-tests
//! platform x86_64-linux
//! object-format sha1
//! sandbox filtered
//! command python3 -m pytest -q tests/test_foo.py
//! env PYTHONPATH=src
//! fingerprint python3 --version
//! fingerprint-stdout Python 3.11.2\n
//! inputs 2
//! 100644 0c4a7c8ff6d0cdd5a2c3bcb6ad3e3e1a57c8a3b1 src/foo/__init__.py
//! 100644 5e1c309dae7f45e0f39b1bf3ac3cd9db12e7d689 tests/test_foo.py
//! ```
//!
//! * Header lines come in the fixed order above. `env` lines are sorted by variable name
//!   (byte order); `fingerprint`/`fingerprint-stdout` pairs are sorted by command and distinct;
//!   input lines (`<mode> <blob id in hex> <path>`) are sorted by path bytes and distinct, and
//!   `inputs <n>` gives their count.
//! * Values and paths are escaped so that every item is one line and the encoding is
//!   unambiguous: `\` → `\\`, newline → `\n`, carriage return → `\r`, tab → `\t`, any other
//!   control byte and every byte that is not part of valid UTF-8 → `\xNN` (two lowercase hex
//!   digits). All other characters are written as they are.
//! * `platform` is `<arch>-<os>` in Nix's spelling (`x86_64-linux`, `aarch64-darwin`);
//!   `object-format` is the repository's hash (`sha1` or `sha256`).
//! * Not in the manifest (so not hashed): the segment's description, passthrough variables,
//!   the rest of the environment, timestamps and anything about the machine beyond `platform`.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::config::Sandbox;
use crate::git::Input;

/// The manifest format version (first line).
pub const FORMAT_VERSION: u32 = 1;

/// What goes into one segment's manifest.
#[derive(Debug, Clone, Copy)]
pub struct ManifestSpec<'a> {
    pub segment: &'a str,
    /// See [`platform`].
    pub platform: &'a str,
    pub object_format: gix::hash::Kind,
    pub sandbox: Sandbox,
    pub command: &'a str,
    /// Hashed environment.
    pub env: &'a BTreeMap<String, String>,
    /// Fingerprint command → its standard output.
    pub fingerprints: &'a BTreeMap<String, Vec<u8>>,
    /// The segment's inputs; any order (they are written sorted by path, duplicates dropped).
    pub inputs: &'a [Input],
}

/// The canonical manifest text.
pub fn render(spec: &ManifestSpec<'_>) -> String {
    let mut out = String::with_capacity(256 + spec.inputs.len() * 96);
    let _ = writeln!(out, "checkdef-manifest {FORMAT_VERSION}");
    line(&mut out, "segment", spec.segment.as_bytes());
    line(&mut out, "platform", spec.platform.as_bytes());
    line(
        &mut out,
        "object-format",
        object_format_name(spec.object_format).as_bytes(),
    );
    line(&mut out, "sandbox", spec.sandbox.as_str().as_bytes());
    line(&mut out, "command", spec.command.as_bytes());
    for (k, v) in spec.env {
        out.push_str("env ");
        escape_into(k.as_bytes(), &mut out);
        out.push('=');
        escape_into(v.as_bytes(), &mut out);
        out.push('\n');
    }
    for (cmd, stdout) in spec.fingerprints {
        line(&mut out, "fingerprint", cmd.as_bytes());
        line(&mut out, "fingerprint-stdout", stdout);
    }

    let sorted_storage: Vec<&Input>;
    let inputs: Vec<&Input> = if spec.inputs.is_sorted_by(|a, b| a.path < b.path) {
        spec.inputs.iter().collect()
    } else {
        let mut v: Vec<&Input> = spec.inputs.iter().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v.dedup_by(|a, b| a.path == b.path);
        sorted_storage = v;
        sorted_storage
    };
    let _ = writeln!(out, "inputs {}", inputs.len());
    let mut hex = [0u8; gix::hash::Kind::longest().len_in_hex()];
    for input in inputs {
        out.push_str(input.mode.as_octal());
        out.push(' ');
        out.push_str(input.id.hex_to_buf(&mut hex));
        out.push(' ');
        escape_into(&input.path, &mut out);
        out.push('\n');
    }
    out
}

/// The input hash: lowercase hex SHA-256 of the manifest's bytes.
pub fn input_hash(manifest: &str) -> String {
    hex::encode(Sha256::digest(manifest.as_bytes()))
}

/// This machine's platform in Nix's spelling, e.g. `x86_64-linux`.
pub fn platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

/// `sha1` or `sha256`, as in git's `extensions.objectFormat`.
pub fn object_format_name(kind: gix::hash::Kind) -> &'static str {
    match kind {
        gix::hash::Kind::Sha1 => "sha1",
        gix::hash::Kind::Sha256 => "sha256",
        _ => "unknown",
    }
}

fn line(out: &mut String, key: &str, value: &[u8]) {
    out.push_str(key);
    out.push(' ');
    escape_into(value, out);
    out.push('\n');
}

/// Append `bytes` escaped (see the module documentation) to `out`.
pub fn escape_into(bytes: &[u8], out: &mut String) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, invalid_len) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                let valid = std::str::from_utf8(&rest[..e.valid_up_to()]).expect("checked prefix");
                (valid, e.error_len().unwrap_or(rest.len() - e.valid_up_to()))
            }
        };
        for c in valid.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => out.push(c),
            }
        }
        let after_valid = &rest[valid.len()..];
        for b in &after_valid[..invalid_len] {
            let _ = write!(out, "\\x{b:02x}");
        }
        rest = &after_valid[invalid_len..];
    }
}

/// `bytes` escaped as a new string.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    escape_into(bytes, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::FileMode;

    fn id(hex: &str) -> gix::ObjectId {
        gix::ObjectId::from_hex(hex.as_bytes()).unwrap()
    }

    fn input(mode: FileMode, hex: &str, path: &str) -> Input {
        Input {
            mode,
            id: id(hex),
            path: path.into(),
        }
    }

    fn spec<'a>(
        env: &'a BTreeMap<String, String>,
        fp: &'a BTreeMap<String, Vec<u8>>,
        inputs: &'a [Input],
    ) -> ManifestSpec<'a> {
        ManifestSpec {
            segment: "foo-tests",
            platform: "x86_64-linux",
            object_format: gix::hash::Kind::Sha1,
            sandbox: Sandbox::Filtered,
            command: "python3 -m pytest -q tests/test_foo.py",
            env,
            fingerprints: fp,
            inputs,
        }
    }

    const A: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
    const B: &str = "d00491fd7e5bb6fa28c517a0bb32b8b506539d4d";

    #[test]
    fn canonical_text() {
        let env = BTreeMap::from([
            ("Z".to_owned(), "1".to_owned()),
            ("A".to_owned(), "x\ny".to_owned()),
        ]);
        let fp = BTreeMap::from([("python3 --version".to_owned(), b"Python 3.11.2\n".to_vec())]);
        let inputs = [
            input(FileMode::Executable, B, "tests/run.sh"),
            input(FileMode::Regular, A, "src/foo/__init__.py"),
            input(FileMode::Symlink, A, "src/foo/link"),
        ];
        let text = render(&spec(&env, &fp, &inputs));
        assert_eq!(
            text,
            format!(
                "checkdef-manifest 1\n\
                 segment foo-tests\n\
                 platform x86_64-linux\n\
                 object-format sha1\n\
                 sandbox filtered\n\
                 command python3 -m pytest -q tests/test_foo.py\n\
                 env A=x\\ny\n\
                 env Z=1\n\
                 fingerprint python3 --version\n\
                 fingerprint-stdout Python 3.11.2\\n\n\
                 inputs 3\n\
                 100644 {A} src/foo/__init__.py\n\
                 120000 {A} src/foo/link\n\
                 100755 {B} tests/run.sh\n"
            )
        );
        assert_eq!(input_hash(&text).len(), 64);
    }

    #[test]
    fn order_of_inputs_does_not_matter_but_content_does() {
        let env = BTreeMap::new();
        let fp = BTreeMap::new();
        let a = [
            input(FileMode::Regular, A, "a"),
            input(FileMode::Regular, B, "b"),
        ];
        let b = [
            input(FileMode::Regular, B, "b"),
            input(FileMode::Regular, A, "a"),
        ];
        let h = |i: &[Input]| input_hash(&render(&spec(&env, &fp, i)));
        assert_eq!(h(&a), h(&b));
        let mode = [
            input(FileMode::Executable, A, "a"),
            input(FileMode::Regular, B, "b"),
        ];
        let content = [
            input(FileMode::Regular, B, "a"),
            input(FileMode::Regular, B, "b"),
        ];
        let path = [
            input(FileMode::Regular, A, "a2"),
            input(FileMode::Regular, B, "b"),
        ];
        for other in [&mode[..], &content[..], &path[..], &a[..1]] {
            assert_ne!(h(&a), h(other));
        }
    }

    #[test]
    fn paths_sort_by_bytes() {
        let env = BTreeMap::new();
        let fp = BTreeMap::new();
        let inputs = [
            input(FileMode::Regular, A, "a/b"),
            input(FileMode::Regular, A, "a.txt"),
            input(FileMode::Regular, A, "a-b"),
            input(FileMode::Regular, A, "B"),
        ];
        let text = render(&spec(&env, &fp, &inputs));
        let paths: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("inputs "))
            .skip(1)
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(paths, ["B", "a-b", "a.txt", "a/b"]);
    }

    #[test]
    fn escaping_is_unambiguous() {
        assert_eq!(escape(b"plain/path.py"), "plain/path.py");
        assert_eq!(escape(b"a\\nb"), "a\\\\nb");
        assert_eq!(escape(b"a\nb"), "a\\nb");
        assert_ne!(escape(b"a\\nb"), escape(b"a\nb"));
        assert_eq!(escape(b"tab\there\r"), "tab\\there\\r");
        assert_eq!(escape(b"\x01\x7f"), "\\x01\\x7f");
        assert_eq!(escape("ünï".as_bytes()), "ünï");
        assert_eq!(escape(b"bad\xffutf8\xc3"), "bad\\xffutf8\\xc3");
        assert_eq!(escape(b"x \\x41"), "x \\\\x41");
    }

    #[test]
    fn header_values_change_the_hash() {
        let env = BTreeMap::new();
        let fp = BTreeMap::new();
        let inputs = [input(FileMode::Regular, A, "a")];
        let base = spec(&env, &fp, &inputs);
        let h = |s: &ManifestSpec<'_>| input_hash(&render(s));
        let env2 = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let fp2 = BTreeMap::from([("v".to_owned(), b"1".to_vec())]);
        let variants = [
            ManifestSpec {
                command: "other",
                ..base
            },
            ManifestSpec {
                segment: "bar",
                ..base
            },
            ManifestSpec {
                platform: "aarch64-darwin",
                ..base
            },
            ManifestSpec {
                sandbox: Sandbox::Full,
                ..base
            },
            ManifestSpec { env: &env2, ..base },
            ManifestSpec {
                fingerprints: &fp2,
                ..base
            },
        ];
        for v in &variants {
            assert_ne!(h(&base), h(v));
        }
    }

    #[test]
    fn platform_is_nix_style() {
        let p = platform();
        assert!(p.contains('-') && !p.contains("macos"), "{p}");
    }
}
