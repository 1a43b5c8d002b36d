//! What a checkout holds: git converts a blob on its way to the work tree (and a file on its way
//! back) as `.gitattributes` and the configuration say — `text`/`eol` and `core.autocrlf`,
//! `ident`, `working-tree-encoding`, and filter drivers (`filter.<name>.smudge`/`clean`/
//! `process`, which is how Git LFS plugs in). checkdef materialises inputs the same way, through
//! gix's filter pipeline (already built in for the directory walk: no extra crate), and puts
//! everything that decides the conversion into the input hash ([`Repo::checkout_rules`]).
//!
//! The common case costs a few `stat`s: without any attributes file (in the snapshot or
//! outside it) and without `core.autocrlf`, no file can be converted, no pipeline is built, and
//! the manifest is unchanged. Where git keeps its system attributes file is asked once (`git
//! var`) and kept in the local cache while the `git` on `PATH` is the same file.
use std::io::Read as _;
use std::path::{Path, PathBuf};

use gix::bstr::BStr;
use gix::filter::plumbing::driver::apply::{Delay, MaybeDelayed};
use gix::filter::plumbing::pipeline::convert::{ToGitOutcome, ToWorktreeOutcome, to_worktree};

use super::{GitError, Input, Repo, Result, Target, native};

/// The pseudo-fingerprint under which [`Repo::checkout_rules`] enter a segment's manifest.
pub const CHECKOUT_RULES_KEY: &str = "(checkout: .gitattributes and filter configuration)";

/// Whether `path` (repository-relative) is a `.gitattributes` file.
pub fn is_attributes_file(path: &[u8]) -> bool {
    path == b".gitattributes" || path.ends_with(b"/.gitattributes")
}

/// Whether git ignores `rel` (a path relative to the work tree `workdir`), as `git
/// check-ignore` says. Asked only of the few version files of the root that a snapshot lacks:
/// what it cannot answer counts as not ignored (the cautious answer for those).
pub fn is_ignored(workdir: &Path, rel: &str) -> bool {
    std::process::Command::new("git")
        .arg("-C")
        .arg(workdir)
        .args(["check-ignore", "-q", "--", rel])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The attributes files git reads besides the snapshot's `.gitattributes`, lowest priority
/// first. Any of them may be absent; git then skips it silently, and so does checkdef.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideAttributes {
    /// `$(prefix)/etc/gitattributes` of the `git` on `PATH`; `None` under `GIT_ATTR_NOSYSTEM`.
    pub system: Option<PathBuf>,
    /// `core.attributesFile`, else `$XDG_CONFIG_HOME/git/attributes`, else
    /// `$HOME/.config/git/attributes`.
    pub global: Option<PathBuf>,
    /// `$GIT_COMMON_DIR/info/attributes`.
    pub info: PathBuf,
}

impl OutsideAttributes {
    /// The global files (system, then global), in the order git reads them.
    fn globals(&self) -> impl Iterator<Item = &PathBuf> {
        self.system.iter().chain(self.global.iter())
    }

    /// Whether any of them holds rules a checkout could apply.
    fn any_present(&self) -> bool {
        self.globals().chain([&self.info]).any(|p| p.is_file())
    }
}

/// The content of an attributes file outside the snapshot, or `None` where git would skip it
/// (missing, or a directory). Any other failure is an error: git would only warn and go on
/// without the file, and checkdef cannot know the checkout that gives.
fn read_attributes_file(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::ErrorKind;
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(GitError::AttributesFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The system attributes file of the `git` on `PATH`. Its location is compiled into git
/// (`/etc/gitattributes` for a distribution's git, `/usr/local/etc/gitattributes` for one
/// built from source, ...), so git is asked once per process; gix's guess (always
/// `/etc/gitattributes` on Unix, skipped when `GIT_ATTR_NOSYSTEM` is set at all) differs.
fn system_attributes_file() -> Result<Option<PathBuf>> {
    static ANSWER: std::sync::OnceLock<Result<Option<PathBuf>, String>> =
        std::sync::OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let kept = kept_answer_path();
            if let Some(answer) = kept.as_deref().and_then(read_kept_answer) {
                return Ok(answer);
            }
            let answer = ask_git_var();
            if let (Some(p), Ok(a)) = (&kept, &answer) {
                // Only saves a process next time: failing to keep it is no error.
                let text = match a {
                    None => "none\n".to_owned(),
                    Some(path) => format!("path {}\n", path.display()),
                };
                let _ = crate::fsutil::write_atomic(p, text.as_bytes());
            }
            answer
        })
        .clone()
        .map_err(|message| GitError::SystemAttributes { message })
}

