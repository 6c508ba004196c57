//! Pure-Rust echo server, one thread: `echo-server --addr HOST:PORT | --unix PATH`.
//! Prints `READY <address>` once listening (port 0 picks a free port).

use std::io::Write;
use std::path::Path;

use echo_bench::args::Args;
use echo_bench::net::{Endpoint, Listener};
use echo_bench::server;
use echo_bench::tls;

const USAGE: &str = "usage: echo-server [--addr HOST:PORT (default 127.0.0.1:25000)] [--unix PATH]
                   [--tls-cert CHAIN.pem --tls-key KEY.pem]

With --tls-cert and --tls-key, every connection speaks TLS 1.3 (rustls, ring).";

fn main() {
    if let Err(message) = run() {
        eprintln!("echo-server: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = Args::parse(
        std::env::args().skip(1),
        &["addr", "unix", "tls-cert", "tls-key"],
        USAGE,
    )?;
    let endpoint = Endpoint::from_args(&args, Some("127.0.0.1:25000"))?;
    let tls = match (args.get("tls-cert"), args.get("tls-key")) {
        (Some(cert), Some(key)) => Some(tls::server_config(Path::new(cert), Path::new(key))?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let listener = Listener::bind(&endpoint).map_err(|e| format!("bind {endpoint}: {e}"))?;
    let bound = listener
        .local_endpoint(&endpoint)
        .map_err(|e| e.to_string())?;
    println!("READY {bound}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    server::serve_with(listener, tls).map_err(|e| e.to_string())
}
