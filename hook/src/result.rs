//! What checkdef stores for a segment: a Nix store path `checkdef-<segment>` whose NAR is a
//! directory holding
//!
//! * `result.json` — the [`ResultRecord`] (format version, status, timing, provenance);
//! * `manifest`    — the canonical input manifest whose sha256 is the input hash;
//! * `log`         — the captured stdout and stderr of the run.
//!
//! Nix signatures cover only the store path, NarHash, NarSize and references, so everything that
//! decides whether a result may be trusted as a PASS lives inside the NAR (status, input hash) or
//! determines the store path (the input hash). A reader re-checks both after verification.
use std::collections::BTreeMap;

use cache_proto::nar::NarNode;
use serde::{Deserialize, Serialize};

use crate::manifest::InputHash;

/// Bumped when the layout of a stored result changes incompatibly.
pub const RESULT_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultRecord {
    pub format: u32,
    pub segment: String,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub duration_s: f64,
    /// The commit the inputs were read from, or the work tree's HEAD (`null` for a work tree
    /// without commits).
    pub commit: Option<SourceCommit>,
    pub input_hash: InputHash,
    pub command: String,
    pub checkdef_version: String,
    pub host: String,
    /// Name of the key the result was signed with when it was pushed (`null` if unsigned).
    pub signer: Option<String>,
    /// Unix time (seconds) when the run finished.
    pub finished_at: u64,
}

/// Where a result's inputs came from: a commit, or the work tree on top of a commit (its HEAD).
/// Stored in `result.json` as the commit id, with `+worktree` appended for a work tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct SourceCommit {
    /// The commit id (hex).
    pub id: String,
    /// The inputs were the work tree's files, which may differ from the commit.
    pub worktree: bool,
}

const WORKTREE_SUFFIX: &str = "+worktree";

impl SourceCommit {
    pub fn commit(id: impl Into<String>) -> SourceCommit {
        SourceCommit {
            id: id.into(),
            worktree: false,
        }
    }

    pub fn worktree_on(head: impl Into<String>) -> SourceCommit {
        SourceCommit {
            id: head.into(),
            worktree: true,
        }
    }
}

impl From<String> for SourceCommit {
    fn from(text: String) -> SourceCommit {
        match text.strip_suffix(WORKTREE_SUFFIX) {
            Some(id) => SourceCommit::worktree_on(id),
            None => SourceCommit::commit(text),
        }
    }
}

impl From<SourceCommit> for String {
    fn from(c: SourceCommit) -> String {
        if c.worktree {
            format!("{}{WORKTREE_SUFFIX}", c.id)
        } else {
            c.id
        }
    }
}

/// A stored result, unpacked.
#[derive(Debug, Clone)]
pub struct StoredResult {
    pub record: ResultRecord,
    pub manifest: String,
    pub log: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("result NAR is not a directory")]
    NotADirectory,
    #[error("result NAR lacks the regular file `{0}`")]
    Missing(&'static str),
    #[error("result.json is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("result format {0} is not supported by this checkdef (expected {RESULT_FORMAT})")]
    Format(u32),
    #[error("result is for segment `{found}`, expected `{expected}`")]
    Segment { expected: String, found: String },
    #[error("result is for input hash {found}, expected {expected}")]
    InputHash {
        expected: InputHash,
        found: InputHash,
    },
    #[error("manifest in the result does not hash to its input hash")]
    ManifestHash,
    #[error("stored result is a failure (exit {0:?}); failures are never served as hits")]
    NotPassed(Option<i32>),
}

impl StoredResult {
    /// The NAR tree for this result.
    pub fn to_nar(&self) -> NarNode {
        let mut entries = BTreeMap::new();
        let json = serde_json::to_vec_pretty(&self.record).expect("serialising a result record");
        entries.insert(b"result.json".to_vec(), file(json));
        entries.insert(
            b"manifest".to_vec(),
            file(self.manifest.as_bytes().to_vec()),
        );
        entries.insert(b"log".to_vec(), file(self.log.clone()));
        NarNode::Directory(entries)
    }

