//! The pre-push hook's pure parts: parsing git's stdin ([`parse_stdin`]) and deciding which
//! commits to check against which base ([`commits_to_check`]). The `checkdef hook pre-push`
//! command runs the checks; `docs/hook.md` describes the behaviour for users.
mod parse;
mod range;

pub use parse::{DELETE_REF, ParseError, Problem, RefUpdate, UpdateKind, parse_stdin};
pub use range::{
    PushCheck, PushPlan, RangeError, SkipReason, Skipped, commits_to_check, plan_push,
    tracking_tips,
};

#[cfg(test)]
mod tests;
