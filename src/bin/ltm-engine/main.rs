//! The command line: parses arguments, calls the library, prints. Errors become
//! messages here and nowhere else.

mod bench;
pub mod hashhop;
mod info;
mod interrupt;
mod kernel;
mod run;
mod run_lm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ltm-engine",
    version,
    about = "Stream very long contexts through a fixed-size memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream a context file through the memory (the main job).
    Run(run::Args),
    /// One forward of the gated delta rule over tensors in a safetensors file.
    Kernel(kernel::Args),
    /// HashHop: generate problems, evaluate the built-in memory model on them.
    Hashhop(hashhop::Args),
    /// Version, build features, kernels and devices, and what `--device auto` picks.
    Info(info::Args),
    /// The memory against a causal-attention baseline over context lengths: time,
    /// decode cost, bytes kept, fitted scaling, extrapolation.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    stop_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Kernel(args) => kernel::run(args),
        Command::Info(args) => info::run(args),
        Command::Hashhop(args) => hashhop::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", bounded(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Messages quote what they name cut short already (`limits::cut`); this is the net
/// under every one of them, so no input can make a message of megabytes.
fn bounded(message: &str) -> String {
    const MAX_CHARS: usize = 2000;
    match message.char_indices().nth(MAX_CHARS) {
        None => message.to_string(),
        Some((at, _)) => format!(
            "{}… (message cut: {} bytes in all)",
            &message[..at],
            message.len()
        ),
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`ltm-engine run … | head`)
/// panics. The default action ends the process silently, as for any Unix filter; all
/// output to stdout comes after the work is done and saved, so nothing is lost.
fn stop_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
