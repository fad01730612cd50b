//! `port-agent` command line: run the agent, or check, render and dry-run
//! mappings offline. See `port-agent --help` and [`port_agent::cli`].

// No unwrap or expect outside tests (see src/lib.rs).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use clap::Parser;

use port_agent::cli::{self, Cli};
use port_agent::mapping::jq::EVAL_THREAD_STACK;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(EVAL_THREAD_STACK)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Run on a worker thread: jq evaluation relies on its larger stack.
    match runtime.block_on(async { tokio::spawn(cli::dispatch(cli)).await }) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            eprintln!("error: the command stopped unexpectedly: {e}");
            ExitCode::FAILURE
        }
    }
}
