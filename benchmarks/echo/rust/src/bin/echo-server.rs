//! Pure-Rust echo server, one thread: `echo-server --addr HOST:PORT | --unix PATH`.
//! Prints `READY <address>` once listening (port 0 picks a free port).

use std::io::Write;

use echo_bench::args::Args;
use echo_bench::net::{Endpoint, Listener};
use echo_bench::server;

const USAGE: &str = "usage: echo-server [--addr HOST:PORT (default 127.0.0.1:25000)] [--unix PATH]";

fn main() {
    if let Err(message) = run() {
        eprintln!("echo-server: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse(std::env::args().skip(1), &["addr", "unix"], USAGE)?;
    let endpoint = Endpoint::from_args(&args, Some("127.0.0.1:25000"))?;
    let listener = Listener::bind(&endpoint).map_err(|e| format!("bind {endpoint}: {e}"))?;
    let bound = listener
        .local_endpoint(&endpoint)
        .map_err(|e| e.to_string())?;
    println!("READY {bound}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    server::serve(listener).map_err(|e| e.to_string())
}
