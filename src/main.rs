//! The `filesync` command: parse the command line, set up logging, load settings, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use filesync::auth::{self, Authenticator};
use filesync::config::Settings;
use filesync::domain::UserId;
use filesync::startup::{App, shutdown_signal};

#[derive(Parser)]
#[command(
    name = "filesync",
    version,
    about = "A self-hostable GraphQL server for file sync"
)]
struct Cli {
    /// What to do; `serve` when omitted, so `cargo run` starts a server.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded backend in ./filesync-data on 127.0.0.1:8080 by default).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory of the embedded backend.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve the built browser app from this folder at /app/ (server.web_app).
        #[arg(long)]
        web_app: Option<PathBuf>,
        /// Development only: anyone may sign in as anyone at /auth/dev-sign-in
        /// (auth.dev_sign_in; embedded backend on a loopback address only).
        #[arg(long)]
        dev_sign_in: bool,
    },
    /// Print a bearer token for a user, signed with the server's key.
    Token {
        /// The user id (the token's subject).
        #[arg(long)]
        user: String,
        /// How long the token is valid, e.g. 1h, 30d (default: auth.token_ttl, 24h).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the GraphQL schema (SDL).
    PrintSchema,
}

// glibc's allocator showed up as a large share of request CPU; mimalloc is leaner.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Freed memory goes back to the OS after 10 ms by default, so every large response
    // faulted in (and the kernel zeroed) fresh pages; keep it for a second instead.
    // SAFETY: sets a process-wide allocator option before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    // Operators often run with RUST_BACKTRACE=1 for panics; errors (anyhow's) would then
    // each capture a backtrace, and resolving the first costs hundreds of megabytes.
    // Panics keep theirs; RUST_LIB_BACKTRACE=1 turns errors' back on.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve {
        config: None,
        listen: None,
        data_dir: None,
        web_app: None,
        dev_sign_in: false,
    });
    let result = match command {
        Command::Serve {
            config,
            listen,
            data_dir,
            web_app,
            dev_sign_in,
        } => serve(config, listen, data_dir, web_app, dev_sign_in),
        Command::Token {
            user,
            ttl,
            config,
            data_dir,
        } => token(&user, ttl, config, data_dir),
        Command::PrintSchema => {
            print!("{}", filesync::graphql::sdl());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(config.as_deref())?;
    if let Some(listen) = listen {
        settings.server.listen = listen;
    }
    if let Some(dir) = data_dir {
        settings.storage.data_dir = dir;
    }
    Ok(settings)
}

fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    web_app: Option<PathBuf>,
    dev_sign_in: bool,
) -> anyhow::Result<()> {
    let mut settings = settings(config, listen, data_dir)?;
    if web_app.is_some() {
        settings.server.web_app = web_app;
    }
    settings.auth.dev_sign_in |= dev_sign_in;
    filesync::telemetry::init(&settings.log);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let app = App::build(settings).await?;
        tracing::info!(address = %app.local_addr(), "filesync listening");
        // Scripts (and the benchmark) read the bound address from this line.
        println!("listening on http://{}", app.local_addr());
        app.run_until_stopped(shutdown_signal()).await
    })
}

fn token(
    user: &str,
    ttl: Option<Duration>,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = settings(config, None, data_dir)?;
    let user = UserId::parse(user)?;
    let secret = auth::server_secret(&settings)?;
    let auth = Authenticator::new(&secret, settings.auth.leeway)
        .with_max_lifetime(settings.auth.max_token_lifetime);
    println!(
        "{}",
        auth.issue(&user, ttl.unwrap_or(settings.auth.token_ttl))?
    );
    Ok(())
}
