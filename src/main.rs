use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spillway::config::Settings;

/// A storage node for datasets far bigger than RAM, over plain HTTP.
///
/// The node (serve, fsck, reindex, scrub) reads Rocket.toml and SPILLWAY_*
/// environment variables (see the README). The client subcommands find the
/// node by, in order: --url, SPILLWAY_URL, the profile (--profile,
/// SPILLWAY_PROFILE, else `default`) of the client config file
/// (SPILLWAY_CONFIG, else ~/.config/spillway/config.toml), the node
/// settings of the working directory (Rocket.toml, SPILLWAY_ADDRESS,
/// SPILLWAY_PORT), then http://127.0.0.1:8000; the token is --token, else
/// SPILLWAY_TOKEN, else the profile's `token`.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Check the index against the files and the spool; exits 1 on findings.
    /// Never runs beside a node on the same data directory.
    Fsck {
        /// Fix what is safe: drop rows without files, index complete files
        /// without rows, make rows follow their files, delete stray spool files.
        #[arg(long)]
        repair: bool,
    },
    /// Rebuild the index from the data directory, hashing every file.
    Reindex,
    /// Re-read and hash every stored blob; exits 1 when any is damaged,
    /// naming the keys and versions it backs. Never runs beside a node on
    /// the same data directory (a running node scrubs with `scrub_every`).
    Scrub,
    /// The client side: upload, get, ls, rm, url, versions, restore (talk
    /// HTTP to a node).
    #[command(flatten)]
    Client(spillway::client::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // Our logger, installed before Rocket's (which then stays out): one
    // filter for everything, `SPILLWAY_LOG` (env_logger syntax). The node
    // writes its lines in batches (see `logging`), the tools at once.
    if matches!(command, Command::Serve) {
        spillway::logging::init_batched(DEFAULT_LOG);
    } else {
        spillway::logging::init_direct(DEFAULT_LOG);
    }
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let command = match command {
        Command::Serve => {
            let code = serve();
            spillway::logging::flush();
            return code;
        }
        Command::Client(command) => return spillway::client::run(command),
        other => other,
    };
    let settings = match Settings::from_figment(&Settings::figment()) {
        Ok(settings) => settings,
        Err(message) => return fail(&message),
    };
    let result = match command {
        Command::Fsck { repair } => spillway::fsck::fsck(&settings, repair).map(|report| {
            for finding in &report.findings {
                println!("{finding}");
            }
            let left = report.findings.len() - report.repaired;
            println!(
                "checked {} datasets: {} finding(s), {} repaired",
                report.checked,
                report.findings.len(),
                report.repaired
            );
            if left == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        Command::Reindex => spillway::fsck::reindex(&settings).map(|report| {
            for finding in &report.findings {
                println!("skipped {finding}");
            }
            println!("indexed {} datasets", report.checked);
            ExitCode::SUCCESS
        }),
        Command::Scrub => scrub(settings),
        Command::Serve | Command::Client(_) => unreachable!(),
    };
    result.unwrap_or_else(|e| fail(&e.cause()))
}

/// Our own lines at `info`; Rocket and hyper only when something is wrong
/// (the access log line replaces Rocket's per-request chatter).
///
/// `rocket::server` is off: it logs whole request URIs (query strings with
/// signed-URL signatures included) for unmatched routes; the access line
/// covers every request without the query, and panics still reach stderr.
const DEFAULT_LOG: &str = "info,rocket=error,rocket::server=off,_=error,hyper=warn";

fn scrub(settings: spillway::config::Settings) -> spillway::error::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(spillway::error::Error::internal)?;
    runtime.block_on(async {
        let node = spillway::service::Node::open(settings).await?;
        let report = node.scrub(None).await?;
        for damaged in &report.damaged {
            println!("damaged: blake3 {} ({} bytes)", damaged.blob.blake3, damaged.blob.size);
            for (key, version) in &damaged.referrers {
                println!("  `{key}` version {version}");
            }
        }
        println!("scrubbed {} blob(s), {} bytes: {} damaged", report.checked, report.bytes, report.damaged.len());
        Ok(if report.damaged.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

fn fail(message: &str) -> ExitCode {
    spillway::logging::flush();
    eprintln!("spillway: {message}");
    ExitCode::from(2)
}

fn serve() -> ExitCode {
    rocket::execute(async {
        let rocket = match spillway::build(Settings::figment()) {
            Ok(rocket) => rocket,
            Err(message) => return fail(&format!("cannot start: {message}")),
        };
        let figment = rocket.figment();
        let address = figment.extract_inner::<std::net::IpAddr>("address").map_or("?".into(), |a| a.to_string());
        let port = figment.extract_inner::<u16>("port").map_or("?".into(), |p| p.to_string());
        match rocket.launch().await {
            Ok(_) => ExitCode::SUCCESS,
            // Rocket says "binding failed": name the address and the settings
            // that choose it instead.
            Err(e) => match e.kind() {
                rocket::error::ErrorKind::Bind(io) if io.kind() == std::io::ErrorKind::AddrInUse => fail(&format!(
                    "cannot listen on {address} port {port}: the port is in use; choose another with `port` in \
                     Rocket.toml or SPILLWAY_PORT (0: any free port)"
                )),
                rocket::error::ErrorKind::Bind(io) => fail(&format!(
                    "cannot listen on {address} port {port} ({io}); see `address` and `port` in Rocket.toml, or \
                     SPILLWAY_ADDRESS and SPILLWAY_PORT"
                )),
                _ => fail(&e.to_string()),
            },
        }
    })
}
