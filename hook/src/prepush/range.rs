//! Which commits a push asks checkdef to check, and what each is compared against.
//!
//! Deletions and `refs/notes/*` updates need no check. For every other ref update, the pushed
//! object is peeled (annotated tags to what they point at); a commit is checked, anything else
//! (a tag of a tree or blob) is skipped with a reason. The *base* of a checked commit is the commit the remote already has for that ref
//! when that object exists locally (peeled the same way), else the nearest commit the remote is
//! known to have: the best merge base of the pushed commit with all of `refs/remotes/<remote>/*`
//! (none exist when `remote` is a URL), else `refs/remotes/<remote>/HEAD` (unrelated histories),
//! else `None`, meaning everything is new. Each distinct commit is reported once with every
//! remote ref it goes to; if its updates disagree on the base, the merge base of those bases is
//! used (`None` if any is `None`), so the comparison covers every update.
use gix::ObjectId;
use gix::object::Kind;

use super::parse::RefUpdate;

/// One commit to check for a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCheck {
    /// The pushed commit (tags already peeled).
    pub commit: ObjectId,
    /// The commit the remote is known to have that the check compares against; `None` when
    /// nothing the remote has is known (everything is new).
    pub base: Option<ObjectId>,
    /// The remote refs this commit is pushed to, in input order.
    pub refs: Vec<String>,
}

/// A ref update that needs no check, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub remote_ref: String,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The remote ref is deleted.
    Delete,
    /// The pushed object (after peeling tags) is not a commit.
    NotACommit { oid: ObjectId, kind: Kind },
    /// The remote ref is under `refs/notes/`: its commits hold notes, not the project's files.
    Notes,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Delete => write!(f, "deleted, nothing to check"),
            SkipReason::NotACommit { oid, kind } => {
                write!(f, "points at {kind} {oid}, not a commit; nothing to check")
            }
            SkipReason::Notes => write!(f, "git notes, not project files; nothing to check"),
        }
    }
}

/// Everything [`plan_push`] found: the commits to check and the updates that need none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushPlan {
    pub checks: Vec<PushCheck>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    #[error("{remote_ref}: object id {oid} is {got:?} but the repository uses {expected:?}")]
    HashKind {
        remote_ref: String,
        oid: ObjectId,
        got: gix::hash::Kind,
        expected: gix::hash::Kind,
    },
    #[error("{remote_ref}: the pushed object {oid} is not in the local repository")]
    MissingObject { remote_ref: String, oid: ObjectId },
    #[error("{remote_ref}: cannot read object {oid}")]
    Object {
        remote_ref: String,
        oid: ObjectId,
        #[source]
        source: gix::Error,
    },
    #[error("cannot read the tracking refs of remote {remote}")]
    TrackingRefs {
        /// A remote name or the URL as typed (credentials hidden).
        remote: cache_proto::RedactedUrl,
        #[source]
        source: gix::Error,
    },
    #[error("cannot find the merge base of {commit} and the commits of remote {remote}")]
    MergeBase {
        commit: ObjectId,
        remote: cache_proto::RedactedUrl,
        #[source]
        source: gix::Error,
    },
}

/// The distinct commits to check for a push to `remote` (the hook's `$1`: a remote name or a
/// URL), each with its base. See the module documentation for the rules.
pub fn commits_to_check(
    repo: &gix::Repository,
    remote: &str,
    updates: &[RefUpdate],
) -> Result<Vec<PushCheck>, RangeError> {
    Ok(plan_push(repo, remote, updates)?.checks)
}

/// [`commits_to_check`], also reporting the updates that need no check.
pub fn plan_push(
    repo: &gix::Repository,
    remote: &str,
    updates: &[RefUpdate],
) -> Result<PushPlan, RangeError> {
    let expected = repo.object_hash();
    let mut plan = PushPlan::default();
    // Computed on first use: only needed when a remote oid is unknown.
    let mut tracking: Option<Vec<ObjectId>> = None;
    for update in updates {
        if update.is_delete() {
            plan.skipped.push(Skipped {
                remote_ref: update.remote_ref.clone(),
                reason: SkipReason::Delete,
            });
            continue;
        }
        if update.remote_ref.starts_with("refs/notes/") {
            plan.skipped.push(Skipped {
                remote_ref: update.remote_ref.clone(),
                reason: SkipReason::Notes,
            });
            continue;
        }
        for oid in [update.local_oid, update.remote_oid] {
            if oid.kind() != expected {
                return Err(RangeError::HashKind {
                    remote_ref: update.remote_ref.clone(),
                    oid,
                    got: oid.kind(),
                    expected,
                });
            }
        }
        let commit = match peel(repo, update.local_oid, &update.remote_ref)? {
            Peeled::Commit(c) => c,
            Peeled::Missing => {
                return Err(RangeError::MissingObject {
                    remote_ref: update.remote_ref.clone(),
                    oid: update.local_oid,
                });
            }
            Peeled::Other(oid, kind) => {
                plan.skipped.push(Skipped {
                    remote_ref: update.remote_ref.clone(),
                    reason: SkipReason::NotACommit { oid, kind },
                });
                continue;
            }
        };
        let known_remote = if update.remote_oid.is_null() {
            None
        } else {
            match peel(repo, update.remote_oid, &update.remote_ref)? {
                Peeled::Commit(c) => Some(c),
                Peeled::Missing | Peeled::Other(..) => None,
            }
        };
        let base = match known_remote {
            Some(base) => Some(base),
            None => {
                let tips = match &tracking {
                    Some(t) => t,
                    None => tracking.insert(tracking_tips(repo, remote)?),
                };
                nearest_known(repo, remote, commit, tips)?
            }
        };
        match plan.checks.iter_mut().find(|c| c.commit == commit) {
            Some(existing) => {
                existing.refs.push(update.remote_ref.clone());
                if existing.base != base {
                    existing.base = match (existing.base, base) {
                        (Some(a), Some(b)) => merge_base(repo, remote, a, b)?,
                        _ => None,
                    };
                }
            }
            None => plan.checks.push(PushCheck {
                commit,
                base,
                refs: vec![update.remote_ref.clone()],
            }),
        }
    }
    Ok(plan)
}

