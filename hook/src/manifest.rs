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
//! sandbox filtered v3
//! command python3 -m pytest -q tests/test_foo.py
//! env PYTHONPATH=src
//! fingerprint python3 --version
//! fingerprint-stdout Python 3.11.2\n
//! listing . 4 9f0c2d4e6a8b1c3d5e7f90a2b4c6d8e0
//! listing src/foo 1 0a1b2c3d4e5f60718293a4b5c6d7e8f9
//! listing tests 2 1f2e3d4c5b6a79880796a5b4c3d2e1f0
//! inputs 2
//! 100644 0c4a7c8ff6d0cdd5a2c3bcb6ad3e3e1a57c8a3b1 src/foo/__init__.py
//! 100644 5e1c309dae7f45e0f39b1bf3ac3cd9db12e7d689 tests/test_foo.py
//! ```
//!
//! * `listing <dir> <entries> <digest>`: the names in each directory that holds an input, and
//!   in each of its ancestors (`.` is the root), sorted by directory — what a check can see
//!   of the snapshot besides its inputs ([`crate::listing`]).
//! * A line `no-tests pass` follows `command` for a segment with `no_tests = "pass"` (a pytest
//!   check that collects no tests passes); other manifests have no such line.
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

/// The version of what a check can see, written at the end of the `sandbox` line
/// (`sandbox filtered v3`). Bumped whenever the sandbox changes what a check could read or
/// reach, so results produced under an older, leakier sandbox are misses and run once more
/// instead of answering for the stricter one. 1 (written without a version): a copy of the
/// inputs; 2: the isolated view (namespaces, placeholders, Landlock; issue 14); 3: symlinks
/// that are no inputs are symlinks (were empty placeholders) and the work tree's version files
/// are in the view.
pub const SANDBOX_VERSION: u32 = 3;

/// What goes into one segment's manifest.
#[derive(Debug, Clone, Copy)]
pub struct ManifestSpec<'a> {
    pub segment: &'a str,
    /// See [`platform`].
    pub platform: &'a str,
    pub object_format: gix::hash::Kind,
    pub sandbox: Sandbox,
    /// `network = true`: written as `sandbox <mode>+network`, so a result that needed the
    /// network never answers for a check that has none. Without it the line is unchanged.
    pub network: bool,
    pub command: &'a str,
    /// `no_tests = "pass"`: a line `no-tests pass` after `command`, so a pass that collected no
    /// tests never answers for a segment that counts that as a failure. Without it, no line.
    pub no_tests: crate::config::NoTests,
    /// Hashed environment.
    pub env: &'a BTreeMap<String, String>,
    /// Fingerprint command → its standard output.
    pub fingerprints: &'a BTreeMap<String, Vec<u8>>,
    /// `(directory, "<entries> <digest>")` of each directory around the inputs, sorted by
    /// directory (see [`crate::listing`]): `listing <dir> <entries> <digest>` lines, the root
    /// written `.`.
    pub listings: &'a [(gix::bstr::BString, String)],
    /// The segment's inputs; any order (they are written sorted by path, duplicates dropped).
    pub inputs: &'a [Input],
}

/// The canonical manifest text.
pub fn render(spec: &ManifestSpec<'_>) -> String {
    let hex_len = spec.object_format.len_in_hex();
    let capacity = 512
        + spec.command.len()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
        + spec
            .fingerprints
            .iter()
            .map(|(k, v)| k.len() + v.len() + 40)
            .sum::<usize>()
        + spec
            .inputs
            .iter()
            .map(|i| i.path.len() + hex_len + 9)
            .sum::<usize>();
    let mut out = String::with_capacity(capacity);
    render_into(spec, &mut out, usize::MAX, |_| {});
    out
}

