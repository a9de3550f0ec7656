//! `fuser`: train C2C projectors for a model pair and evaluate them against the receiver alone,
//! the sharer alone and a random-prompt control (the runtime is the `fuser` library crate).
//!
//! ```text
//! cargo run --release -p fuser-cli -- train --out runs/fuser/c2c --steps 2000
//! cargo run --release -p fuser-cli -- train --out runs/fuser/control --sharer-input random-prompt
//! cargo run --release -p fuser-cli -- eval --fuser runs/fuser/c2c --control-fuser runs/fuser/control \
//!     --out runs/fuser/eval
//! ```

mod context_data;
mod context_eval;
mod context_task;
mod data;
mod eval_cmd;
mod gating;
mod pair;
mod shared_task;
mod train_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "fuser", about = "Train and evaluate C2C fusers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the projectors of a pair (both models frozen).
    Train(Box<train_cmd::TrainArgs>),
    /// Receiver-only, sharer-only, C2C and control on the evaluation sets.
    Eval(Box<eval_cmd::EvalArgs>),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train_cmd::run(*args),
        Command::Eval(args) => eval_cmd::run(*args),
    }
}