/// Where the answer of `git var GIT_ATTR_SYSTEM` is kept between invocations (see
/// [`keep_answers_in`]): named by the `git` on `PATH` (its path and file identity, which a
/// reinstall changes) and `GIT_ATTR_NOSYSTEM`, so a no-op starts no git.
fn kept_answer_path() -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let dir = KEPT_DIR.get()?;
    let git = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("git"))
        .find(|p| p.is_file())?;
    let id = crate::fsutil::FileId::of(&git)?;
    let real = std::fs::canonicalize(&git).ok()?;
    let real_id = crate::fsutil::FileId::of(&real)?;
    let nosystem = std::env::var_os("GIT_ATTR_NOSYSTEM");
    let key = format!(
        "git-attr-system 1\n{} {id}\n{} {real_id}\n{nosystem:?}\n",
        git.display(),
        real.display()
    );
    Some(dir.join(format!(
        "git-attr-system-{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..32]
    )))
}

fn read_kept_answer(path: &Path) -> Option<Option<PathBuf>> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.strip_suffix('\n')?;
    match line {
        "none" => Some(None),
        _ => line.strip_prefix("path ").map(|p| Some(PathBuf::from(p))),
    }
}

/// The private directory in which git's answer about its system attributes file is kept (the
/// local cache's fingerprint directory: an answer there decides input hashes, so it must be
/// one only the user writes). Set once per process, before the first plan.
pub fn keep_answers_in(dir: &Path) {
    let _ = KEPT_DIR.set(dir.to_path_buf());
}

static KEPT_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn ask_git_var() -> Result<Option<PathBuf>, String> {
    let out = std::process::Command::new("git")
        .args(["var", "GIT_ATTR_SYSTEM"])
        // `git var` needs no repository; a hook's GIT_DIR must not make it fail.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .output()
        .ok();
    let nosystem = std::env::var_os("GIT_ATTR_NOSYSTEM");
    interpret_git_var_attr_system(
        out.as_ref()
            .map(|o| (o.status.code(), &o.stdout[..], &o.stderr[..])),
        nosystem.as_deref(),
    )
}

/// What `git var GIT_ATTR_SYSTEM` answered (exit code, stdout, stderr; `None` when git could
/// not be started) says about the system attributes file.
fn interpret_git_var_attr_system(
    answer: Option<(Option<i32>, &[u8], &[u8])>,
    nosystem: Option<&std::ffi::OsStr>,
) -> Result<Option<PathBuf>, String> {
    use std::os::unix::ffi::OsStrExt as _;
    match answer {
        Some((Some(0), stdout, _)) => {
            let path = stdout.strip_suffix(b"\n").unwrap_or(stdout);
            Ok((!path.is_empty()).then(|| std::ffi::OsStr::from_bytes(path).into()))
        }
        // git reads no system file (GIT_ATTR_NOSYSTEM is true).
        Some((Some(1), _, _)) => Ok(None),
        // git refuses to run: `git checkout` would refuse as well.
        Some((Some(128), _, stderr)) => Err(String::from_utf8_lossy(stderr).trim().to_owned()),
        // No git, or one older than 2.42 (no such variable): git's own default on Unix.
        _ => match nosystem.map(|v| git_bool(v.as_bytes())) {
            None | Some(Some(false)) => Ok(Some(PathBuf::from("/etc/gitattributes"))),
            Some(Some(true)) => Ok(None),
            Some(None) => Err(format!(
                "bad boolean environment value `{}` for GIT_ATTR_NOSYSTEM",
                String::from_utf8_lossy(nosystem.unwrap_or_default().as_bytes())
            )),
        },
    }
}