/// The input hash of the manifest of `spec`: the same as `input_hash(&render(spec))`, without
/// holding the whole text (a segment of 1,000 files has a manifest of about 100 KB, and a plan
/// that only looks results up never needs it).
pub fn spec_hash(spec: &ManifestSpec<'_>) -> InputHash {
    const CHUNK: usize = 32 << 10;
    let mut hasher = Sha256::new();
    let mut buf = String::with_capacity(CHUNK + 4096);
    render_into(spec, &mut buf, CHUNK, |b| {
        hasher.update(b.as_bytes());
        b.clear();
    });
    hasher.update(buf.as_bytes());
    InputHash(hasher.finalize().into())
}

/// Write the manifest of `spec` to `out`, handing `out` to `flush` whenever it holds at least
/// `flush_at` bytes (`flush` takes what it wants and clears it).
fn render_into(
    spec: &ManifestSpec<'_>,
    out: &mut String,
    flush_at: usize,
    mut flush: impl FnMut(&mut String),
) {
    let _ = writeln!(out, "checkdef-manifest {FORMAT_VERSION}");
    line(out, "segment", spec.segment.as_bytes());
    line(out, "platform", spec.platform.as_bytes());
    line(
        out,
        "object-format",
        object_format_name(spec.object_format).as_bytes(),
    );
    let network = if spec.network { "+network" } else { "" };
    line(
        out,
        "sandbox",
        format!("{}{network} v{SANDBOX_VERSION}", spec.sandbox.as_str()).as_bytes(),
    );
    line(out, "command", spec.command.as_bytes());
    if spec.no_tests == crate::config::NoTests::Pass {
        line(out, "no-tests", b"pass");
    }
    for (k, v) in spec.env {
        out.push_str("env ");
        escape_into(k.as_bytes(), out);
        out.push('=');
        escape_into(v.as_bytes(), out);
        out.push('\n');
    }
    for (cmd, stdout) in spec.fingerprints {
        line(out, "fingerprint", cmd.as_bytes());
        line(out, "fingerprint-stdout", stdout);
    }
    for (dir, value) in spec.listings {
        out.push_str("listing ");
        if dir.is_empty() {
            out.push('.');
        } else {
            escape_into(dir, out);
        }
        out.push(' ');
        out.push_str(value);
        out.push('\n');
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
        escape_into(&input.path, out);
        out.push('\n');
        if out.len() >= flush_at {
            flush(out);
        }
    }
}

/// The input hash: the SHA-256 of the manifest's bytes.
pub fn input_hash(manifest: &str) -> InputHash {
    InputHash(Sha256::digest(manifest.as_bytes()).into())
}

/// A segment's input hash: the SHA-256 of its manifest. Written (`Display`, JSON, the names of
/// lock files, the store path's key) as 64 lowercase hex digits, and parsed back only from
/// exactly that spelling, so every place that compares two input hashes compares the same
/// bytes the text would. Kept as the digest: computing one (the no-op hot path) formats
/// nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputHash([u8; 32]);

impl InputHash {
    /// Length of the hex spelling.
    pub const HEX_LEN: usize = 64;

    /// The hex spelling in a buffer of its own (no allocation).
    pub fn to_hex(&self) -> HexBuf {
        let mut buf = [0u8; Self::HEX_LEN];
        hex::encode_to_slice(self.0, &mut buf).expect("64 bytes hold 32 in hex");
        HexBuf(buf)
    }

    /// All zeros: a value to fill in before the real hash is computed, never a manifest's hash
    /// in practice.
    pub fn placeholder() -> InputHash {
        InputHash([0; 32])
    }

    /// The first `n` hex digits (for short listings).
    pub fn short(&self, n: usize) -> String {
        self.to_hex().as_str()[..n.min(Self::HEX_LEN)].to_owned()
    }
}

/// The hex spelling of an [`InputHash`], on the stack.
pub struct HexBuf([u8; InputHash::HEX_LEN]);

impl HexBuf {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::ops::Deref for HexBuf {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<std::path::Path> for HexBuf {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(self.as_str())
    }
}

impl std::fmt::Display for InputHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for InputHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As the string it was before it had a type.
        write!(f, "{:?}", self.to_hex().as_str())
    }
}

/// Text that is not an input hash (64 lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an input hash (64 lowercase hex digits)")]
pub struct BadInputHash(pub String);

