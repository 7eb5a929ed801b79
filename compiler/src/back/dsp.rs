//! The C backend's kernels for cores with the Armv7E-M DSP extension
//! (Cortex-M4, M7, M33, M55): int8 operands widened to packed 16-bit pairs
//! with the zero point subtracted on the way (`SXTAB16`), multiplied and
//! accumulated two at a time (`SMLAD`) or one lane each (`SMLABB`/`SMLATT`),
//! requantized with `SMMULR`/`SMMLAR` where the arithmetic allows. Under
//! `__ARM_FEATURE_DSP` they use `<arm_acle.h>`; elsewhere the same
//! operations are written in portable C, which gives the same bits (every
//! intermediate is an exact integer in both), so the host build of the C
//! is the same program as the device build.
//!
//! Convolutions are a matrix kernel over 1 to 6 output pixels at a time
//! (`mnet_mm1` .. `mnet_mm6`, a run of pixels split into calls by a cost
//! model: [`chunks`]), one output channel at a time: four weights loaded
//! and widened once for all the pixels, in Thumb-2 with all 14 registers
//! in use, and for the common SMMULR layers the whole kernel in Thumb-2
//! (its per-channel state in a small frame). Each pixel's inputs (its
//! receptive field, gathered by `mnet_im2col` unless a 1x1 conv reads them
//! in place) are widened into a small stack buffer; each output channel's
//! weights are one row padded to groups of 4. Depthwise convs are
//! `mnet_dw_row`: one output row from
//! `kernel` input row pointers (so a plan's ring buffer or padding rows
//! cost nothing), four channels in the lanes, the valid taps of each
//! output pixel computed once instead of a bounds check per tap.

use std::fmt::Write as _;

/// The packed 16-bit primitives, for the DSP extension and in portable C.
pub const PRIMITIVES: &str = r#"
/* Packed 16-bit arithmetic: the Armv7E-M DSP extension's instructions, or
 * the same operations in portable C (the same bits either way). */
#if defined(__ARM_FEATURE_DSP) && !defined(MNET_PORTABLE)
#include <arm_acle.h>
#if defined(__GNUC__) && defined(__thumb2__) && defined(__OPTIMIZE__) && \
    !defined(__OPTIMIZE_SIZE__) && !defined(MNET_NO_ASM)
/* The kernels' inner loops in Thumb-2 (they need the registers an
 * optimizing build for speed leaves free; -O0 and -Os use the C). */
#define MNET_DSP_ASM 1
#endif
static inline uint32_t mnet_sxtab16(uint32_t a, uint32_t x) {
    return (uint32_t)__sxtab16((int32_t)a, (int32_t)x);
}
static inline uint32_t mnet_sxtb16(uint32_t x) {
    return (uint32_t)__sxtb16((int32_t)x);
}
static inline int32_t mnet_smlad(uint32_t a, uint32_t b, int32_t c) {
    return __smlad((int32_t)a, (int32_t)b, c);
}
static inline int32_t mnet_smlabb(uint32_t a, uint32_t b, int32_t c) {
    return __smlabb((int32_t)a, (int32_t)b, c);
}
static inline int32_t mnet_smlatt(uint32_t a, uint32_t b, int32_t c) {
    return __smlatt((int32_t)a, (int32_t)b, c);
}
static inline int32_t mnet_smmulr(int32_t a, int32_t b) {
    int32_t r;
    __asm("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
static inline int32_t mnet_smmlar(int32_t a, int32_t b, int32_t c) {
    int32_t r;
    __asm("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
static inline uint32_t mnet_sxtb16_ror8(uint32_t x) {
    uint32_t r;
    __asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t mnet_sxtab16_ror8(uint32_t a, uint32_t x) {
    uint32_t r;
    __asm("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t mnet_ssat8(int32_t v) {
    return __ssat(v, 8);
}
#else
static inline int32_t mnet_lo16(uint32_t a) {
    return (int32_t)(int16_t)(uint16_t)(a & 0xFFFFu);
}
static inline int32_t mnet_hi16(uint32_t a) {
    return (int32_t)(int16_t)(uint16_t)(a >> 16);
}
static inline int32_t mnet_byte(uint32_t x) {
    return (int32_t)(int8_t)(uint8_t)(x & 0xFFu);
}
static inline uint32_t mnet_sxtab16(uint32_t a, uint32_t x) {
    const uint32_t lo = (uint32_t)(mnet_lo16(a) + mnet_byte(x)) & 0xFFFFu;
    const uint32_t hi = (uint32_t)(mnet_hi16(a) + mnet_byte(x >> 16)) & 0xFFFFu;
    return lo | (hi << 16);
}
static inline uint32_t mnet_sxtb16(uint32_t x) {
    return mnet_sxtab16(0, x);
}
static inline int32_t mnet_smlad(uint32_t a, uint32_t b, int32_t c) {
    return c + mnet_lo16(a) * mnet_lo16(b) + mnet_hi16(a) * mnet_hi16(b);
}
static inline int32_t mnet_smlabb(uint32_t a, uint32_t b, int32_t c) {
    return c + mnet_lo16(a) * mnet_lo16(b);
}
static inline int32_t mnet_smlatt(uint32_t a, uint32_t b, int32_t c) {
    return c + mnet_hi16(a) * mnet_hi16(b);
}
static inline int32_t mnet_smmulr(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 31)) >> 32);
}
static inline int32_t mnet_smmlar(int32_t a, int32_t b, int32_t c) {
    return (int32_t)(((int64_t)c * ((int64_t)1 << 32) + (int64_t)a * (int64_t)b + ((int64_t)1 << 31)) >> 32);
}
static inline int32_t mnet_ssat8(int32_t v) {
    return v < -128 ? -128 : (v > 127 ? 127 : v);
}
static inline uint32_t mnet_sxtb16_ror8(uint32_t x) {
    return mnet_sxtab16(0, (x >> 8) | (x << 24));
}
static inline uint32_t mnet_sxtab16_ror8(uint32_t a, uint32_t x) {
    return mnet_sxtab16(a, (x >> 8) | (x << 24));
}
#endif
#if defined(__GNUC__)
#define MNET_NOINLINE __attribute__((noinline))
/* Hides how a pointer was computed, so that the compiler steps one pointer
 * rather than keeping one per output (and spilling them). */
#define MNET_OPAQUE(v) __asm("" : "+r"(v))
#else
#define MNET_NOINLINE
#define MNET_OPAQUE(v) (void)0
#endif
static inline uint32_t mnet_load32(const int8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* MultiplyByQuantizedMultiplier for a right shift r >= 1, plus the output
 * zero point: nz = 2^(r-1) + (zp << r). SMMULR of 2 acc is SRDHM's
 * rounding for every product h (the compiler checked that 2 acc and the
 * sum below cannot overflow for this layer), and (h + (h >> 31) + 2^(r-1))
 * >> r is RoundingDivideByPOT. SMMLAR adds nz on the way (nz 2^32 leaves
 * the rounding alone), and acc's sign stands for h's: they agree unless
 * h = 0, where the -1 cannot carry (2^(r-1) - 1 and 2^(r-1) shift to the
 * same). */
static inline int32_t mnet_rq(int32_t acc, int32_t m, int32_t r, int32_t nz) {
    return (mnet_smmlar((int32_t)((uint32_t)acc << 1), m, nz) + (acc >> 31)) >> r;
}

"#;

/// A conv's constants as the matrix kernel reads them, and the widening
/// of its inputs.
pub const MM_LAYER: &str = r#"
/* Widen n int8 values minus the zero point (nzp = -zp in both halves) into
 * packed pairs: for every 4 values, (x0, x2) and (x1, x3), `step` words
 * apart from the next 4. A last partial group counts as zero points. */
MNET_NOINLINE static void mnet_widen(uint32_t *buf, const int8_t *x, int n, uint32_t nzp, int step) {
    int g;
    for (g = 0; g + 4 <= n; g += 4) {
        const uint32_t v = mnet_load32(x + g);
        buf[0] = mnet_sxtab16(nzp, v);
        buf[1] = mnet_sxtab16_ror8(nzp, v);
        buf += step;
    }
    if (g < n) {
        int8_t t[4];
        uint32_t v;
        int k;
        for (k = 0; k < 4; ++k) {
            t[k] = g + k < n ? x[g + k] : (int8_t)(-(int32_t)(int16_t)(uint16_t)(nzp & 0xFFFFu));
        }
        v = mnet_load32(t);
        buf[0] = mnet_sxtab16(nzp, v);
        buf[1] = mnet_sxtab16_ror8(nzp, v);
    }
}
/* A conv or dense layer for the matrix kernel: weights of output channel
 * pairs interleaved per 4 inputs (k4 groups, zero-padded), a record of 3
 * words per output channel (bias, multiplier, and the rounding and zero
 * point nz of SMMULR layers or the shift) and the right shifts. */
struct mnet_mm {
    const int8_t *w;
    const int32_t *p;
    const int8_t *r;
    int k4;
    int cout;
    int32_t zp;
    int32_t lo;
    int32_t hi;
};
"#;

/// The gather of a conv's receptive field.
pub const IM2COL: &str = r#"
/* The geometry of a conv's input. */
struct mnet_geom {
    int h, w, c, kh, kw, sh, sw, ph, pw;
    int8_t zp;
};

/* The receptive field of output pixel (oy, ox) in (ky, kx, c) order into
 * `patch` (n bytes): taps in the padding are the zero point. */
static void mnet_im2col(int8_t *patch, const int8_t *x, const struct mnet_geom *g, int oy, int ox, int n) {
    const int iy0 = oy * g->sh - g->ph, ix0 = ox * g->sw - g->pw;
    const int kx0 = ix0 < 0 ? -ix0 : 0;
    const int kx1 = ix0 + g->kw > g->w ? g->w - ix0 : g->kw;
    const int row = g->kw * g->c;
    int8_t *p = patch;
    int ky;
    for (ky = 0; ky < g->kh; ++ky) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= g->h || kx1 <= kx0) {
            memset(p, g->zp, (size_t)row);
        } else {
            if (kx0 > 0) {
                memset(p, g->zp, (size_t)(kx0 * g->c));
            }
            memcpy(p + kx0 * g->c, x + (iy * g->w + ix0 + kx0) * g->c, (size_t)((kx1 - kx0) * g->c));
            if (kx1 < g->kw) {
                memset(p + kx1 * g->c, g->zp, (size_t)((g->kw - kx1) * g->c));
            }
        }
        p += row;
    }
    if (p < patch + n) {
        memset(p, g->zp, (size_t)(patch + n - p));
    }
}
"#;

/// A depthwise conv's constants.
pub const DW_LAYER: &str = r#"
/* A depthwise conv for the row kernel (records as the matrix kernel's). */
struct mnet_dw {
    const int16_t *w;
    const int32_t *p;
    const int8_t *r;
    int c, kh, kw, sw, pw, iw, ow;
    int32_t zp_in;
    int32_t zp;
    int32_t lo;
    int32_t hi;
};
"#;

/// How a layer requantizes and clamps its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Variant {
    /// `mnet_rq` (SMMULR) rather than the exact gemmlowp helpers.
    pub fast: bool,
    /// The activation's bounds are inside [-128, 127] (else saturation is
    /// the clamp).
    pub clamp: bool,
}

impl Variant {
    pub fn suffix(self) -> &'static str {
        match (self.fast, self.clamp) {
            (true, false) => "fs",
            (true, true) => "fc",
            (false, false) => "xs",
            (false, true) => "xc",
        }
    }

    /// The C expression of the int8 output for accumulator `acc` of
    /// channel `ch`, whose record (bias, multiplier, q) is at `p`.
    fn out(self, acc: &str, p: &str, ch: &str) -> String {
        self.out_of(
            acc,
            &format!("({p})[1]"),
            &format!("({p})[2]"),
            &format!("rs[{ch}]"),
        )
    }

    /// The same from the multiplier, q and right shift as C expressions.
    pub(crate) fn out_of(self, acc: &str, m: &str, q: &str, r: &str) -> String {
        let v = if self.fast {
            format!("mnet_rq({acc}, {m}, {r}, {q})")
        } else {
            format!("mnet_mbqm({acc}, {m}, {q}) + zp")
        };
        if self.clamp {
            format!("mnet_clamp({v}, lo, hi)")
        } else {
            format!("(int8_t)mnet_ssat8({v})")
        }
    }
}