/// A boolean as git parses one from the environment; `None` when git would reject it.
fn git_bool(v: &[u8]) -> Option<bool> {
    let lower = v.to_ascii_lowercase();
    match &lower[..] {
        b"" | b"false" | b"no" | b"off" => Some(false),
        b"true" | b"yes" | b"on" => Some(true),
        _ => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(|n| n != 0),
    }
}

/// The user's global attributes file when `core.attributesFile` is unset, from the
/// environment as git reads it (an empty `XDG_CONFIG_HOME` counts as unset).
fn default_global_attributes(
    xdg_config_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    match xdg_config_home.filter(|x| !x.is_empty()) {
        Some(xdg) => Some(Path::new(xdg).join("git").join("attributes")),
        None => home.map(|h| Path::new(h).join(".config").join("git").join("attributes")),
    }
}

impl Repo {
    /// The attributes files outside the snapshot that a checkout in this repository reads.
    pub fn outside_attributes(&self) -> Result<OutsideAttributes> {
        let config = self.repo.config_snapshot();
        let global = if config.string("core.attributesFile").is_some() {
            // Set, it replaces the default file even when it names nothing (git then reads
            // no global file). `~` is expanded; a relative path is read, as git does, from
            // the top of the work tree.
            config
                .trusted_path("core.attributesFile")
                .map_err(|source| GitError::AttributesFileConfig { source })?
                .map(|p| self.repo.workdir().unwrap_or(self.repo.git_dir()).join(p))
        } else {
            default_global_attributes(
                std::env::var_os("XDG_CONFIG_HOME").as_deref(),
                std::env::var_os("HOME").as_deref(),
            )
        };
        Ok(OutsideAttributes {
            system: system_attributes_file()?,
            global,
            info: self.repo.common_dir().join("info").join("attributes"),
        })
    }

    /// Whether a checkout can convert anything: an attributes file in the snapshot
    /// (`has_attributes_files`), any of git's attributes files outside it (system, global,
    /// `$GIT_DIR/info/attributes`), or `core.autocrlf` set to `true` or `input` (which
    /// converts text files without attributes).
    pub fn may_convert(&self, has_attributes_files: bool) -> Result<bool> {
        if has_attributes_files {
            return Ok(true);
        }
        let config = self.repo.config_snapshot();
        if config
            .string("core.autocrlf")
            .is_some_and(|v| !v.eq_ignore_ascii_case(b"false"))
        {
            return Ok(true);
        }
        Ok(self.outside_attributes()?.any_present())
    }

