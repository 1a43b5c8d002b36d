//! One module per subcommand.
pub mod install;
pub mod uninstall;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::exit::Code;

pub mod explain;
pub mod plan;

pub fn dispatch(cli: Cli) -> Result<Code> {
    if let Some(dir) = &cli.directory {
        std::env::set_current_dir(dir)
            .map_err(|e| crate::exit::usage(format!("cannot enter {}: {e}", dir.display())))?;
    }
    match cli.command {
        Command::Install(args) => install::run(&args),
        Command::Uninstall(args) => uninstall::run(args.force),
        Command::Plan(args) => plan::run(cli.config.as_deref(), &args),
        Command::Explain(args) => explain::run(cli.config.as_deref(), &args),
        Command::Run(_)
        | Command::Keygen(_)
        | Command::Hook(_) => Err(crate::exit::usage("this command is being built")),
    }
}