/// Lines of an asm statement's text, each a C string literal on its own
/// line indented by `indent` spaces.
fn asm_lines<S: AsRef<str>>(indent: usize, lines: &[S]) -> String {
    lines
        .iter()
        .map(|l| format!("\n{:indent$}\"{}\\n\\t\"", "", l.as_ref()))
        .collect()
}

/// A loop of `k` steps unrolled four times, entered at the step that
/// leaves a multiple of four (`t` is free before the first step): the
/// lines of an asm statement.
fn asm_loop4(step: &[String]) -> Vec<String> {
    let mut out: Vec<String> = [
        "ands %[t], %[k], #3",
        "add %[k], %[k], #3",
        "lsr %[k], %[k], #2",
        "beq 10f",
        "cmp %[t], #2",
        "bhi 11f",
        "beq 12f",
        "b 13f",
    ]
    .map(String::from)
    .to_vec();
    for l in 10..14 {
        out.push(format!("{l}:"));
        out.extend_from_slice(step);
    }
    out.extend(["subs %[k], %[k], #1".into(), "bne 10b".into()]);
    out
}

/// Instructions of one call of the matrix kernel over `w` pixels (1 to 6)
/// per output channel, with `k4` groups of 4 inputs: the inner loop's
/// step (18.5 for 6 pixels, 15.5 for 5, 13.5 for 4, 11.5 for 3, 8.5 for 2,
/// 6.5 for 1, the loop's count and branch included), about 25 to start and
/// end a channel and 6 per output. What [`chunks`] minimizes.
fn call_cost(w: usize, k4: usize) -> f64 {
    let step = [0.0, 6.5, 8.5, 11.5, 13.5, 15.5, 18.5][w];
    k4 as f64 * step + 25.0 + 6.0 * w as f64
}

/// The most pixels of a matrix kernel call of any variant.
pub const MAX_WIDTH: usize = 6;

/// The most pixels of a matrix kernel call of variant `v`: 6 where the
/// whole kernel is Thumb-2 (its loop count in the frame) and the network's
/// 6-pixel calls pay for their kernel ([`six_pays`]), else 5.
pub fn max_width(v: Variant, six: bool) -> usize {
    if v == FS && six {
        MAX_WIDTH
    } else {
        5
    }
}

/// [`six_pays`] for a network: its matrix kernel layers that `fs` says
/// are SMMULR layers saturating to int8, its constants counted from the
/// DSP layers' shapes (a weight a byte, 12 bytes of record per channel).
pub fn six(l: &crate::lower::Lowered, plan: &MemoryPlan, fs: &dyn Fn(usize) -> bool) -> bool {
    let mut layers = Vec::new();
    let mut flash = 0;
    for i in 1..l.nodes.len() {
        let Some(k) = kernel_of(l, plan, i) else {
            continue;
        };
        let cout = l.nodes[i].shape.last().copied().unwrap_or(1) as usize;
        flash += k.k() * cout + 12 * cout;
        if matches!(k, Kernel::Mm { .. }) && fs(i) {
            layers.push((runs(l, plan, i), k.k().div_ceil(4), cout));
        }
    }
    six_pays(&layers, flash)
}

