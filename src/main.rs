//! `port-agent` command line: run the agent, or check, render and dry-run
//! mappings offline. See `port-agent --help` and [`port_agent::cli`].

// No unwrap or expect outside tests (see src/lib.rs).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use clap::Parser;

use port_agent::cli::{self, Cli, Exit};
use port_agent::mapping::jq::EVAL_THREAD_STACK;
use port_agent::shutdown;

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
            return Exit::Problems.into();
        }
    };
    // Run on a worker thread: jq evaluation relies on its larger stack.
    let ended = runtime.block_on(async {
        tokio::select! {
            ended = tokio::spawn(cli::dispatch(cli)) => Some(ended),
            () = shutdown::interrupted() => None,
        }
    });
    match ended {
        // Stopped by hand: at once, without waiting for the runtime's tasks
        // (the last words were said, or ran out of time).
        None => std::process::exit(i32::from(Exit::Interrupted.code())),
        Some(Ok(Ok(exit))) => exit.into(),
        Some(Ok(Err(e))) => {
            eprintln!("error: {e}");
            e.exit().into()
        }
        Some(Err(e)) => {
            eprintln!("error: the command stopped unexpectedly: {e}");
            Exit::Problems.into()
        }
    }
}
