//! The C allocator's tuning (glibc only).

/// Once per process, at the first loop's creation: keep glibc's malloc from
/// returning the heap top to the kernel after every large message and
/// faulting it back in for the next. With glibc's defaults (mmap above
/// 128 KiB, trim when 128 KiB at the top are free), 100 KiB requests through
/// asyncio's streams took 8-15 minor page faults each in the echo
/// benchmark's server; with blocks up to 1 MiB served from the heap and
/// trimming past 4 MiB free, none. (glibc's own dynamic thresholds get there only by
/// chance, after freeing an mmapped block.) Skipped when the user tuned
/// malloc (`MALLOC_*_` variables, `glibc.malloc` tunables) or set
/// `FERROLOOP_MALLOC_TUNING=0`.
pub fn tune_malloc_for_large_messages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let user_tuned = std::env::vars_os().any(|(name, value)| {
                let name = name.to_string_lossy();
                (name.starts_with("MALLOC_") && name.ends_with('_'))
                    || (name == "GLIBC_TUNABLES"
                        && value.to_string_lossy().contains("glibc.malloc."))
                    || (name == "FERROLOOP_MALLOC_TUNING" && value == "0")
            });
            if !user_tuned {
                // SAFETY: mallopt only sets allocator parameters.
                unsafe {
                    libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
                    libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
                }
            }
        });
    }
}