/// Bytes of Thumb-2 a 6-pixel matrix kernel adds (about 980 measured).
const SIX_BYTES: f64 = 1024.0;

/// Whether 6-pixel calls pay for their kernel's code in a network whose
/// matrix kernel layers are `layers` (runs of pixels, groups of 4 inputs
/// and output channels of each SMMULR layer saturating to int8) and whose
/// constants are `flash` bytes: the share of the matrix kernels'
/// instructions they save ([`call_cost`]) must be larger than the share of
/// the flash they add. (KWS rows of 5 pixels gain little from them; AD's
/// rows of 16 gain 4%.)
pub fn six_pays(layers: &[(Vec<usize>, usize, usize)], flash: usize) -> bool {
    let cost = |r: usize, k4: usize, max: usize| -> f64 {
        chunks(r, k4, max).iter().map(|&w| call_cost(w, k4)).sum()
    };
    let (mut saved, mut total) = (0.0, 0.0);
    for (runs, k4, cout) in layers {
        for &r in runs {
            let (five, six) = (cost(r, *k4, 5), cost(r, *k4, MAX_WIDTH));
            total += five * *cout as f64;
            saved += (five - six) * *cout as f64;
        }
    }
    total > 0.0 && saved / total > SIX_BYTES / flash.max(1) as f64
}

/// The common variant: SMMULR requantization saturating to int8.
pub const FS: Variant = Variant {
    fast: true,
    clamp: false,
};

/// The pixels of each call of the matrix kernel over a run of `r` pixels
/// with `k4` groups of 4 inputs, in order: the cheapest cover of the run
/// by calls of 1 to `max` pixels ([`call_cost`]), wider calls first.
pub fn chunks(r: usize, k4: usize, max: usize) -> Vec<usize> {
    // best[n]: the cheapest cost of n pixels and its first call.
    let mut best: Vec<(f64, usize)> = vec![(0.0, 0); r + 1];
    for n in 1..=r {
        best[n] = (1..=max.min(n))
            .rev()
            .map(|w| (call_cost(w, k4) + best[n - w].0, w))
            .fold(
                (f64::INFINITY, 0),
                |a, b| if b.0 < a.0 - 1e-9 { b } else { a },
            );
    }
    let mut out = Vec::new();
    let mut n = r;
    while n > 0 {
        out.push(best[n].1);
        n -= best[n].1;
    }
    out
}

/// The calls a run-time walk over runs of `runs` pixels makes, as the C
/// chooses them: for each width, the pixels left at which it is called
/// (every run's [`chunks`], in order).
pub fn chain(
    runs: &[usize],
    k4: usize,
    max: usize,
) -> std::collections::BTreeMap<usize, std::collections::BTreeSet<usize>> {
    let mut at: std::collections::BTreeMap<usize, std::collections::BTreeSet<usize>> =
        Default::default();
    for &r in runs {
        let mut left = r;
        for w in chunks(r, k4, max) {
            at.entry(w).or_default().insert(left);
            left -= w;
        }
    }
    at
}

/// The C condition on `r` (pixels left) of the lefts in `at`.
pub fn chain_condition(at: &std::collections::BTreeSet<usize>, r: &str) -> String {
    at.iter()
        .map(|n| format!("{r} == {n}"))
        .collect::<Vec<_>>()
        .join(" || ")
}

/// The input registers of an inline-asm step (r8-r11 in the kernels).
const X4: [&str; 4] = ["%[x0]", "%[x1]", "%[x2]", "%[x3]"];

/// One step of the matrix kernel over `p` pixels and one output channel:
/// four weights loaded and widened once, against the pixels' inputs loaded
/// into the registers `x` (ascending) as far as they go: word i of the
/// step's 2p (pixel i / 2's, even words against the low weights' lanes)
/// loaded by one LDM per register-full (LDRD for 2), 4p MACs.
fn step_into(p: usize, x: &[&str]) -> Vec<String> {
    let mut s: Vec<String> = [
        "ldr %[w], [%[wp]], #4",
        "sxtb16 %[t], %[w]",
        "sxtb16 %[w], %[w], ror #8",
    ]
    .map(String::from)
    .to_vec();
    let words = 2 * p;
    let mut i = 0;
    while i < words {
        let n = x.len().min(words - i);
        s.push(match n {
            1 => format!("ldr {}, [%[xp]], #4", x[0]),
            2 => format!("ldrd {}, {}, [%[xp]], #8", x[0], x[1]),
            _ => format!("ldmia %[xp]!, {{{}}}", x[..n].join(", ")),
        });
        for (r, word) in x[..n].iter().zip(i..) {
            let a = word / 2;
            let h = if word % 2 == 0 { "t" } else { "w" };
            s.push(format!("smlad %[a{a}], {r}, %[{h}], %[a{a}]"));
        }
        i += n;
    }
    s
}

