//! Runtime CPU-feature dispatch for the engine's hand-written loops.
//!
//! The crate is compiled for the baseline x86-64 (SSE2), so a binary runs
//! on any x86-64 machine; [`dispatch`] runs a closure inside a function
//! compiled for AVX2+FMA when the CPU has it, so the inlined loops of the
//! closure use the wider vectors. AVX-512 is a level too, but not the
//! default: on the AMD EPYC (Zen 4) this was measured on, the DS-CNN width
//! 64 ran at 7450-7640 samples/s with AVX2 kernels, 6810-7030 with AVX-512
//! and 6530-6820 with the baseline (`train_throughput --simd`, three
//! alternating runs each); the loops are bound by memory traffic, and
//! Zen 4 executes 512-bit operations as two 256-bit halves. Rust does not contract
//! `a * b + c` into fused multiply-adds, and the kernels fix their own
//! summation order, so every level gives the same bits (tested: training
//! at each level this CPU has ends on identical weights).

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level for the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Baseline x86-64 (or whatever the target is elsewhere).
    Baseline,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512 (F).
    Avx512,
}

/// 0: the default; else 1 + the selected [`Level`].
static SELECTED: AtomicU8 = AtomicU8::new(0);

/// The levels this CPU can run, lowest first.
pub fn available() -> Vec<Level> {
    let mut levels = vec![Level::Baseline];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            levels.push(Level::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            levels.push(Level::Avx512);
        }
    }
    levels
}

/// Run the kernels at `level` (falling back to the best lower level the
/// CPU has), or with `None` at the default (AVX2 where available), for
/// tests and comparisons. Process-wide.
pub fn select(level: Option<Level>) {
    SELECTED.store(level.map_or(0, |l| l as u8 + 1), Ordering::Relaxed);
}

/// Run `f` compiled for the selected vector extension.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        let level = match SELECTED.load(Ordering::Relaxed) {
            1 => Level::Baseline,
            3 => Level::Avx512,
            _ => Level::Avx2,
        };
        if level == Level::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function enables.
            return unsafe { avx512(f) };
        }
        if level != Level::Baseline
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
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
