//! What a checkout holds: git converts a blob on its way to the work tree (and a file on its way
//! back) as `.gitattributes` and the configuration say — `text`/`eol` and `core.autocrlf`,
//! `ident`, `working-tree-encoding`, and filter drivers (`filter.<name>.smudge`/`clean`/
//! `process`, which is how Git LFS plugs in). checkdef materialises inputs the same way, through
//! gix's filter pipeline (already built in for the directory walk: no extra crate), and puts
//! everything that decides the conversion into the input hash ([`Repo::checkout_rules`]).
//!
//! The common case costs nothing: without any attributes file and without `core.autocrlf`,
//! no file can be converted, no pipeline is built, and the manifest is unchanged.
use std::io::Read as _;
use std::path::Path;

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

impl Repo {
    /// Whether a checkout can convert anything: an attributes file in the snapshot
    /// (`has_attributes_files`), `$GIT_DIR/info/attributes`, `core.attributesFile`, or
    /// `core.autocrlf` set to `true` or `input` (which converts text files without attributes).
    pub fn may_convert(&self, has_attributes_files: bool) -> bool {
        if has_attributes_files {
            return true;
        }
        let config = self.repo.config_snapshot();
        if config
            .string("core.autocrlf")
            .is_some_and(|v| !v.eq_ignore_ascii_case(b"false"))
        {
            return true;
        }
        if config.string("core.attributesFile").is_some() {
            return true;
        }
        self.info_attributes().is_file()
    }

    fn info_attributes(&self) -> std::path::PathBuf {
        self.repo.common_dir().join("info").join("attributes")
    }

    /// Everything that decides how this snapshot's files are converted at checkout, as text
    /// (one item per line) for the manifest; `None` when [`may_convert`](Self::may_convert) is
    /// false. `attributes_files` are the snapshot's `.gitattributes` files.
    pub fn checkout_rules(&self, attributes_files: &[Input]) -> Option<String> {
        if !self.may_convert(!attributes_files.is_empty()) {
            return None;
        }
        use std::fmt::Write as _;
        let mut out = String::from("checkout-rules 1\n");
        let mut files: Vec<&Input> = attributes_files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for f in files {
            let _ = writeln!(out, "attributes {} {} {}", f.mode, f.id, f.path);
        }
        let kind = self.object_hash();
        let content_id = |p: &Path| {
            std::fs::read(p)
                .ok()
                .and_then(|d| super::blob_id(kind, &d).ok())
        };
        if let Some(id) = content_id(&self.info_attributes()) {
            let _ = writeln!(out, "info-attributes {id}");
        }
        let config = self.repo.config_snapshot();
        if let Some(p) = config.trusted_path("core.attributesFile").ok().flatten() {
            let _ = writeln!(
                out,
                "core.attributesFile {} {:?}",
                p.display(),
                content_id(&p)
            );
        }
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
        Some(out)
    }

    /// A converter for `target`: attributes from the commit's own tree (plus `info/attributes`
    /// and `core.attributesFile`, as git uses them), or from the work tree and index.
    pub fn converter(&self, target: &Target) -> Result<Converter<'_>> {
        let err = |source| GitError::Checkout {
            path: "(attributes)".into(),
            source,
        };
        let (pipeline, index) = match target {
            Target::Commit(commit) => {
                let tree = self.tree_of(*commit)?;
                let index = self.repo.index_from_tree(&tree).map_err(err)?;
                let attrs = self
                    .repo
                    .attributes_only(
                        &index,
                        gix::worktree::stack::state::attributes::Source::IdMapping,
                    )
                    .map_err(err)?;
                let pipeline =
                    gix::filter::Pipeline::new(&self.repo, attrs.detach()).map_err(err)?;
                (pipeline, index.into())
            }
            Target::WorkTree => self.repo.filter_pipeline(None).map_err(err)?,
        };
        Ok(Converter {
            pipeline,
            index,
            buf: Vec::new(),
        })
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
    buf: Vec<u8>,
}

impl Converter<'_> {
    /// `blob` as a checkout of `path` holds it (smudged).
    pub fn to_worktree(&mut self, path: &BStr, blob: &[u8]) -> Result<Vec<u8>> {
        let err = |source| GitError::Checkout {
            path: path.to_owned(),
            source,
        };
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