/// The whole matrix kernel over `p` pixels for SMMULR layers saturating to
/// int8 (the common case), in Thumb-2: every register in the inner loop
/// (up to 4 pixels: accumulators r0.., weights r5, r6, count r7, inputs
/// r8-r11; 5 and 6 pixels: see below; input pointer r12, weight pointer
/// lr), the per-channel state in a small frame (x, k4 or the count, cout,
/// records, shifts, end and current output, and for 5 and 6 pixels the
/// loop count and entry). Requantization as `mnet_rq`; pixel j's output
/// at y + j cout.
fn naked(p: usize) -> String {
    // Five and six pixels keep the loop count in the frame (stepped in a
    // free input register) and enter their loop, unrolled 8 times, through
    // an address worked out once per call: the weights sit in r{p} and
    // r{p+1}, the inputs in every register from there to r11 (one LDM
    // each of 5 words for 5 pixels), the multiplier in r5 or r12 in the
    // epilogue; the frame is 36 bytes (the stack stays 8-byte aligned).
    let framed = p >= 5;
    let (w, t, m, frame) = match p {
        6 => ("r6", "r7", "r12", 36),
        5 => ("r5", "r6", "r5", 36),
        _ => ("r5", "r6", "r5", 28),
    };
    let first_x = if framed { p + 2 } else { 8 };
    let xregs: Vec<String> = (first_x..12).map(|r| format!("r{r}")).collect();
    let mut lines: Vec<String> = vec!["push {r4-r11, lr}".into(), format!("sub sp, sp, #{frame}")];
    lines.extend(
        [
            "ldr r3, [r0, #12]",
            "ldr r4, [r0, #16]",
            "ldr r5, [r0, #4]",
            "ldr r6, [r0, #8]",
            "ldr lr, [r0, #0]",
            "add r7, r2, r4",
            "str r1, [sp, #0]",
        ]
        .map(String::from),
    );
    if framed {
        // Count (k4 + 7) / 8; enter at step (8 - k4 % 8) % 8.
        lines.extend(["and r8, r3, #7", "add r3, r3, #7", "lsr r3, r3, #3"].map(String::from));
        for r in 1..8 {
            lines.extend([
                format!("cmp r8, #{r}"),
                format!("bne 3{r}f"),
                format!("adr.w r9, 1{}f", 8 - r),
                "b 39f".into(),
                format!("3{r}:"),
            ]);
        }
        lines.extend(
            [
                "adr.w r9, 10f",
                "39:",
                "orr r9, r9, #1",
                "str r9, [sp, #32]",
            ]
            .map(String::from),
        );
    }
    lines.extend(
        [
            "str r3, [sp, #4]",
            "str r4, [sp, #8]",
            "str r5, [sp, #12]",
            "str r6, [sp, #16]",
            "str r7, [sp, #20]",
            "str r2, [sp, #24]",
            "20:",
            "ldr r12, [sp, #0]",
            "ldr r7, [sp, #12]",
            "ldr r0, [r7]",
        ]
        .map(String::from),
    );
    lines.extend((1..p).map(|j| format!("mov r{j}, r0")));
    let sub = |l: &str| {
        let mut l = l.to_string();
        for j in 0..p {
            l = l.replace(&format!("%[a{j}]"), &format!("r{j}"));
        }
        for (from, to) in [
            ("%[w]", w),
            ("%[t]", t),
            ("%[k]", "r7"),
            ("%[xp]", "r12"),
            ("%[wp]", "lr"),
        ] {
            l = l.replace(from, to);
        }
        l
    };
    if framed {
        lines.extend(
            [
                "ldr r8, [sp, #4]",
                "str r8, [sp, #28]",
                "ldr r9, [sp, #32]",
                "bx r9",
            ]
            .map(String::from),
        );
        let x: Vec<&str> = xregs.iter().map(String::as_str).collect();
        let st = step_into(p, &x);
        for l in 10..18 {
            lines.push(format!("{l}:"));
            lines.extend(st.iter().map(|l| sub(l)));
        }
        lines.extend(
            [
                "ldr r8, [sp, #28]",
                "subs r8, r8, #1",
                "str r8, [sp, #28]",
                "bne 10b",
            ]
            .map(String::from),
        );
    } else {
        lines.push("ldr r7, [sp, #4]".into());
        for l in asm_loop4(&step_into(p, &X4)) {
            let mut l = sub(&l);
            for (j, x) in xregs.iter().enumerate() {
                l = l.replace(&format!("%[x{j}]"), x);
            }
            lines.push(l);
        }
    }
    lines.extend(
        [
            "ldr r7, [sp, #12]",
            &format!("ldrd {m}, r6, [r7, #4]"),
            "add r7, r7, #12",
            "str r7, [sp, #12]",
            "ldr r8, [sp, #16]",
            "ldrsb r7, [r8], #1",
            "str r8, [sp, #16]",
            "ldr r8, [sp, #24]",
            "ldr r9, [sp, #8]",
        ]
        .map(String::from),
    );
    for j in 0..p {
        lines.extend([
            format!("lsl r11, r{j}, #1"),
            format!("smmlar r11, r11, {m}, r6"),
            format!("add r11, r11, r{j}, asr #31"),
            "asr r11, r11, r7".into(),
            "ssat r11, #8, r11".into(),
        ]);
        let store: &[&str] = match j {
            0 => &["strb r11, [r8]"],
            1 => &["strb r11, [r8, r9]"],
            2 => &["add r10, r8, r9, lsl #1", "strb r11, [r10]"],
            3 | 5 => &["strb r11, [r10, r9]"],
            _ => &["add r10, r10, r9, lsl #1", "strb r11, [r10]"],
        };
        lines.extend(store.iter().map(|l| l.to_string()));
    }
    lines.extend(
        [
            "add r8, r8, #1",
            "str r8, [sp, #24]",
            "ldr r9, [sp, #20]",
            "cmp r8, r9",
            "bne 20b",
            &format!("add sp, sp, #{frame}"),
            "pop {r4-r11, pc}",
        ]
        .map(String::from),
    );
    let text = asm_lines(8, &lines);
    format!(
        r#"
/* Outputs of {p} pixels (pixel j's at y + j cout), one output channel at
 * a time, all in Thumb-2 (see mnet_mm{p}_fs below for the same in C). */
__attribute__((naked, noinline)) static void mnet_mm{p}_fs(const struct mnet_mm *L __attribute__((unused)),
                                                          const uint32_t *x __attribute__((unused)),
                                                          int8_t *y __attribute__((unused))) {{
    __asm volatile({text});
}}
"#
    )
}

/// The matrix kernel of one variant over `p` pixels (1 to 5): one output
/// channel at a time, its weights (one row of k4 groups of 4) widened four
/// at a time for all `p` pixels.
pub fn mm(v: Variant, p: usize) -> String {
    let s = v.suffix();
    let accs: Vec<String> = (0..p).map(|j| format!("a{j}")).collect();
    let decl = accs[1..]
        .iter()
        .map(|a| format!(", {a} = a0"))
        .collect::<String>();
    let operands = accs
        .iter()
        .map(|a| format!("[{a}] \"+r\"({a}), "))
        .collect::<String>();
    let portable = (0..p)
        .map(|j| {
            format!(
                "\n            {a} = mnet_smlad(xp[{e}], wa, {a});\n            {a} = mnet_smlad(xp[{o}], wb, {a});",
                a = accs[j],
                e = 2 * j,
                o = 2 * j + 1
            )
        })
        .collect::<String>();
    let stores = (0..p)
        .map(|j| {
            format!(
                "\n            {}*yo = {};",
                if j == 0 {
                    ""
                } else {
                    "yo += cout;\n            "
                },
                v.out_of(&accs[j], "m", "q", "r")
            )
        })
        .collect::<String>();
    let c_loop = format!(
        r#"
        do {{
            const uint32_t w0 = mnet_load32(wp);
            const uint32_t wa = mnet_sxtb16(w0), wb = mnet_sxtb16_ror8(w0);{portable}
            xp += {xs};
            wp += 4;
        }} while (--k);"#,
        xs = 2 * p
    );
    // Where the inner loop could be asm, the all-Thumb-2 kernel stands in
    // for the whole of an "fs" kernel, so its C twin needs only the C loop.
    let inner = if s == "fs" {
        c_loop
    } else {
        format!(
            r#"
#if defined(MNET_DSP_ASM)
        {{
            register uint32_t x0 __asm("r8"), x1 __asm("r9"), x2 __asm("r10"), x3 __asm("r11");
            uint32_t w, t;
            __asm volatile({body}
                : {operands}[xp] "+r"(xp), [wp] "+r"(wp), [k] "+r"(k),
                  [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3), [w] "=&r"(w), [t] "=&r"(t)
                :
                : "cc", "memory");
        }}
#else{c_loop}
#endif"#,
            body = asm_lines(16, &asm_loop4(&step_into(p, &X4))),
        )
    };
    let c = format!(
        r#"
/* Outputs of {p} pixels (pixel j's at y + j cout), one output channel at
 * a time: x holds their widened inputs, interleaved per 4 (pixel 0's two
 * words, then pixel 1's, ...), so that one widening of four weights
 * serves all {p}. */
static void mnet_mm{p}_{s}(const struct mnet_mm *L, const uint32_t *x, int8_t *y) {{
    const int32_t *p = L->p;
    const int8_t *rp = L->r;
    const int8_t *wp = L->w;
    const int k4 = L->k4, cout = L->cout;
    const int32_t zp = L->zp, lo = L->lo, hi = L->hi;
    int oc;
    (void)zp;
    (void)lo;
    (void)hi;
    for (oc = 0; oc < cout; ++oc, p += 3, ++rp, ++y) {{
        int32_t a0 = p[0]{decl};
        const uint32_t *xp = x;
        int k = k4;{inner}
        {{
            const int32_t m = p[1], q = p[2], r = rp[0];
            int8_t *yo = y;
            (void)r;
            MNET_OPAQUE(yo);{stores}
        }}
    }}
}}
"#,
    );
    if s == "fs" {
        format!("\n#if defined(MNET_DSP_ASM){}#else{c}#endif\n", naked(p))
    } else {
        c
    }
}

