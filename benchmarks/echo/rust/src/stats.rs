//! Turning one client run into the JSON line that `echo/measure.py` reads.

pub struct Report {
    pub size: usize,
    pub concurrency: usize,
    pub requests: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub latencies_us: Vec<u32>,
}

impl Report {
    /// One line of JSON. `mbps` is MiB of payload echoed per second, one
    /// direction, as vmbench's "transfer" figure; `client_cpu` is this
    /// process's CPU seconds per wall second over the measured window
    /// (the client is one thread, so 1.0 means it was saturated).
    pub fn to_json(&mut self) -> String {
        self.latencies_us.sort_unstable();
        let rps = self.requests as f64 / self.seconds;
        let mbps = rps * self.size as f64 / (1024.0 * 1024.0);
        format!(
            concat!(
                "{{\"requests\": {}, \"seconds\": {:.4}, \"rps\": {:.1}, \"mbps\": {:.2}, ",
                "\"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"max_us\": {}, ",
                "\"size\": {}, \"concurrency\": {}, \"client_cpu\": {:.3}}}"
            ),
            self.requests,
            self.seconds,
            rps,
            mbps,
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
            self.latencies_us.last().copied().unwrap_or(0),
            self.size,
            self.concurrency,
            self.cpu_seconds / self.seconds,
        )
    }

    /// Nearest-rank percentile of the sorted latencies; 0 when there are none.
    fn percentile(&self, q: f64) -> u32 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let rank = (q * n as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, n) - 1]
    }
}