    /// Everything that decides how this snapshot's files are converted at checkout, as text
    /// (one item per line) for the manifest; `None` when [`may_convert`](Self::may_convert) is
    /// false. `attributes_files` are the snapshot's `.gitattributes` files.
    pub fn checkout_rules(&self, attributes_files: &[Input]) -> Result<Option<String>> {
        if !self.may_convert(!attributes_files.is_empty())? {
            return Ok(None);
        }
        use std::fmt::Write as _;
        let mut out = String::from("checkout-rules 1\n");
        let mut files: Vec<&Input> = attributes_files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for f in files {
            let _ = writeln!(out, "attributes {} {} {}", f.mode, f.id, f.path);
        }
        // The files outside the snapshot, by role and content (not by path, which differs
        // between machines); a missing one has no line, so creating it changes the hash.
        let kind = self.object_hash();
        let outside = self.outside_attributes()?;
        for (role, path) in [
            ("system-attributes", outside.system.as_ref()),
            ("global-attributes", outside.global.as_ref()),
            ("info-attributes", Some(&outside.info)),
        ] {
            let Some(path) = path else { continue };
            if let Some(data) = read_attributes_file(path)? {
                let id = super::blob_id(kind, &data).map_err(|e| GitError::AttributesFile {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let _ = writeln!(out, "{role} {id}");
            }
        }
        let config = self.repo.config_snapshot();
        for key in [
            "core.autocrlf",
            "core.eol",
            "core.safecrlf",
            "core.checkRoundtripEncoding",
        ] {
            if let Some(v) = config.string(key) {
                let _ = writeln!(out, "{key} {v}");
            }
        }
        // Every filter driver's commands (the attributes decide which apply to which file).
        let mut drivers = Vec::new();
        for section in config.plumbing().sections() {
            let header = section.header();
            if !header.name().eq_ignore_ascii_case(b"filter") {
                continue;
            }
            let Some(name) = header.subsection_name() else {
                continue;
            };
            for key in ["clean", "smudge", "process", "required"] {
                if let Some(v) = section.value(key) {
                    drivers.push(format!("filter.{name}.{key} {v}"));
                }
            }
        }
        drivers.sort();
        drivers.dedup();
        for d in drivers {
            out.push_str(&d);
            out.push('\n');
        }
        Ok(Some(out))
    }

    /// A converter for `target`: attributes from the commit's own tree, or from the work tree
    /// and index, plus the files outside the snapshot exactly as
    /// [`outside_attributes`](Self::outside_attributes) names them. (gix's own choice of
    /// global files differs from git's, see [`system_attributes_file`], so the attribute stack
    /// is assembled here.)
    pub fn converter(&self, target: &Target) -> Result<Converter<'_>> {
        use gix::worktree::stack::state::attributes::Source;
        let err = |source| GitError::Checkout {
            path: "(attributes)".into(),
            source,
        };
        let (index, source): (gix::worktree::IndexPersistedOrInMemory, _) = match target {
            Target::Commit(commit) => {
                let tree = self.tree_of(*commit)?;
                let index = self.repo.index_from_tree(&tree).map_err(err)?;
                (index.into(), Source::IdMapping)
            }
            Target::WorkTree => (
                self.repo.index_or_empty().map_err(err)?.into(),
                Source::WorktreeThenIdMapping,
            ),
        };
        let index_state: &gix::index::State = &index;
        let stack = self.attribute_stack(index_state, source)?;
        // A second stack for checkdef's own look-ups (the pipeline keeps its own to itself).
        let encodings = self.attribute_stack(index_state, source)?;
        let mut encoding = gix::attrs::search::Outcome::default();
        encoding.initialize_with_selection(&Default::default(), ["working-tree-encoding"]);
        let pipeline = gix::filter::Pipeline::new(&self.repo, stack).map_err(err)?;
        Ok(Converter {
            pipeline,
            index,
            encodings,
            encoding,
            buf: Vec::new(),
        })
    }

    /// An attribute stack over `index` with the files outside the snapshot.
    fn attribute_stack(
        &self,
        index_state: &gix::index::State,
        source: gix::worktree::stack::state::attributes::Source,
    ) -> Result<gix::worktree::Stack> {
        let outside = self.outside_attributes()?;
        let mut buf = Vec::new();
        let mut collection = gix::attrs::search::MetadataCollection::default();
        let no_files: [PathBuf; 0] = [];
        let mut globals = gix::attrs::Search::new_globals(no_files, &mut buf, &mut collection)
            .map_err(|source| GitError::AttributesFile {
                path: "(built-in macros)".into(),
                source,
            })?;
        for path in outside.globals() {
            globals
                .add_patterns_file(path.clone(), true, None, &mut buf, &mut collection, true)
                .map_err(|source| GitError::AttributesFile {
                    path: path.clone(),
                    source,
                })?;
        }
        let state = gix::worktree::stack::State::AttributesStack(
            gix::worktree::stack::state::Attributes::new(
                globals,
                Some(outside.info),
                source,
                collection,
            ),
        );
        let case = if self
            .repo
            .config_snapshot()
            .boolean("core.ignoreCase")
            .unwrap_or(false)
        {
            gix::glob::pattern::Case::Fold
        } else {
            gix::glob::pattern::Case::Sensitive
        };
        let mappings = state.id_mappings_from_index(index_state, index_state.path_backing(), case);
        // The root is only joined to paths to read work-tree `.gitattributes`; nothing is
        // written there.
        let root = self.repo.workdir().unwrap_or(self.repo.git_dir());
        let stack = gix::worktree::Stack::new(root, state, case, buf, mappings);
        Ok(stack)
    }
}

/// git expands `ident`'s `$Id$` to `$Id: <blob id> $`; gix writes `$Id: <blob id>$` (no space
/// before the closing `$`). Rewrite gix's spelling to git's, so the sandbox holds the bytes a
/// `git checkout` writes. Only the blob's own id is rewritten, and a blob cannot contain its
/// own id, so no other text can be touched.
fn git_ident_spelling(blob: &[u8], out: Vec<u8>, kind: gix::hash::Kind) -> Vec<u8> {
    use gix::bstr::ByteSlice as _;
    if out.len() == blob.len() || out.find(b"$Id: ").is_none() {
        return out;
    }
    let Ok(id) = super::blob_id(kind, blob) else {
        return out;
    };
    let gix_form = format!("$Id: {id}$");
    let git_form = format!("$Id: {id} $");
    out.replace(gix_form.as_bytes(), git_form.as_bytes())
}

/// Converts file contents between git's form and a checkout's, for one snapshot.
pub struct Converter<'r> {
    pipeline: gix::filter::Pipeline<'r>,
    index: gix::worktree::IndexPersistedOrInMemory,
    /// Attributes for [`Converter::check_encoding`], and its reused outcome.
    encodings: gix::worktree::Stack,
    encoding: gix::attrs::search::Outcome,
    buf: Vec<u8>,
}

