//! Echo load generator; prints one JSON line of results. See `--help`.

use std::path::Path;
use std::time::Duration;

use echo_bench::args::Args;
use echo_bench::client::{self, Config};
use echo_bench::net::Endpoint;
use echo_bench::tls;

const USAGE: &str = "\
usage: echo-client (--addr HOST:PORT | --unix PATH) [--size BYTES (1024)]
                   [--concurrency N (1)] [--duration SECONDS (5)] [--warmup SECONDS (1)]
                   [--verify-every K (8)] [--tls-ca CA.pem [--tls-server-name NAME (localhost)]]

Keeps N connections each in a closed loop of round trips (send SIZE bytes, read
SIZE bytes back), counts the round trips that end within DURATION after WARMUP,
and prints JSON: requests, seconds, rps, mbps (MiB/s of payload, one direction),
p50_us/p90_us/p99_us/max_us round-trip latency, and client_cpu (this
single-threaded client's CPU seconds per wall second; near 1.0 means the client,
not the server, was the bottleneck). Echoed bytes are checked against the sent
ones: all of them on every K-th round trip of each connection (its first
included; K = 1: always), only the first and last 32 of each read otherwise
(full checks of every round trip cost ~15% of the client's CPU at 100 KiB).
With --tls-ca, every connection speaks TLS 1.3 (rustls), offers only
TLS13_AES_128_GCM_SHA256, verifies the server's certificate against CA.pem for
NAME (handshakes happen before the warm-up), and the JSON adds tls_cipher.";

fn main() {
    if let Err(message) = run() {
        eprintln!("echo-client: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let known = [
        "addr",
        "unix",
        "size",
        "concurrency",
        "duration",
        "warmup",
        "verify-every",
        "tls-ca",
        "tls-server-name",
    ];
    let args = Args::parse(std::env::args().skip(1), &known, USAGE)?;
    let config = Config {
        endpoint: Endpoint::from_args(&args, None)?,
        size: args.parsed("size", 1024usize)?.max(1),
        concurrency: args.parsed("concurrency", 1usize)?.max(1),
        duration: seconds(args.parsed("duration", 5.0)?)?,
        warmup: seconds(args.parsed("warmup", 1.0)?)?,
        verify_every: args.parsed("verify-every", 8u64)?,
        tls: match args.get("tls-ca") {
            Some(ca) => Some((
                tls::client_config(Path::new(ca))?,
                args.get("tls-server-name")
                    .unwrap_or("localhost")
                    .to_string(),
            )),
            None => None,
        },
    };
    let (mut report, cipher) =
        client::run_reporting(&config).map_err(|e| format!("{}: {e}", config.endpoint))?;
    let json = report.to_json();
    match cipher {
        // One more field in the same JSON object.
        Some(cipher) => println!(
            "{}, \"tls_cipher\": \"{cipher}\"}}",
            json.trim_end_matches('}')
        ),
        None => println!("{json}"),
    }
    Ok(())
}

fn seconds(value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("bad duration {value}: {e}"))
}
