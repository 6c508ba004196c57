//! Time, from the OS and the CPU.
//!
//! - [`monotonic`] is *the* clock: `CLOCK_MONOTONIC` as `f64` seconds,
//!   which is `time.monotonic()` and so `loop.time()`. Every deadline,
//!   poll timeout, lag and statistic is in its seconds.
//! - [`CycleClock`] is not a second clock of the loop but a stopwatch: it
//!   only measures how long each callback runs while slow-callback reports
//!   are on (`stats::SlowWatch`), two reads per callback. It reads the
//!   CPU's cycle counter where that is a reliable clock (x86-64 when the
//!   kernel itself uses the TSC, aarch64's virtual counter): about three
//!   instructions, against some fifty for `clock_gettime` through the vDSO,
//!   which keeps reports under 3% of the loop's own work
//!   (docs/telemetry.md). Elsewhere it is `monotonic` in nanoseconds. Its
//!   ticks are converted with a rate calibrated against `monotonic`, and
//!   are never compared with `loop.time()`; unifying the two would either
//!   make `loop.time()` drift from `time.monotonic()` or make every timed
//!   callback cost two vDSO calls.

/// `time.monotonic()`'s clock, as seconds: what `loop.time()` returns.
#[inline]
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A stopwatch for callback durations: the CPU's cycle counter where it is
/// reliable, else `CLOCK_MONOTONIC` in nanoseconds (see the module doc).
/// Its `now()` values are ticks, meaningful only against each other.
#[derive(Clone, Copy)]
pub struct CycleClock {
    counter: bool,
    per_second: f64,
}

impl CycleClock {
    /// Decide which counter to use and measure its rate. Takes a few
    /// milliseconds (it sleeps): do it once per process, not holding locks
    /// others wait on (`stats` caches it and releases the GIL meanwhile).
    pub fn calibrate() -> CycleClock {
        let fallback = CycleClock {
            counter: false,
            per_second: 1e9,
        };
        #[cfg(target_arch = "aarch64")]
        {
            let freq: u64;
            // SAFETY: reading the counter frequency register has no effects.
            unsafe { std::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq) };
            if freq > 0 {
                return CycleClock {
                    counter: true,
                    per_second: freq as f64,
                };
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            let source = std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .unwrap_or_default();
            if source.trim() == "tsc" {
                let (t0, c0) = (monotonic(), read_counter());
                std::thread::sleep(std::time::Duration::from_millis(5));
                let (t1, c1) = (monotonic(), read_counter());
                let per_second = c1.wrapping_sub(c0) as f64 / (t1 - t0);
                if (1e6..1e11).contains(&per_second) {
                    return CycleClock {
                        counter: true,
                        per_second,
                    };
                }
            }
        }
        fallback
    }

    #[inline(always)]
    pub fn now(self) -> u64 {
        if self.counter {
            read_counter()
        } else {
            (monotonic() * 1e9) as u64
        }
    }

    pub fn ticks(self, seconds: f64) -> u64 {
        (seconds * self.per_second) as u64
    }

    pub fn seconds(self, ticks: u64) -> f64 {
        ticks as f64 / self.per_second
    }
}

#[inline(always)]
fn read_counter() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions.
        unsafe { std::arch::x86_64::_rdtsc() }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: u64;
        // SAFETY: reading the virtual counter has no effects.
        unsafe { std::arch::asm!("mrs {}, cntvct_el0", out(reg) v) };
        v
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        (monotonic() * 1e9) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_is_time_monotonic_s_clock() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let a = monotonic();
        // SAFETY: writes into the live timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let b = monotonic();
        let t = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        assert!(a <= t && t <= b);
    }

    #[test]
    fn the_cycle_clock_measures_seconds() {
        let clock = CycleClock::calibrate();
        let (t0, c0) = (monotonic(), clock.now());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (t1, c1) = (monotonic(), clock.now());
        let measured = clock.seconds(c1 - c0);
        let real = t1 - t0;
        // Loose: a busy machine may preempt between the paired reads.
        assert!(
            (measured - real).abs() < real * 0.25 + 0.005,
            "{measured} vs {real}"
        );
        assert_eq!(clock.ticks(clock.seconds(1_000_000)), 1_000_000);
    }
}