/// The Thumb-2 body of a 3x3 window's taps of 4 channels with all rows and
/// `cols` (3, or 2 at the first or last column) columns: per tap one input
/// word (the row's last tap steps the row pointer to the next 4 channels),
/// widened minus the zero point, against the tap's two weight words (one
/// LDRD); the
/// weight pointer steps to the next group's 9 taps at the end.
fn dw_taps(cols: usize) -> String {
    let mut s = String::new();
    let order: &[usize] = if cols == 3 { &[1, 2, 0] } else { &[1, 0] };
    for r in 0..3 {
        for &kx in order {
            let t = r * 3 + kx;
            let load = match kx {
                0 => format!("[%[x{r}]], #4"),
                1 => format!("[%[x{r}], %[c]]"),
                _ => format!("[%[x{r}], %[c], lsl #1]"),
            };
            for line in [
                format!("ldr %[xv], {load}"),
                format!("ldrd %[w], %[v], [%[wp], #{}]", t * 8),
                "sxtab16 %[xa], %[nzp], %[xv]".into(),
                "sxtab16 %[xv], %[nzp], %[xv], ror #8".into(),
                "smlabb %[a0], %[xa], %[w], %[a0]".into(),
                "smlatt %[a2], %[xa], %[w], %[a2]".into(),
                "smlabb %[a1], %[xv], %[v], %[a1]".into(),
                "smlatt %[a3], %[xv], %[v], %[a3]".into(),
            ] {
                let _ = write!(s, "\"{line}\\n\\t\"\n                        ");
            }
        }
    }
    s.push_str("\"adds %[wp], %[wp], #72\\n\\t\"");
    s
}

/// The asm statement of [`dw_taps`]`(cols)` with its operands.
fn dw_asm(cols: usize) -> String {
    format!(
        r#"__asm volatile(
                        {}
                        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [x0] "+r"(x0),
                          [x1] "+r"(x1), [x2] "+r"(x2), [wp] "+r"(wp), [xv] "=&r"(xv), [xa] "=&r"(xa),
                          [w] "=&r"(w), [v] "=&r"(v)
                        : [c] "r"(c), [nzp] "r"(nzp)
                        : "cc", "memory");"#,
        dw_taps(cols)
    )
}

/// The depthwise row kernel of one variant.
pub fn dw(v: Variant) -> String {
    let s = v.suffix();
    let mut c = String::new();
    let _ = write!(
        c,
        r#"
/* One tap of four channels: inputs minus the zero point against the
 * tap's widened weights (c0, c2) and (c1, c3). */
#define MNET_DW_TAP(xp, wp) \
    do {{ \
        const uint32_t xv_ = mnet_load32(xp); \
        const uint32_t xa_ = mnet_sxtab16(nzp, xv_), xb_ = mnet_sxtab16_ror8(nzp, xv_); \
        uint32_t wa_, wb_; \
        memcpy(&wa_, (wp), 4); \
        memcpy(&wb_, (wp) + 2, 4); \
        a0 = mnet_smlabb(xa_, wa_, a0); \
        a2 = mnet_smlatt(xa_, wa_, a2); \
        a1 = mnet_smlabb(xb_, wb_, a1); \
        a3 = mnet_smlatt(xb_, wb_, a3); \
    }} while (0)

/* One output row of a depthwise conv: rows[ky] is input row ky of the
 * window (NULL in the padding); four channels a step in the lanes, the
 * weights widened at compile time (a group of 4 channels' taps together,
 * each tap as c0 c2 c1 c3). */
static void mnet_dw_row_{s}(const struct mnet_dw *L, const int8_t *const *rows, int8_t *y) {{
    const int32_t *const rec = L->p;
    const int8_t *const rs = L->r;
    const int16_t *const wt = L->w;
    const int c = L->c, kh = L->kh, kw = L->kw, sw = L->sw, pw = L->pw, iw = L->iw, ow = L->ow;
    const int taps = kh * kw;
    const int32_t zp_in = L->zp_in, zp = L->zp, lo = L->lo, hi = L->hi;
    const uint32_t nzp = ((uint32_t)(-zp_in) & 0xFFFFu) * 0x10001u;
    int ox;
    (void)rs;
    (void)zp;
    (void)lo;
    (void)hi;
    for (ox = 0; ox < ow; ++ox) {{
        const int ix0 = ox * sw - pw;
        const int kx0 = ix0 < 0 ? -ix0 : 0;
        const int kx1 = ix0 + kw > iw ? iw - ix0 : kw;
        const int n = kx1 - kx0;
        int ch;
#if defined(MNET_DSP_ASM)
        if (kh == 3 && kw == 3 && (n == 3 || n == 2) && rows[0] && rows[1] && rows[2]) {{
            /* A pixel whose 3x3 window has all rows and 3 (inside) or 2
             * (first or last column) columns: its taps of 4 channels in
             * one block, each row pointer stepping to the next 4. */
            const int8_t *x0 = rows[0] + (ix0 + kx0) * c, *x1 = rows[1] + (ix0 + kx0) * c,
                         *x2 = rows[2] + (ix0 + kx0) * c;
            const int16_t *wp = wt + kx0 * 4;
            for (ch = 0; ch + 4 <= c; ch += 4) {{
                const int32_t *p = rec + 3 * ch;
                int32_t a0 = p[0], a1 = p[3], a2 = p[6], a3 = p[9];
                uint32_t xv, xa, w, v;
                if (n == 3) {{
                    {a3}
                }} else {{
                    {a2}
                }}
                {{
                    /* Fresh copies: the compiler keeps them in registers
                     * rather than reloading the spilled originals. */
                    const int32_t *pe = p;
                    const int8_t *re = rs + ch;
                    int8_t *ye = y + ch;
                    MNET_OPAQUE(pe);
                    MNET_OPAQUE(re);
                    MNET_OPAQUE(ye);
                    ye[0] = {e0};
                    ye[1] = {e1};
                    ye[2] = {e2};
                    ye[3] = {e3};
                }}
            }}
        }} else
#endif
        for (ch = 0; ch + 4 <= c; ch += 4) {{
            const int32_t *p = rec + 3 * ch;
            const int16_t *wg = wt + (ch / 4) * taps * 4 + kx0 * 4;
            int32_t a0 = p[0], a1 = p[3], a2 = p[6], a3 = p[9];
            int ky;
            for (ky = 0; ky < kh; ++ky, wg += kw * 4) {{
                const int8_t *xp;
                const int16_t *wp = wg;
                if (!rows[ky] || n <= 0) {{
                    continue;
                }}
                xp = rows[ky] + (ix0 + kx0) * c + ch;
                {{
                    int k = n;
                    do {{
                        MNET_DW_TAP(xp, wp);
                        xp += c;
                        wp += 4;
                    }} while (--k);
                }}
            }}
            y[ch] = {o0};
            y[ch + 1] = {o1};
            y[ch + 2] = {o2};
            y[ch + 3] = {o3};
        }}
        for (ch = c & ~3; ch < c; ++ch) {{
            /* The lane of channel ch in its (last) group: c0 c2 c1 c3. */
            const int j = ch - (c & ~3);
            const int16_t *wg = wt + (c / 4) * taps * 4 + ((j & 1) << 1) + ((j & 2) >> 1);
            const int32_t *p = rec + 3 * ch;
            int32_t a0 = p[0];
            int ky, kx;
            for (ky = 0; ky < kh; ++ky) {{
                if (!rows[ky]) {{
                    continue;
                }}
                for (kx = kx0; kx < kx1; ++kx) {{
                    a0 += wg[(ky * kw + kx) * 4] * (rows[ky][(ix0 + kx) * c + ch] - zp_in);
                }}
            }}
            y[ch] = {t0};
        }}
        y += c;
    }}
}}
#undef MNET_DW_TAP
"#,
        o0 = v.out("a0", "p", "ch"),
        o1 = v.out("a1", "p + 3", "ch + 1"),
        o2 = v.out("a2", "p + 6", "ch + 2"),
        o3 = v.out("a3", "p + 9", "ch + 3"),
        t0 = v.out("a0", "p", "ch"),
        e0 = v.out_of("a0", "pe[1]", "pe[2]", "re[0]"),
        e1 = v.out_of("a1", "pe[4]", "pe[5]", "re[1]"),
        e2 = v.out_of("a2", "pe[7]", "pe[8]", "re[2]"),
        e3 = v.out_of("a3", "pe[10]", "pe[11]", "re[3]"),
        a3 = dw_asm(3),
        a2 = dw_asm(2),
    );
    c
}

