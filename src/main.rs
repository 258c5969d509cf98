use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spillway::config::Settings;

/// A storage node for datasets far bigger than RAM, over plain HTTP.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
    }
}

fn serve() -> ExitCode {
    rocket::execute(async {
        let rocket = match spillway::build(Settings::figment()) {
            Ok(rocket) => rocket,
            Err(message) => {
                eprintln!("spillway: cannot start: {message}");
                return ExitCode::FAILURE;
            }
        };
        match rocket.launch().await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spillway: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
