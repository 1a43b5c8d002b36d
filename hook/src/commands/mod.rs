//! One module per subcommand.
pub mod install;
pub mod uninstall;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::exit::Code;

pub mod cache;
pub mod completions;
pub mod explain;
pub mod hook;
pub mod init;
pub mod keygen;
pub mod plan;
pub mod run;
pub mod status;

pub fn dispatch(cli: Cli) -> Result<Code> {
    if let Some(dir) = &cli.directory {
        std::env::set_current_dir(dir)
            .map_err(|e| crate::exit::usage(format!("cannot enter {}: {e}", dir.display())))?;
    }
    match cli.command {
        Command::Install(args) => install::run(&args),
        Command::Uninstall(args) => uninstall::run(args.force, args.global),
        Command::Plan(args) => plan::run(cli.config.as_deref(), &args),
        Command::Explain(args) => explain::run(cli.config.as_deref(), &args),
        Command::Run(args) => run::run(cli.config.as_deref(), &args),
        Command::Keygen(args) => keygen::run(&args),
        Command::Cache(cmd) => cache::run(cli.config.as_deref(), &cmd),
        Command::Hook(crate::cli::HookCommand::PrePush { remote, url }) => {
            hook::pre_push(cli.config.as_deref(), &remote, &url)
        }
        Command::Init(args) => init::run(cli.config.as_deref(), &args),
        Command::Status => status::run(cli.config.as_deref()),
        Command::Completions(args) => completions::completions(args.shell),
        Command::Man => completions::man(),
    }
}
