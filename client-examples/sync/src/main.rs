//! `filesync-sync`: parses the command line, runs the command, exits with its code.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use filesync_sync::failure::Failure;
use filesync_sync::folder::{SpaceChoice, TokenSource};
use filesync_sync::pass::MaxDelete;

/// Keeps a local folder and a Filesync space in sync.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Makes DIR a synced folder of a space (DIR may already hold files).
    Init {
        dir: PathBuf,
        /// The server, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// The space's id.
        #[arg(
            long,
            required_unless_present = "new_space",
            conflicts_with = "new_space"
        )]
        space: Option<String>,
        /// Creates a space of this name (you own it) instead of joining one.
        #[arg(long)]
        new_space: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// One pass both ways, then exits.
    Sync {
        dir: PathBuf,
        #[command(flatten)]
        pass: PassArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Stays running, syncing as either side changes.
    Watch {
        dir: PathBuf,
        #[command(flatten)]
        pass: PassArgs,
        /// How often the whole folder is rescanned (watchers miss events).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        rescan: Duration,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// What is synced, what is waiting, what went wrong.
    Status {
        dir: PathBuf,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// The conflict copies made here that still exist.
    Conflicts { dir: PathBuf },
}

#[derive(Args, Clone)]
struct TokenArgs {
    /// A bearer token (`filesync token --user ID` prints one).
    #[arg(long, env = "FILESYNC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl From<TokenArgs> for TokenSource {
    fn from(a: TokenArgs) -> Self {
        TokenSource {
            token: a.token,
            token_file: a.token_file,
        }
    }
}

#[derive(Args, Clone)]
struct PassArgs {
    /// Prints the plan and changes nothing.
    #[arg(long)]
    dry_run: bool,
    /// The most a pass may delete, on either side: a percentage of the synced files
    /// (50%) or a count (20). Passes deleting 3 files or fewer always go ahead.
    #[arg(long, default_value = "50%", value_parser = MaxDelete::parse)]
    max_delete: MaxDelete,
    /// Transfers at a time (small files go faster with many: each is mostly waiting).
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Prints only problems.
    #[arg(long, short)]
    quiet: bool,
    /// How long a file must go unmodified before it is uploaded (a file still being
    /// written is never published half-written).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    settle: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    // An error's backtrace is of no use to a user, and costly to capture.
    // SAFETY: set before any other thread reads the environment.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            dir,
            server,
            space,
            new_space,
            token,
        } => {
            let space = match (space, new_space) {
                (Some(id), _) => SpaceChoice::Existing(id),
                (None, Some(name)) => SpaceChoice::New(name),
                (None, None) => unreachable!("clap requires one"),
            };
            commands::init(&dir, &server, &space, &token.into()).await
        }
        Command::Sync { dir, pass, token } => {
            commands::sync(&dir, pass.options(), pass.quiet, &token.into()).await
        }
        Command::Watch {
            dir,
            pass,
            rescan,
            token,
        } => commands::watch(&dir, pass.options(), pass.quiet, rescan, &token.into()).await,
        Command::Status { dir, token } => commands::status(&dir, &token.into()).await,
        Command::Conflicts { dir } => commands::conflicts(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("filesync-sync: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

impl PassArgs {
    fn options(&self) -> filesync_sync::pass::Options {
        filesync_sync::pass::Options {
            dry_run: self.dry_run,
            max_delete: self.max_delete,
            parallel: self.parallel.max(1),
            settle: self.settle,
        }
    }
}

/// `Failure` for results of the commands module.
pub type Result<T = ()> = std::result::Result<T, Failure>;