impl std::str::FromStr for InputHash {
    type Err = BadInputHash;
    fn from_str(s: &str) -> Result<InputHash, BadInputHash> {
        // Lowercase only: the one spelling checkdef writes (`hex` would take uppercase too).
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if s.len() != Self::HEX_LEN || !s.as_bytes().iter().all(lower_hex) {
            return Err(BadInputHash(s.to_owned()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadInputHash(s.to_owned()))?;
        Ok(InputHash(out))
    }
}

impl serde::Serialize for InputHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for InputHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<InputHash, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = InputHash;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an input hash (64 lowercase hex digits)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<InputHash, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
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
    // Fast path: printable ASCII without backslashes, the common case for paths and values.
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\')
    {
        out.push_str(std::str::from_utf8(bytes).expect("printable ASCII is UTF-8"));
        return;
    }
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        // Every byte that needs escaping is ASCII, so slicing at it stays on a char boundary.
        let mut plain_from = 0;
        for (i, b) in valid.bytes().enumerate() {
            if b >= 0x20 && b != 0x7f && b != b'\\' {
                continue;
            }
            out.push_str(&valid[plain_from..i]);
            match b {
                b'\\' => out.push_str("\\\\"),
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                b => {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            plain_from = i + 1;
        }
        out.push_str(&valid[plain_from..]);
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// `bytes` escaped as a new string.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    escape_into(bytes, &mut s);
    s
}

// ---------------------------------------------------------------------------------------------
// Reading manifests back, and diffing two of them ("why did this miss?").

/// A manifest read back by [`parse`]. Values, names and paths stay escaped exactly as written
/// (escaping is one-to-one, so comparing escaped forms compares the originals).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedManifest {
    pub version: u32,
    pub segment: String,
    pub platform: String,
    pub object_format: String,
    pub sandbox: String,
    pub command: String,
    /// The `no-tests` line's value (`pass`), when there is one.
    pub no_tests: Option<String>,
    /// Name → value.
    pub env: BTreeMap<String, String>,
    /// Command → its standard output.
    pub fingerprints: BTreeMap<String, String>,
    /// Directory (`.` for the root) → `<entries> <digest>` of its listing.
    pub listings: BTreeMap<String, String>,
    /// Path → (mode, blob id in hex).
    pub inputs: BTreeMap<String, (String, String)>,
}

/// A manifest that is not in format version 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest line {line}: {message}")]
pub struct ManifestParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Parse a manifest written by [`render`] (format version 1). Strict about the order of the
/// header lines and the input count, so a damaged manifest is never half-read.
pub fn parse(text: &str) -> Result<ParsedManifest, ManifestParseError> {
    let err = |line: usize, message: String| ManifestParseError { line, message };
    if !text.is_empty() && !text.ends_with('\n') {
        let n = text.lines().count();
        return Err(err(n, "the last line does not end with a newline".into()));
    }
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
    let mut m = ParsedManifest::default();
    let (n, first) = lines
        .next()
        .ok_or_else(|| err(1, "empty manifest".into()))?;
    let version = first
        .strip_prefix("checkdef-manifest ")
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| {
            err(
                n,
                format!("expected `checkdef-manifest <version>`, found `{first}`"),
            )
        })?;
    if version != FORMAT_VERSION {
        return Err(err(
            n,
            format!("unsupported manifest format {version} (this checkdef reads {FORMAT_VERSION})"),
        ));
    }
    m.version = version;
    for key in ["segment", "platform", "object-format", "sandbox", "command"] {
        let (n, l) = lines
            .next()
            .ok_or_else(|| err(n + 1, format!("missing `{key}` line")))?;
        let value = l
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| err(n, format!("expected `{key} ...`, found `{l}`")))?;
        let slot = match key {
            "segment" => &mut m.segment,
            "platform" => &mut m.platform,
            "object-format" => &mut m.object_format,
            "sandbox" => &mut m.sandbox,
            _ => &mut m.command,
        };
        *slot = value.to_owned();
    }
    if let Some((_, l)) = lines.next_if(|(_, l)| l.starts_with("no-tests ")) {
        m.no_tests = Some(l["no-tests ".len()..].to_owned());
    }
    while let Some((n, l)) = lines.next_if(|(_, l)| l.starts_with("env ")) {
        let (k, v) = l["env ".len()..]
            .split_once('=')
            .ok_or_else(|| err(n, format!("expected `env NAME=value`, found `{l}`")))?;
        m.env.insert(k.to_owned(), v.to_owned());
    }
    while let Some((n, l)) = lines.next_if(|(_, l)| l.starts_with("fingerprint ")) {
        let cmd = &l["fingerprint ".len()..];
        let (n2, out) = lines
            .next()
            .ok_or_else(|| err(n + 1, "missing `fingerprint-stdout` line".into()))?;
        let out = out.strip_prefix("fingerprint-stdout ").ok_or_else(|| {
            err(
                n2,
                format!("expected `fingerprint-stdout ...`, found `{out}`"),
            )
        })?;
        m.fingerprints.insert(cmd.to_owned(), out.to_owned());
    }
    while let Some((n, l)) = lines.next_if(|(_, l)| l.starts_with("listing ")) {
        let mut parts = l["listing ".len()..].rsplitn(3, ' ');
        let (Some(digest), Some(entries), Some(dir)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(err(
                n,
                format!("expected `listing <dir> <entries> <digest>`, found `{l}`"),
            ));
        };
        m.listings
            .insert(dir.to_owned(), format!("{entries} {digest}"));
    }
    let (n, l) = lines
        .next()
        .ok_or_else(|| err(n + 1, "missing `inputs <count>` line".into()))?;
    let count: usize = l
        .strip_prefix("inputs ")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err(n, format!("expected `inputs <count>`, found `{l}`")))?;
    for (n, l) in lines.by_ref() {
        let mut parts = l.splitn(3, ' ');
        let (Some(mode), Some(id), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err(
                n,
                format!("expected `<mode> <blob id> <path>`, found `{l}`"),
            ));
        };
        if m.inputs
            .insert(path.to_owned(), (mode.to_owned(), id.to_owned()))
            .is_some()
        {
            return Err(err(n, format!("input `{path}` is listed twice")));
        }
    }
    if m.inputs.len() != count {
        return Err(err(
            n,
            format!("`inputs {count}` but {} input lines follow", m.inputs.len()),
        ));
    }
    Ok(m)
}

