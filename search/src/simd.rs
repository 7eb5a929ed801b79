//! Runtime CPU-feature dispatch for the engine's hand-written loops.
//!
//! The crate is compiled for the baseline x86-64 (SSE2), so a binary runs
//! on any x86-64 machine; [`dispatch`] runs a closure inside a function
//! compiled for AVX-512 or AVX2+FMA when the CPU has them, so the inlined
//! loops of the closure use the wider vectors. Rust does not contract
//! `a * b + c` into fused multiply-adds, and the kernels fix their own
//! summation order, so every path gives the same bits (tested: training
//! with [`set_baseline`] on and off ends on identical weights).

use std::sync::atomic::{AtomicBool, Ordering};

static BASELINE: AtomicBool = AtomicBool::new(false);

/// Run every kernel on the baseline instruction set (for tests and
/// comparisons).
pub fn set_baseline(on: bool) {
    BASELINE.store(on, Ordering::Relaxed);
}

/// Run `f` compiled for the best vector extension this CPU has.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if !BASELINE.load(Ordering::Relaxed) {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function enables.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