/// A depthwise conv's weights (`[tap][c]`) widened to int16 in the row
/// kernel's order: channels in groups of 4 (the last zero-padded), each
/// group's taps together, each tap's 4 channels as c0 c2 c1 c3 (so one
/// word is the (c0, c2) pair the lanes multiply).
pub fn dw_weights(w: &[i8], taps: usize, c: usize) -> Vec<i16> {
    let groups = c.div_ceil(4);
    let mut out = vec![0i16; groups * taps * 4];
    for t in 0..taps {
        for ch in 0..c {
            let lane = ((ch & 1) << 1) + ((ch & 2) >> 1);
            out[((ch / 4) * taps + t) * 4 + lane] = w[t * c + ch] as i16;
        }
    }
    out
}

/// What the DSP kernels need of a weighted layer, worked out once.
#[derive(Clone, Debug)]
pub struct Layer {
    pub variant: Variant,
    /// Groups of 4 of the inputs per output (kernel height x width x input
    /// channels; the kernel taps of a depthwise conv).
    pub k4: usize,
}

/// The largest magnitude of a weight times an input minus its zero point.
const MAX_PRODUCT: i64 = 128 * 255;

/// How layer `i` (a conv or depthwise conv with `k` inputs per output)
/// requantizes: `mnet_rq` when every shift is a right shift and neither
/// `2 acc` nor `h + nz` can overflow for any input, else the exact helpers.
pub fn layer(
    q: &crate::lower::QuantGraph,
    prep: &crate::exec::interp::Prepared,
    i: usize,
    k: usize,
) -> Layer {
    use crate::exec::interp::Prepared;
    let Prepared::Weighted {
        shift,
        act_min,
        act_max,
        ..
    } = prep
    else {
        unreachable!("a weighted layer")
    };
    let w = &q.weights[&i];
    let zp = q.qparams[i].zero_point as i64;
    let bound =
        w.bias.iter().map(|&b| (b as i64).abs()).max().unwrap_or(0) + k as i64 * MAX_PRODUCT;
    let limit = 1i64 << 31;
    let fast = bound < limit / 2
        && shift.iter().all(|&s| {
            let r = -(s as i64);
            (1..=30).contains(&r) && bound + 1 + (1i64 << (r - 1)) + zp.abs() * (1i64 << r) < limit
        });
    Layer {
        variant: Variant {
            fast,
            clamp: *act_min > -128 || *act_max < 127,
        },
        k4: k.div_ceil(4),
    }
}

/// A conv's weights (`[out][k]`) in the matrix kernel's order: each
/// output channel's row padded with zeros to groups of 4.
pub fn mm_weights(w: &[i8], cout: usize, k: usize) -> Vec<i8> {
    let k4 = k.div_ceil(4);
    let mut out = vec![0i8; cout * k4 * 4];
    for (row, src) in out.chunks_mut(k4 * 4).zip(w.chunks(k)) {
        row[..k].copy_from_slice(src);
    }
    out
}

/// The requantization arrays of a layer for its variant: `q` is
/// `2^(r-1) + (zp << r)` (fast) or the shift (exact), `r` the right shift
/// (fast only).
pub fn requant_arrays(v: Variant, shift: &[i32], zp: i32) -> (Vec<i32>, Option<Vec<i8>>) {
    if v.fast {
        let q = shift
            .iter()
            .map(|&s| {
                let r = -s;
                ((1i64 << (r - 1)) + ((zp as i64) << r)) as i32
            })
            .collect();
        let r = shift.iter().map(|&s| (-s) as i8).collect();
        (q, Some(r))
    } else {
        (shift.to_vec(), None)
    }
}

/// `-zp` in both 16-bit halves, as the widening adds it.
pub fn nzp(zp: i32) -> String {
    let h = (-zp) as u32 & 0xFFFF;
    format!("0x{:08X}u", h * 0x10001)
}

use crate::exec::interp::Prepared;
use crate::lower::{LKind, QuantGraph};
use crate::plan::MemoryPlan;

/// Which DSP kernel runs node `i`, if any: convs and dense layers the
/// matrix kernel, depthwise convs the row kernel (an in-place depthwise
/// conv keeps its channel-by-channel loop).
pub fn kernel_of(l: &crate::lower::Lowered, plan: &MemoryPlan, i: usize) -> Option<Kernel> {
    let n = &l.nodes[i];
    let inp = &l.nodes[*n.inputs.first()?].shape;
    match &n.kind {
        LKind::Conv { window, .. } => Some(Kernel::Mm {
            k: (window.kernel[0] * window.kernel[1] * inp[2]) as usize,
            direct: window.kernel == [1, 1] && window.stride == [1, 1],
        }),
        LKind::Depthwise { window } if plan.scratch[i].is_none() => Some(Kernel::Dw {
            k: (window.kernel[0] * window.kernel[1]) as usize,
        }),
        _ => None,
    }
}

/// A DSP kernel and what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The matrix kernel over `k` inputs per output; `direct` when each
    /// output pixel's inputs are one input pixel (1x1, stride 1).
    Mm { k: usize, direct: bool },
    /// The depthwise row kernel over `k` taps.
    Dw { k: usize },
}

impl Kernel {
    pub fn k(self) -> usize {
        match self {
            Kernel::Mm { k, .. } | Kernel::Dw { k } => k,
        }
    }
}