    /// Unpack a fetched NAR tree (already verified against its narinfo) into a result.
    pub fn from_nar(node: NarNode) -> Result<StoredResult, ResultError> {
        let NarNode::Directory(mut entries) = node else {
            return Err(ResultError::NotADirectory);
        };
        let mut take = |name: &'static str| match entries.remove(name.as_bytes()) {
            Some(NarNode::Regular { contents, .. }) => Ok(contents),
            _ => Err(ResultError::Missing(name)),
        };
        let json = take("result.json")?;
        let manifest = take("manifest")?;
        let log = take("log")?;
        let record: ResultRecord = serde_json::from_slice(&json)?;
        let manifest = String::from_utf8(manifest).map_err(|_| ResultError::ManifestHash)?;
        Ok(StoredResult {
            record,
            manifest,
            log,
        })
    }

    /// The checks a reader applies before reporting a cached PASS: right format, right segment,
    /// right input hash (and the manifest really hashes to it), and a pass.
    pub fn validate_hit(&self, segment: &str, input_hash: &InputHash) -> Result<(), ResultError> {
        self.validate_record(segment, input_hash)?;
        if crate::manifest_hash(&self.manifest) != *input_hash {
            return Err(ResultError::ManifestHash);
        }
        Ok(())
    }

    /// The checks of [`validate_hit`](Self::validate_hit) that need only the record.
    pub fn validate_record(
        &self,
        segment: &str,
        input_hash: &InputHash,
    ) -> Result<(), ResultError> {
        let r = &self.record;
        if r.format != RESULT_FORMAT {
            return Err(ResultError::Format(r.format));
        }
        if r.segment != segment {
            return Err(ResultError::Segment {
                expected: segment.to_owned(),
                found: r.segment.clone(),
            });
        }
        if r.input_hash != *input_hash {
            return Err(ResultError::InputHash {
                expected: *input_hash,
                found: r.input_hash,
            });
        }
        if r.status != Status::Passed {
            return Err(ResultError::NotPassed(r.exit_code));
        }
        Ok(())
    }
}

fn file(contents: Vec<u8>) -> NarNode {
    NarNode::Regular {
        executable: false,
        contents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: Status) -> StoredResult {
        let manifest = "checkdef-manifest 1\nsegment foo\n".to_owned();
        StoredResult {
            record: ResultRecord {
                format: RESULT_FORMAT,
                segment: "foo".into(),
                status,
                exit_code: Some(if status == Status::Passed { 0 } else { 1 }),
                duration_s: 1.5,
                commit: Some(SourceCommit::commit("ab".repeat(20))),
                input_hash: crate::manifest_hash(&manifest),
                command: "true".into(),
                checkdef_version: "0.1.0".into(),
                host: "h".into(),
                signer: None,
                finished_at: 1,
            },
            manifest,
            log: b"ok\n".to_vec(),
        }
    }

    #[test]
    fn nar_round_trip_and_validation() {
        let r = sample(Status::Passed);
        let back = StoredResult::from_nar(r.to_nar()).unwrap();
        assert_eq!(back.record, r.record);
        assert_eq!(back.log, r.log);
        let h = r.record.input_hash;
        back.validate_hit("foo", &h).unwrap();
        assert!(matches!(
            back.validate_hit("bar", &h),
            Err(ResultError::Segment { .. })
        ));
        assert!(matches!(
            back.validate_hit("foo", &InputHash::placeholder()),
            Err(ResultError::InputHash { .. })
        ));
    }

    #[test]
    fn failures_and_forged_manifests_are_not_hits() {
        let f = sample(Status::Failed);
        let h = f.record.input_hash;
        assert!(matches!(
            f.validate_hit("foo", &h),
            Err(ResultError::NotPassed(Some(1)))
        ));
        let mut forged = sample(Status::Passed);
        forged.manifest.push_str("input 100644 x y\n");
        assert!(matches!(
            forged.validate_hit("foo", &h),
            Err(ResultError::ManifestHash)
        ));
    }

    #[test]
    fn missing_entries_are_errors() {
        let mut entries = BTreeMap::new();
        entries.insert(b"result.json".to_vec(), file(b"{}".to_vec()));
        assert!(matches!(
            StoredResult::from_nar(NarNode::Directory(entries)),
            Err(ResultError::Missing(_))
        ));
        assert!(matches!(
            StoredResult::from_nar(file(vec![])),
            Err(ResultError::NotADirectory)
        ));
    }

    #[test]
    fn the_input_hash_is_stored_as_hex_and_read_back_only_so() {
        let r = sample(Status::Passed);
        let json = serde_json::to_value(&r.record).unwrap();
        let hex = crate::manifest::input_hash(&r.manifest).to_string();
        assert_eq!(json["input_hash"], hex.as_str());
        assert_eq!(hex.len(), 64);
        for bad in [
            "",
            "00",
            &hex.to_uppercase(),
            &format!("{hex}0"),
            &hex.replace('a', "g"),
        ] {
            let mut j = json.clone();
            j["input_hash"] = bad.into();
            if bad != hex {
                assert!(
                    serde_json::from_value::<ResultRecord>(j).is_err(),
                    "{bad:?}"
                );
            }
        }
    }

    #[test]
    fn the_source_commit_keeps_its_stored_spelling() {
        let wt: SourceCommit = serde_json::from_str("\"abc+worktree\"").unwrap();
        assert_eq!(wt, SourceCommit::worktree_on("abc"));
        assert_eq!(serde_json::to_string(&wt).unwrap(), "\"abc+worktree\"");
        let c: SourceCommit = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(c, SourceCommit::commit("abc"));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"abc\"");
    }
}