impl Converter<'_> {
    /// Refuse a `working-tree-encoding` other than UTF-8. git re-encodes through iconv; gix
    /// through encoding_rs, which cannot write UTF-16 or UTF-32 at all (it writes UTF-8), does
    /// not know git's `-BOM` names, and maps some labels to other encodings (`ISO-8859-1` to
    /// windows-1252). A sandbox that differs from a checkout would give wrong verdicts, and
    /// gix ignores some of these silently, so checkdef stops instead.
    fn check_encoding(&mut self, path: &BStr) -> Result<()> {
        use gix::attrs::StateRef;
        let platform = self
            .encodings
            .at_entry(path, None, &self.pipeline.repo.objects)
            .map_err(|source| GitError::Io {
                path: native(path).to_path_buf(),
                source,
            })?;
        platform.matching_attributes(&mut self.encoding);
        let Some(m) = self.encoding.iter_selected().next() else {
            return Ok(());
        };
        let StateRef::Value(name) = m.assignment.state else {
            // Unspecified is nothing to do; set or unset is a validation error of gix's.
            return Ok(());
        };
        let name = name.as_bstr();
        if name.eq_ignore_ascii_case(b"UTF-8") || name.eq_ignore_ascii_case(b"UTF8") {
            return Ok(());
        }
        Err(GitError::UnsupportedEncoding {
            path: path.to_owned(),
            encoding: name.to_owned(),
        })
    }

    /// `blob` as a checkout of `path` holds it (smudged).
    pub fn to_worktree(&mut self, path: &BStr, blob: &[u8]) -> Result<Vec<u8>> {
        let err = |source| GitError::Checkout {
            path: path.to_owned(),
            source,
        };
        self.check_encoding(path)?;
        let kind = self.pipeline.repo.object_hash();
        let options = to_worktree::Options {
            can_delay: Delay::Forbid,
            ..Default::default()
        };
        let outcome = self
            .pipeline
            .convert_to_worktree(blob, path, options)
            .map_err(err)?;
        let out = match outcome {
            ToWorktreeOutcome::Unchanged(b) => b.to_vec(),
            ToWorktreeOutcome::Buffer(b) => b.to_vec(),
            ToWorktreeOutcome::Process(MaybeDelayed::Immediate(mut read)) => {
                let mut out = Vec::new();
                read.read_to_end(&mut out).map_err(|e| GitError::Io {
                    path: native(path).to_path_buf(),
                    source: e,
                })?;
                out
            }
            // Delays are forbidden above, so a filter process cannot answer later.
            ToWorktreeOutcome::Process(MaybeDelayed::Delayed(_)) => {
                return Err(GitError::Io {
                    path: native(path).to_path_buf(),
                    source: std::io::Error::other("the filter process delayed its answer"),
                });
            }
        };
        Ok(git_ident_spelling(blob, out, kind))
    }

    /// The work-tree file `data` (at `path`) as git would store it (cleaned).
    pub fn to_git(&mut self, path: &BStr, data: &[u8]) -> Result<Vec<u8>> {
        let err = |source| GitError::Checkout {
            path: path.to_owned(),
            source,
        };
        // gix can decode some of these, but not all (no `-BOM` names): one clear error.
        self.check_encoding(path)?;
        let outcome = self
            .pipeline
            .convert_to_git(data, native(path), &self.index)
            .map_err(err)?;
        self.buf.clear();
        Ok(match outcome {
            ToGitOutcome::Unchanged(b) => b.to_vec(),
            ToGitOutcome::Buffer(b) => b.to_vec(),
            ToGitOutcome::Process(mut read) => {
                read.read_to_end(&mut self.buf).map_err(|e| GitError::Io {
                    path: native(path).to_path_buf(),
                    source: e,
                })?;
                std::mem::take(&mut self.buf)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_system_file_is_what_git_var_reports_or_gits_default() {
        let ask = |answer, nosystem: Option<&str>| {
            interpret_git_var_attr_system(answer, nosystem.map(OsStr::new))
        };
        let reported = Some((Some(0), &b"/usr/local/etc/gitattributes\n"[..], &b""[..]));
        assert_eq!(
            ask(reported, None),
            Ok(Some("/usr/local/etc/gitattributes".into()))
        );
        // Exit 1: git has GIT_ATTR_NOSYSTEM true and reads none.
        assert_eq!(ask(Some((Some(1), b"", b"")), Some("1")), Ok(None));
        // Exit 128: git rejects the variable; checkout would fail too.
        assert!(ask(Some((Some(128), b"", b"fatal: bad boolean")), Some("x")).is_err());
        // No git, or a git without the variable (usage, exit 129): git's Unix default,
        // with GIT_ATTR_NOSYSTEM parsed as git parses a boolean (so "0", "" and "false" keep
        // the file, unlike gix which skips it whenever the variable is set).
        for answer in [None, Some((Some(129), &b""[..], &b"usage"[..]))] {
            let etc = Ok(Some(PathBuf::from("/etc/gitattributes")));
            assert_eq!(ask(answer, None), etc);
            for keep in ["0", "", "false", "No", "off"] {
                assert_eq!(ask(answer, Some(keep)), etc, "{keep:?}");
            }
            for skip in ["1", "true", "YES", "on", "2"] {
                assert_eq!(ask(answer, Some(skip)), Ok(None), "{skip:?}");
            }
            assert!(ask(answer, Some("maybe")).is_err());
        }
    }

    #[test]
    fn the_default_global_file_follows_xdg_then_home() {
        let d = |x: Option<&str>, h: Option<&str>| {
            default_global_attributes(x.map(OsStr::new), h.map(OsStr::new))
        };
        assert_eq!(d(Some("/x"), Some("/h")), Some("/x/git/attributes".into()));
        assert_eq!(
            d(Some(""), Some("/h")),
            Some("/h/.config/git/attributes".into())
        );
        assert_eq!(
            d(None, Some("/h")),
            Some("/h/.config/git/attributes".into())
        );
        assert_eq!(d(None, None), None);
    }
}