/// One changed key (an environment variable or a fingerprint command): `None` = absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What differs between two manifests of a segment (old → new). Lists are sorted by path or
/// key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Path, old blob id, new blob id.
    pub modified: Vec<(String, String, String)>,
    /// Path, old mode, new mode.
    pub mode_changed: Vec<(String, String, String)>,
    pub env: Vec<KeyChange>,
    pub fingerprints: Vec<KeyChange>,
    /// Directories whose listing (the names in them) changed.
    pub listings: Vec<KeyChange>,
    /// Old and new value of each header line that changed.
    pub command: Option<(String, String)>,
    /// The `no-tests` rule (`fail` when the line is absent).
    pub no_tests: Option<(String, String)>,
    pub sandbox: Option<(String, String)>,
    pub platform: Option<(String, String)>,
    pub object_format: Option<(String, String)>,
    pub segment: Option<(String, String)>,
}

fn changed(old: &str, new: &str) -> Option<(String, String)> {
    (old != new).then(|| (old.to_owned(), new.to_owned()))
}

fn key_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<KeyChange> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| KeyChange {
            key: k.clone(),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

/// Compare two parsed manifests.
pub fn diff(old: &ParsedManifest, new: &ParsedManifest) -> ManifestDiff {
    let mut d = ManifestDiff {
        env: key_changes(&old.env, &new.env),
        fingerprints: key_changes(&old.fingerprints, &new.fingerprints),
        listings: key_changes(&old.listings, &new.listings),
        command: changed(&old.command, &new.command),
        no_tests: changed(
            old.no_tests.as_deref().unwrap_or("fail"),
            new.no_tests.as_deref().unwrap_or("fail"),
        ),
        sandbox: changed(&old.sandbox, &new.sandbox),
        platform: changed(&old.platform, &new.platform),
        object_format: changed(&old.object_format, &new.object_format),
        segment: changed(&old.segment, &new.segment),
        ..ManifestDiff::default()
    };
    for (path, (mode, id)) in &new.inputs {
        match old.inputs.get(path) {
            None => d.added.push(path.clone()),
            Some((old_mode, old_id)) => {
                if old_id != id {
                    d.modified.push((path.clone(), old_id.clone(), id.clone()));
                }
                if old_mode != mode {
                    d.mode_changed
                        .push((path.clone(), old_mode.clone(), mode.clone()));
                }
            }
        }
    }
    d.removed = old
        .inputs
        .keys()
        .filter(|p| !new.inputs.contains_key(*p))
        .cloned()
        .collect();
    d
}

/// Parse both manifest texts and compare them (old → new).
pub fn diff_texts(old: &str, new: &str) -> Result<ManifestDiff, ManifestParseError> {
    Ok(diff(&parse(old)?, &parse(new)?))
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl ManifestDiff {
    /// True when the manifests are identical.
    pub fn is_empty(&self) -> bool {
        *self == ManifestDiff::default()
    }

    /// One line, e.g. `1 modified (src/foo/__init__.py), env PYTHONPATH changed`.
    pub fn summary(&self) -> String {
        fn paths<'a>(items: impl Iterator<Item = &'a String>, n: usize) -> String {
            let items: Vec<&String> = items.collect();
            let mut s: Vec<String> = items.iter().take(3).map(|p| p.to_string()).collect();
            if n > 3 {
                s.push(format!("+{} more", n - 3));
            }
            s.join(", ")
        }
        let mut parts = Vec::new();
        if !self.modified.is_empty() {
            let n = self.modified.len();
            parts.push(format!(
                "{n} modified ({})",
                paths(self.modified.iter().map(|m| &m.0), n)
            ));
        }
        if !self.added.is_empty() {
            let n = self.added.len();
            parts.push(format!("{n} added ({})", paths(self.added.iter(), n)));
        }
        if !self.removed.is_empty() {
            let n = self.removed.len();
            parts.push(format!("{n} removed ({})", paths(self.removed.iter(), n)));
        }
        if !self.mode_changed.is_empty() {
            let n = self.mode_changed.len();
            let first = &self.mode_changed[0];
            let more = if n > 1 {
                format!(", +{} more", n - 1)
            } else {
                String::new()
            };
            parts.push(format!(
                "{n} mode change{} ({} {}→{}{more})",
                if n == 1 { "" } else { "s" },
                first.0,
                first.1,
                first.2
            ));
        }
        let verb = |c: &KeyChange| match (&c.old, &c.new) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        for c in &self.env {
            parts.push(format!("env {} {}", c.key, verb(c)));
        }
        for c in &self.fingerprints {
            let what = if verb(c) == "changed" {
                "output changed"
            } else {
                verb(c)
            };
            parts.push(format!("fingerprint `{}` {what}", c.key));
        }
        if !self.listings.is_empty() {
            let dirs: Vec<&str> = self.listings.iter().map(|c| c.key.as_str()).collect();
            let n = dirs.len();
            parts.push(format!(
                "names changed in {} ({})",
                if n == 1 {
                    "1 directory".to_owned()
                } else {
                    format!("{n} directories")
                },
                paths(self.listings.iter().map(|c| &c.key), n)
            ));
        }
        if self.command.is_some() {
            parts.push("command changed".into());
        }
        for (label, v) in [
            ("no_tests", &self.no_tests),
            ("sandbox", &self.sandbox),
            ("platform", &self.platform),
            ("object format", &self.object_format),
            ("segment", &self.segment),
        ] {
            if let Some((o, n)) = v {
                parts.push(format!("{label} {o}→{n}"));
            }
        }
        if parts.is_empty() {
            "no difference in the manifest".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// One line per difference, for `checkdef explain`.
    pub fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (p, o, n) in &self.modified {
            out.push(format!(
                "modified     {p} (blob {} → {})",
                short_id(o),
                short_id(n)
            ));
        }
        for p in &self.added {
            out.push(format!("added        {p}"));
        }
        for p in &self.removed {
            out.push(format!("removed      {p}"));
        }
        for (p, o, n) in &self.mode_changed {
            out.push(format!("mode         {p} {o} → {n}"));
        }
        let show = |v: &Option<String>| match v {
            Some(v) => format!("\"{v}\""),
            None => "(unset)".to_owned(),
        };
        for c in &self.env {
            out.push(format!(
                "env          {}: {} → {}",
                c.key,
                show(&c.old),
                show(&c.new)
            ));
        }
        for c in &self.fingerprints {
            let show = |v: &Option<String>| match v {
                Some(v) => format!("\"{v}\""),
                None => "(not a fingerprint)".to_owned(),
            };
            out.push(format!(
                "fingerprint  `{}`: {} → {}",
                c.key,
                show(&c.old),
                show(&c.new)
            ));
        }
        for c in &self.listings {
            let entries = |v: &Option<String>| match v {
                Some(v) => format!("{} entries", v.split(' ').next().unwrap_or("?")),
                None => "(not listed)".to_owned(),
            };
            out.push(format!(
                "listing      {}/: the names in it changed ({} → {}; a file or directory added, removed or renamed)",
                c.key,
                entries(&c.old),
                entries(&c.new)
            ));
        }
        if let Some((o, n)) = &self.command {
            out.push(format!("command      \"{o}\" → \"{n}\""));
        }
        for (label, v) in [
            ("no_tests     ", &self.no_tests),
            ("sandbox      ", &self.sandbox),
            ("platform     ", &self.platform),
            ("object-format", &self.object_format),
            ("segment      ", &self.segment),
        ] {
            if let Some((o, n)) = v {
                out.push(format!("{label}{o} → {n}"));
            }
        }
        out
    }
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
            network: false,
            command: "python3 -m pytest -q tests/test_foo.py",
            no_tests: crate::config::NoTests::Fail,
            env,
            fingerprints: fp,
            listings: &[],
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
                 sandbox filtered v3\n\
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
        assert_eq!(input_hash(&text).to_string().len(), 64);
    }

    #[test]
    fn streamed_hash_equals_the_hash_of_the_text() {
        let env = BTreeMap::from([("A".to_owned(), "x\ny".to_owned())]);
        let fp = BTreeMap::from([("v".to_owned(), b"1\n".to_vec())]);
        // Sizes around the 32 KiB flush threshold, unsorted, with escaped bytes.
        for n in [0usize, 1, 300, 700, 701, 2000] {
            let inputs: Vec<Input> = (0..n)
                .rev()
                .map(|i| Input {
                    mode: FileMode::Regular,
                    id: id(if i % 2 == 0 { A } else { B }),
                    path: format!("dir/\u{e9}t\u{e9}\t{i:05}.py").into(),
                })
                .collect();
            let s = spec(&env, &fp, &inputs);
            let text = render(&s);
            assert_eq!(spec_hash(&s), input_hash(&text), "{n} inputs");
        }
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
    fn listings_are_hashed_read_back_and_named_in_a_diff() {
        let env = BTreeMap::new();
        let fp = BTreeMap::new();
        let inputs = [input(FileMode::Regular, A, "tests/test_a.py")];
        let before = [
            (gix::bstr::BString::from(""), "3 00".to_owned()),
            (gix::bstr::BString::from("tests dir"), "2 aa".to_owned()),
        ];
        let after = [before[0].clone(), ("tests dir".into(), "3 bb".to_owned())];
        let old = ManifestSpec {
            listings: &before,
            ..spec(&env, &fp, &inputs)
        };
        let new = ManifestSpec {
            listings: &after,
            ..old
        };
        assert_ne!(input_hash(&render(&old)), input_hash(&render(&new)));
        let text = render(&old);
        assert!(
            text.contains("\nlisting . 3 00\nlisting tests dir 2 aa\ninputs 1\n"),
            "{text}"
        );
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.listings["tests dir"], "2 aa");
        let d = diff_texts(&text, &render(&new)).unwrap();
        assert_eq!(d.summary(), "names changed in 1 directory (tests dir)");
        assert!(
            d.details()[0].contains("2 entries → 3 entries"),
            "{:?}",
            d.details()
        );
    }

    #[test]
    fn the_no_tests_rule_reads_back_and_shows_in_a_diff() {
        let env = BTreeMap::new();
        let fp = BTreeMap::new();
        let inputs = [input(FileMode::Regular, A, "a")];
        let strict = spec(&env, &fp, &inputs);
        let lenient = ManifestSpec {
            no_tests: crate::config::NoTests::Pass,
            ..strict
        };
        let text = render(&lenient);
        assert!(text.contains("\ncommand python3 -m pytest -q tests/test_foo.py\nno-tests pass\n"));
        assert!(!render(&strict).contains("no-tests"));
        assert_eq!(parse(&text).unwrap().no_tests.as_deref(), Some("pass"));
        let d = diff_texts(&render(&strict), &text).unwrap();
        assert_eq!(d.summary(), "no_tests fail→pass");
        assert!(diff_texts(&text, &text).unwrap().is_empty());
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
            ManifestSpec {
                network: true,
                ..base
            },
            ManifestSpec {
                no_tests: crate::config::NoTests::Pass,
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

    #[test]
    fn the_sandbox_line_carries_its_version_and_is_documented() {
        let env = BTreeMap::new();
        let fp = BTreeMap::new();
        let line = format!("\nsandbox filtered v{SANDBOX_VERSION}\n");
        let text = render(&spec(&env, &fp, &[]));
        assert!(text.contains(&line), "{text}");
        // Results stored under the copy sandbox (the line without a version) are misses now.
        assert_ne!(
            input_hash(&text),
            input_hash(&text.replace(&line, "\nsandbox filtered\n"))
        );
        let docs = include_str!("../../docs/configuration.md");
        assert!(
            docs.contains(&line),
            "docs/configuration.md's manifest example"
        );
        assert!(
            docs.contains(&format!("`v{SANDBOX_VERSION}`")),
            "docs/configuration.md says what the sandbox version is"
        );
    }
}

#[cfg(test)]
mod diff_tests {
    use super::*;
    use crate::git::FileMode;

    const A: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
    const B: &str = "d00491fd7e5bb6fa28c517a0bb32b8b506539d4d";

    struct M {
        command: &'static str,
        platform: &'static str,
        sandbox: Sandbox,
        env: BTreeMap<String, String>,
        fp: BTreeMap<String, Vec<u8>>,
        inputs: Vec<Input>,
    }

    fn base() -> M {
        let input = |mode, hex: &str, path: &str| Input {
            mode,
            id: gix::ObjectId::from_hex(hex.as_bytes()).unwrap(),
            path: path.into(),
        };
        M {
            command: "python3 -m pytest tests/test_foo.py",
            platform: "x86_64-linux",
            sandbox: Sandbox::Filtered,
            env: BTreeMap::from([("PYTHONPATH".to_owned(), "src".to_owned())]),
            fp: BTreeMap::from([("python3 --version".to_owned(), b"Python 3.11.2\n".to_vec())]),
            inputs: vec![
                input(FileMode::Regular, A, "src/foo/__init__.py"),
                input(FileMode::Regular, B, "tests/test_foo.py"),
                input(FileMode::Regular, A, "tests/run me.sh"),
            ],
        }
    }

    fn text(m: &M) -> String {
        render(&ManifestSpec {
            segment: "foo-tests",
            platform: m.platform,
            object_format: gix::hash::Kind::Sha1,
            sandbox: m.sandbox,
            network: false,
            command: m.command,
            no_tests: crate::config::NoTests::Fail,
            env: &m.env,
            fingerprints: &m.fp,
            listings: &[],
            inputs: &m.inputs,
        })
    }

    fn summary(change: impl FnOnce(&mut M)) -> String {
        let old = base();
        let mut new = base();
        change(&mut new);
        diff_texts(&text(&old), &text(&new)).unwrap().summary()
    }

    #[test]
    fn parse_round_trip() {
        let t = text(&base());
        let p = parse(&t).unwrap();
        assert_eq!(p.segment, "foo-tests");
        assert_eq!(p.env["PYTHONPATH"], "src");
        assert_eq!(p.fingerprints["python3 --version"], "Python 3.11.2\\n");
        assert_eq!(
            p.inputs["tests/run me.sh"],
            ("100644".to_owned(), A.to_owned())
        );
        assert!(diff(&p, &p).is_empty());
        assert_eq!(diff(&p, &p).summary(), "no difference in the manifest");
    }

    #[test]
    fn parse_rejects_damage() {
        let t = text(&base());
        assert!(parse(&t.replace("inputs 3", "inputs 4")).is_err());
        assert!(parse(&t.replace("checkdef-manifest 1", "checkdef-manifest 2")).is_err());
        assert!(parse(t.trim_end()).is_err());
        assert!(parse("").is_err());
        let e = parse(&t.replace("sandbox filtered v3\n", "")).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn each_kind_of_change() {
        let modified = |m: &mut M| m.inputs[0].id = gix::ObjectId::from_hex(B.as_bytes()).unwrap();
        assert_eq!(summary(modified), "1 modified (src/foo/__init__.py)");
        assert_eq!(
            summary(|m| m.inputs.push(Input {
                mode: FileMode::Regular,
                id: gix::ObjectId::from_hex(A.as_bytes()).unwrap(),
                path: "src/foo/new.py".into(),
            })),
            "1 added (src/foo/new.py)"
        );
        assert_eq!(
            summary(|m| {
                m.inputs.remove(1);
            }),
            "1 removed (tests/test_foo.py)"
        );
        assert_eq!(
            summary(|m| m.inputs[2].mode = FileMode::Executable),
            "1 mode change (tests/run me.sh 100644→100755)"
        );
        assert_eq!(
            summary(|m| {
                m.env.insert("PYTHONPATH".into(), "lib".into());
                m.env.insert("NEW".into(), "1".into());
            }),
            "env NEW added, env PYTHONPATH changed"
        );
        assert_eq!(
            summary(|m| {
                m.fp.insert("python3 --version".into(), b"Python 3.12.0\n".to_vec());
            }),
            "fingerprint `python3 --version` output changed"
        );
        assert_eq!(
            summary(|m| m.command = "python3 -m pytest -x tests/test_foo.py"),
            "command changed"
        );
        assert_eq!(
            summary(|m| m.platform = "aarch64-linux"),
            "platform x86_64-linux→aarch64-linux"
        );
        assert_eq!(
            summary(|m| m.sandbox = Sandbox::Full),
            "sandbox filtered v3→full v3"
        );
    }

    #[test]
    fn details_and_long_lists() {
        let old = base();
        let mut new = base();
        for i in 0..5 {
            new.inputs.push(Input {
                mode: FileMode::Regular,
                id: gix::ObjectId::from_hex(A.as_bytes()).unwrap(),
                path: format!("src/foo/m{i}.py").into(),
            });
        }
        new.env.clear();
        new.fp.clear();
        let d = diff_texts(&text(&old), &text(&new)).unwrap();
        assert_eq!(
            d.summary(),
            "5 added (src/foo/m0.py, src/foo/m1.py, src/foo/m2.py, +2 more), env PYTHONPATH removed, fingerprint `python3 --version` removed"
        );
        let details = d.details();
        assert_eq!(details[0], "added        src/foo/m0.py");
        assert_eq!(details[5], "env          PYTHONPATH: \"src\" → (unset)");
        assert_eq!(
            details[6],
            "fingerprint  `python3 --version`: \"Python 3.11.2\\n\" → (not a fingerprint)"
        );
    }
}
