//! glibc malloc settings for a long-running daemon, applied once at start (before any thread).
//!
//! Measured with 10,000 TCP probes at 10 s on one core (BENCHMARKS.md): with glibc's defaults
//! the process held ~12 MB more before any scrape (per-thread arenas, up to 8 per core, each
//! keeping its own freed memory) and grew by ~11 MB with every `/metrics` scrape: after the
//! first large buffer (the 12 MB text) is freed, glibc raises its mmap threshold to that size,
//! so the next texts come from the heap and their pages stay with the process. Two settings
//! fix both: at most two arenas (the daemon runs one or two runtime workers, the contention
//! is negligible), and a fixed 1 MiB mmap threshold, so buffers of that size or more (only the
//! exposition text and its gzip at scale) are mapped for their lifetime and returned on free.
//! Other C libraries (musl) have neither knob; there this does nothing. An operator's own
//! `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` wins: with any of them set,
//! nothing is changed.

/// Applies the settings; call first thing in `main`.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ARENAS: libc::c_int = 2;
        const MMAP_THRESHOLD: libc::c_int = 1 << 20;
        let operator_set = ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if operator_set {
            return;
        }
        // SAFETY: mallopt only changes allocator parameters; it is called before any other
        // thread exists, and a refused value (return 0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}