enum Peeled {
    Commit(ObjectId),
    Other(ObjectId, Kind),
    Missing,
}

/// Follow annotated tags from `oid` to the first object that is not a tag.
fn peel(repo: &gix::Repository, oid: ObjectId, remote_ref: &str) -> Result<Peeled, RangeError> {
    let err = |source| RangeError::Object {
        remote_ref: remote_ref.to_owned(),
        oid,
        source,
    };
    let Some(object) = repo.try_find_object(oid).map_err(err)? else {
        return Ok(Peeled::Missing);
    };
    let object = object.peel_tags_to_end().map_err(err)?;
    Ok(match object.kind {
        Kind::Commit => Peeled::Commit(object.id),
        kind => Peeled::Other(object.id, kind),
    })
}

/// Whether `remote` can be a remote name (git passes the URL instead when there is none).
fn is_remote_name(remote: &str) -> bool {
    !remote.is_empty()
        && !remote.contains(':')
        && !remote.contains('\\')
        && !remote.starts_with('/')
        && !remote.starts_with('.')
}

/// The commits `refs/remotes/<remote>/*` point to (symbolic refs followed, tags peeled,
/// non-commits dropped), deduplicated, sorted.
pub fn tracking_tips(repo: &gix::Repository, remote: &str) -> Result<Vec<ObjectId>, RangeError> {
    if !is_remote_name(remote) {
        return Ok(Vec::new());
    }
    let err = |source| RangeError::TrackingRefs {
        remote: remote.into(),
        source,
    };
    let prefix = format!("refs/remotes/{remote}/");
    let platform = repo.references().map_err(err)?;
    let Ok(iter) = platform.prefixed(prefix.as_str()) else {
        // Not a valid ref prefix: no such tracking refs can exist.
        return Ok(Vec::new());
    };
    let mut tips = Vec::new();
    for reference in iter {
        let mut reference = reference.map_err(err)?;
        // A broken (dangling) tracking ref tells nothing about the remote; skip it.
        let Ok(id) = reference.peel_to_id() else {
            continue;
        };
        if let Peeled::Commit(c) = peel(repo, id.detach(), &prefix)? {
            tips.push(c);
        }
    }
    tips.sort();
    tips.dedup();
    Ok(tips)
}

/// The best merge base of `commit` with the union of `tips`; else the remote's default branch;
/// else `None`.
fn nearest_known(
    repo: &gix::Repository,
    remote: &str,
    commit: ObjectId,
    tips: &[ObjectId],
) -> Result<Option<ObjectId>, RangeError> {
    if tips.is_empty() {
        return Ok(None);
    }
    let bases = repo
        .merge_bases_many(commit, tips)
        .map_err(|source| RangeError::MergeBase {
            commit,
            remote: remote.into(),
            source,
        })?;
    if let Some(best) = bases.first() {
        return Ok(Some(best.detach()));
    }
    default_branch(repo, remote)
}

/// `refs/remotes/<remote>/HEAD`, peeled to a commit.
fn default_branch(repo: &gix::Repository, remote: &str) -> Result<Option<ObjectId>, RangeError> {
    let name = format!("refs/remotes/{remote}/HEAD");
    let Ok(Some(mut reference)) = repo.try_find_reference(name.as_str()) else {
        return Ok(None);
    };
    let Ok(id) = reference.peel_to_id() else {
        return Ok(None);
    };
    Ok(match peel(repo, id.detach(), &name)? {
        Peeled::Commit(c) => Some(c),
        _ => None,
    })
}

fn merge_base(
    repo: &gix::Repository,
    remote: &str,
    a: ObjectId,
    b: ObjectId,
) -> Result<Option<ObjectId>, RangeError> {
    repo.merge_base(a, b)
        .map(|id| id.map(gix::Id::detach))
        .map_err(|source| RangeError::MergeBase {
            commit: a,
            remote: remote.into(),
            source,
        })
}