/// The constants of DSP layer `i` (weights in its kernel's order, bias,
/// requantization) and its kernel struct `L{i}`/`D{i}` (and geometry `G{i}`
/// for a gathered conv).
pub fn constants(
    c: &mut String,
    q: &QuantGraph,
    prep: &[Prepared],
    i: usize,
    kernel: Kernel,
    variant: Variant,
    opts: super::c::Options,
) -> usize {
    let mut size = 0;
    let l = &q.lowered;
    let n = &l.nodes[i];
    let w = &q.weights[&i];
    let Prepared::Weighted {
        mult,
        shift,
        act_min,
        act_max,
        ..
    } = &prep[i]
    else {
        unreachable!("a weighted layer")
    };
    let info = Layer {
        variant,
        ..layer(q, &prep[i], i, kernel.k())
    };
    let zp = q.qparams[i].zero_point;
    let cout = n.shape[2] as usize;
    match kernel {
        Kernel::Mm { k, .. } => {
            let weights = mm_weights(&w.weight, cout, k);
            size += super::c::array(
                c,
                "int8_t",
                &format!("w{i}"),
                &weights,
                weights.iter().map(|&v| v as u8),
                opts,
            );
        }
        Kernel::Dw { k } => {
            let weights = dw_weights(&w.weight, k, cout);
            size += super::c::array(
                c,
                "int16_t",
                &format!("w{i}"),
                &weights,
                weights.iter().flat_map(|v| v.to_le_bytes()),
                opts,
            );
        }
    }
    let _ = writeln!(
        c,
        "/* {}: {} kernel, {} requantization */",
        n.name,
        match kernel {
            Kernel::Mm { .. } => "matrix",
            Kernel::Dw { .. } => "depthwise row",
        },
        if info.variant.fast { "SMMULR" } else { "exact" }
    );
    let arr = |c: &mut String, ty: &str, name: String, v: &[i32]| -> usize {
        super::c::array(
            c,
            ty,
            &name,
            v,
            v.iter().flat_map(|x| x.to_le_bytes()),
            opts,
        )
    };
    let (qa, ra) = requant_arrays(info.variant, shift, zp);
    let records: Vec<i32> = (0..cout)
        .flat_map(|o| [w.bias[o], mult[o], qa[o]])
        .collect();
    let _ = writeln!(
        c,
        "/* per channel: bias, multiplier, {} */",
        if info.variant.fast { "nz" } else { "shift" }
    );
    size += arr(c, "int32_t", format!("p{i}"), &records);
    let r = match &ra {
        Some(r) => {
            size += super::c::array(
                c,
                "int8_t",
                &format!("r{i}"),
                r,
                r.iter().map(|&v| v as u8),
                opts,
            );
            format!("r{i}")
        }
        None => "0".into(),
    };
    let inp = &l.nodes[n.inputs[0]].shape;
    match (kernel, &n.kind) {
        (Kernel::Mm { direct, .. }, LKind::Conv { window, .. }) => {
            let _ = writeln!(
                c,
                "static const struct mnet_mm L{i} = {{w{i}, p{i}, {r}, {}, {cout}, {zp}, {act_min}, {act_max}}};",
                info.k4
            );
            if !direct {
                let p = window.over([inp[0], inp[1]]);
                let _ = writeln!(
                    c,
                    "static const struct mnet_geom G{i} = {{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}}};",
                    inp[0],
                    inp[1],
                    inp[2],
                    window.kernel[0],
                    window.kernel[1],
                    window.stride[0],
                    window.stride[1],
                    p.pad[0],
                    p.pad[1],
                    q.qparams[n.inputs[0]].zero_point
                );
            }
        }
        (Kernel::Dw { .. }, LKind::Depthwise { window }) => {
            let p = window.over([inp[0], inp[1]]);
            let _ = writeln!(
                c,
                "static const struct mnet_dw D{i} = {{w{i}, p{i}, {r}, {cout}, {}, {}, {}, {}, {}, {}, {}, {zp}, {act_min}, {act_max}}};",
                window.kernel[0],
                window.kernel[1],
                window.stride[1],
                p.pad[1],
                inp[1],
                p.out[1],
                q.qparams[n.inputs[0]].zero_point
            );
        }
        _ => unreachable!("kernel_of matches the kind"),
    }
    size
}

/// C statements that compute output pixels of conv `i` with the matrix
/// kernel: `pixels` output pixels in the calls of [`chunks`], pixel `p`'s
/// inputs loaded by `load(p, offset, step)`, its outputs at `out(p)` (a
/// call's pixels' outputs follow each other); first to last, or last to
/// first when `backwards` (an in-place conv whose output pixels are
/// larger).
pub struct MmLoop<'a> {
    pub i: usize,
    /// Groups of 4 inputs per output.
    pub k4: usize,
    pub suffix: &'static str,
    pub pixels: usize,
    pub load: &'a dyn Fn(&str, &str, u32) -> String,
    pub out: &'a dyn Fn(&str) -> String,
    pub backwards: bool,
    /// The most pixels of a call ([`max_width`]).
    pub max: usize,
    pub var: &'a str,
    pub indent: &'a str,
}

/// C statements of one matrix kernel call of conv `i` over `w` pixels from
/// pixel `a` (an expression): each pixel's inputs widened by `load(pixel,
/// offset, step)` into its place in `xb`, then the call writing from `y`.
pub fn call(
    c: &mut String,
    (i, suffix): (usize, &str),
    a: &str,
    w: usize,
    load: &dyn Fn(&str, &str, u32) -> String,
    y: &str,
    indent: &str,
) {
    let at = |j: usize| match (j, a.parse::<usize>()) {
        (0, _) => a.to_string(),
        (j, Ok(a)) => (a + j).to_string(),
        (j, Err(_)) => format!("{a} + {j}"),
    };
    for j in 0..w {
        let _ = writeln!(
            c,
            "{indent}{}",
            load(&at(j), &(2 * j).to_string(), 2 * w as u32)
        );
    }
    let _ = writeln!(c, "{indent}mnet_mm{w}_{suffix}(&L{i}, xb, {y});");
}

impl MmLoop<'_> {
    /// The calls over a chunk of `w` pixels from pixel `a` (an expression).
    fn chunk(&self, c: &mut String, a: &str, w: usize, inner: &str) {
        let y = (self.out)(a);
        call(c, (self.i, self.suffix), a, w, self.load, &y, inner);
    }

    pub fn emit(&self, c: &mut String) {
        let (n, p, ind) = (self.pixels, self.var, self.indent);
        let cs = chunks(n, self.k4, self.max);
        // A loop over the leading run of the widest calls, the rest one
        // call each at constant pixels.
        let wide = cs.first().copied().unwrap_or(1);
        let run = cs.iter().take_while(|&&w| w == wide).count();
        let (looped, rest) = if run >= 2 {
            (run, &cs[run..])
        } else {
            (0, &cs[..])
        };
        let mut starts = Vec::new();
        let mut at = wide * looped;
        for &w in rest {
            starts.push((at, w));
            at += w;
        }
        let inner = format!("{ind}    ");
        let lp = |c: &mut String| {
            if looped == 0 {
                return;
            }
            let _ = writeln!(c, "{ind}int {p};");
            if self.backwards {
                let _ = writeln!(
                    c,
                    "{ind}for ({p} = {}; {p} >= 0; {p} -= {wide}) {{",
                    wide * (looped - 1)
                );
            } else {
                let _ = writeln!(
                    c,
                    "{ind}for ({p} = 0; {p} < {}; {p} += {wide}) {{",
                    wide * looped
                );
            }
            self.chunk(c, p, wide, &inner);
            let _ = writeln!(c, "{ind}}}");
        };
        if self.backwards {
            // Last pixels first (an in-place conv whose outputs are larger).
            for &(a, w) in starts.iter().rev() {
                self.chunk(c, &a.to_string(), w, ind);
            }
            lp(c);
        } else {
            lp(c);
            for &(a, w) in &starts {
                self.chunk(c, &a.to_string(), w, ind);
            }
        }
    }
}

/// The loader of a conv's pixel inputs: `x + p * cin` widened directly, or
/// gathered by `mnet_im2col` at the output pixel `(p / ow, p % ow)` (or at
/// `row` and `p` inside a streamed row).
pub fn loader(
    i: usize,
    kernel: Kernel,
    cin: u32,
    ow: u32,
    zp: i32,
    row: Option<&str>,
) -> impl Fn(&str, &str, u32) -> String {
    let Kernel::Mm { k, direct } = kernel else {
        unreachable!("the matrix kernel")
    };
    let k4 = k.div_ceil(4);
    let nz = nzp(zp);
    let row = row.map(str::to_string);
    move |p: &str, off: &str, step: u32| {
        let buf = if off == "0" {
            "xb".to_string()
        } else {
            format!("xb + {off}")
        };
        if direct {
            let at = match &row {
                Some(r) => format!("x + ({r} * {ow} + {p}) * {cin}"),
                None => format!("x + ({p}) * {cin}"),
            };
            format!("mnet_widen({buf}, {at}, {cin}, {nz}, {step});")
        } else {
            let (oy, ox) = match &row {
                Some(r) => (r.clone(), p.to_string()),
                None => (format!("({p}) / {ow}"), format!("({p}) % {ow}")),
            };
            format!(
                "mnet_im2col(patch, x, &G{i}, {oy}, {ox}, {}); mnet_widen({buf}, patch, {}, {nz}, {step});",
                4 * k4,
                4 * k4
            )
        }
    }
}

