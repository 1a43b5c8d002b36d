//! One module per subcommand.
use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::exit::Code;

pub fn dispatch(cli: Cli) -> Result<Code> {
    if let Some(dir) = &cli.directory {
        std::env::set_current_dir(dir)
            .map_err(|e| crate::exit::usage(format!("cannot enter {}: {e}", dir.display())))?;
    }
    match cli.command {
        Command::Plan(_)
        | Command::Explain(_)
        | Command::Run(_)
        | Command::Keygen(_)
        | Command::Install(_)
        | Command::Uninstall
        | Command::Hook(_) => Err(crate::exit::usage("this command is being built")),
    }
}
