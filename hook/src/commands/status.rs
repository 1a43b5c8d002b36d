//! `checkdef status`.
use std::path::Path;

use anyhow::Result;

use crate::exit::Code;

pub fn run(_config_flag: Option<&Path>) -> Result<Code> {
    Ok(Code::Success)
}