/// The stack buffers of conv `i`'s matrix kernel, whose widest call is
/// over `width` pixels ([`widest`]).
pub fn buffers(kernel: Kernel, width: usize) -> String {
    let Kernel::Mm { k, direct } = kernel else {
        unreachable!("the matrix kernel")
    };
    let k4 = k.div_ceil(4);
    if direct {
        format!("uint32_t xb[{}];", 2 * width * k4)
    } else {
        format!(
            "uint32_t xb[{}];\n        int8_t patch[{}];",
            2 * width * k4,
            4 * k4
        )
    }
}

/// The runs of pixels conv `i` computes at once: all its pixels, or the
/// rows of each output row of the depthwise conv it streams into.
pub fn runs(l: &crate::lower::Lowered, plan: &MemoryPlan, i: usize) -> Vec<usize> {
    match plan.fused[i] {
        Some(d) => fused_counts(l, i, d),
        None => vec![(l.nodes[i].shape[0] * l.nodes[i].shape[1]) as usize],
    }
}

/// Groups of 4 inputs per output of conv `i`'s matrix kernel.
pub fn k4_of(l: &crate::lower::Lowered, plan: &MemoryPlan, i: usize) -> usize {
    kernel_of(l, plan, i).map_or(1, |k| k.k().div_ceil(4))
}

/// The widths of the matrix kernel calls of conv `i`.
pub fn widths(
    l: &crate::lower::Lowered,
    plan: &MemoryPlan,
    i: usize,
    max: usize,
) -> std::collections::BTreeSet<usize> {
    let k4 = k4_of(l, plan, i);
    runs(l, plan, i)
        .into_iter()
        .flat_map(|r| chunks(r, k4, max))
        .collect()
}

/// The most pixels of any one matrix kernel call of conv `i`.
pub fn widest(l: &crate::lower::Lowered, plan: &MemoryPlan, i: usize, max: usize) -> usize {
    widths(l, plan, i, max).into_iter().max().unwrap_or(1)
}

/// Bytes of the largest stack buffers of any step's matrix kernel
/// ([`buffers`]: the widened inputs of its widest call, and an im2col
/// patch when it gathers).
pub fn buffer_bytes(l: &crate::lower::Lowered, plan: &MemoryPlan) -> usize {
    (1..l.nodes.len())
        .filter_map(|i| match kernel_of(l, plan, i)? {
            Kernel::Mm { k, direct } => {
                let k4 = k.div_ceil(4);
                Some(8 * widest(l, plan, i, MAX_WIDTH) * k4 + if direct { 0 } else { 4 * k4 })
            }
            Kernel::Dw { .. } => None,
        })
        .max()
        .unwrap_or(0)
}

/// The pixels of conv `cv` each output row of the depthwise conv `dw` it
/// streams into computes, in runs as the C's fused loop runs them: the
/// rows each output row needs next, split where the ring of rows wraps.
pub fn fused_counts(l: &crate::lower::Lowered, cv: usize, dw: usize) -> Vec<usize> {
    let LKind::Depthwise { window } = &l.nodes[dw].kind else {
        unreachable!("fused into a depthwise conv")
    };
    let (hc, wc) = (l.nodes[cv].shape[0] as i64, l.nodes[cv].shape[1] as usize);
    let place = window.over([l.nodes[cv].shape[0], l.nodes[cv].shape[1]]);
    let (ph, oh) = (place.pad[0] as i64, place.out[0] as i64);
    let (k, s) = (window.kernel[0] as i64, window.stride[0] as i64);
    let rows = crate::plan::ring_rows(l, cv, dw) as i64;
    let mut next = 0i64;
    let mut counts = Vec::new();
    for oy in 0..oh {
        let need = (oy * s - ph + k - 1).min(hc - 1);
        // Split where the ring wraps, so that a run's outputs follow each
        // other in the ring.
        while next <= need {
            let last = need.min((next / rows + 1) * rows - 1);
            counts.push((last + 1 - next) as usize * wc);
            next = last + 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 6-pixel calls pay on AD's 16-pixel rows of wide 1x1 convs, not on
    /// KWS's rows of 5, nor where their code would be a large share of a
    /// small network's flash.
    #[test]
    fn six_pixel_calls_pay_where_they_save() {
        let ad = [(vec![16; 16], 69, 276)];
        assert!(six_pays(&ad, 400_000));
        assert!(!six_pays(&ad, 2_000));
        assert!(!six_pays(&[(vec![5; 25], 69, 276)], 400_000));
        assert!(!six_pays(&[], 400_000));
    }

    /// A run's calls cover it, and the C chain the fused loop runs at run
    /// time (compiled with the host's C compiler) makes the same calls.
    #[test]
    fn chunks_cover_runs_and_the_c_chain_agrees() {
        for k4 in [1, 3, 10, 69] {
            for r in 1..=70 {
                for max in [5, 6] {
                    let c = chunks(r, k4, max);
                    assert_eq!(c.iter().sum::<usize>(), r, "{r}: {c:?}");
                    assert!(c.iter().all(|&w| (1..=max).contains(&w)), "{r}: {c:?}");
                }
            }
        }
        // Wider calls are cheaper per pixel: long runs are mostly the
        // widest.
        assert!(chunks(100, 69, 5).iter().filter(|&&w| w == 5).count() >= 18);
        assert!(chunks(100, 69, 6).iter().filter(|&&w| w == 6).count() >= 15);
        let runs = [5, 16, 32, 10, 25, 7, 1, 2, 13];
        let k4 = 12;
        let at = chain(&runs, k4, MAX_WIDTH);
        let mut src = String::from("#include <stdio.h>\nstatic int pick(int r) {\n");
        for (w, lefts) in &at {
            let _ = writeln!(src, "    if ({}) return {w};", chain_condition(lefts, "r"));
        }
        src.push_str("    return 0;\n}\nint main(void) {\n");
        let _ = writeln!(
            src,
            "    static const int runs[] = {{{}}};\n    unsigned i;",
            runs.map(|r| r.to_string()).join(", ")
        );
        src.push_str("    for (i = 0; i < sizeof runs / sizeof runs[0]; ++i) {\n        int q = 0;\n        while (q < runs[i]) {\n            const int w = pick(runs[i] - q);\n            if (w == 0) return 1;\n            printf(\"%d \", w);\n            q += w;\n        }\n        printf(\"| \");\n    }\n    return 0;\n}\n");
        let dir = std::env::temp_dir().join(format!("mnet-pick-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pick.c"), &src).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
        let built = std::process::Command::new(&cc)
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(dir.join("pick"))
            .arg(dir.join("pick.c"))
            .status()
            .expect("a host C compiler");
        assert!(built.success(), "{src}");
        let out = std::process::Command::new(dir.join("pick"))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{src}");
        let want: String = runs
            .iter()
            .map(|&r| {
                chunks(r, k4, MAX_WIDTH)
                    .iter()
                    .map(|w| format!("{w} "))
                    .collect::<String>()
                    + "| "
            })
            .collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }
}
