//! Echo benchmark tools: a load generator (`echo-client`) and a single-threaded
//! pure-Rust echo server (`echo-server`) that serves as the ceiling for the
//! Python event loops measured by `benchmarks/suite.py`.

pub mod args;
pub mod client;
pub mod cpu;
pub mod net;
pub mod server;
pub mod stats;
pub mod tls;
