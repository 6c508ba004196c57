//! HTTP/1.1 keep-alive load generator; prints one JSON line of results, in
//! echo-client's format. See `--help`.

use std::time::Duration;

use echo_bench::args::Args;
use echo_bench::net::Endpoint;

// The client's logic, kept out of the library's module list (src/lib.rs).
#[path = "../http.rs"]
mod http;

const USAGE: &str = "\
usage: http-client (--addr HOST:PORT | --unix PATH) [--path PATH (/)]
                   [--concurrency N (1)] [--duration SECONDS (5)] [--warmup SECONDS (1)]

Keeps N keep-alive connections, each in a closed loop of GET requests without
pipelining (send a request, read the whole response, send the next), counts the
requests whose responses end within DURATION after WARMUP, and prints JSON as
echo-client does: requests, seconds, rps, mbps (MiB/s of response bodies),
p50_us/p90_us/p99_us/max_us latency, size (the body's bytes), concurrency and
client_cpu (this single-threaded client's CPU seconds per wall second; near 1.0
means the client, not the server, was the bottleneck). Every response must be a
200 with a Content-Length body, the same body as the first response's, on a
connection kept open; anything else fails the run.";

fn main() {
    if let Err(message) = run() {
        eprintln!("http-client: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let known = ["addr", "unix", "path", "concurrency", "duration", "warmup"];
    let args = Args::parse(std::env::args().skip(1), &known, USAGE)?;
    let config = http::Config {
        endpoint: Endpoint::from_args(&args, None)?,
        path: args.get("path").unwrap_or("/").to_string(),
        concurrency: args.parsed("concurrency", 1usize)?.max(1),
        duration: seconds(args.parsed("duration", 5.0)?)?,
        warmup: seconds(args.parsed("warmup", 1.0)?)?,
    };
    let mut report = http::run(&config).map_err(|e| format!("{}: {e}", config.endpoint))?;
    println!("{}", report.to_json());
    Ok(())
}

fn seconds(value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("bad duration {value}: {e}"))
}
