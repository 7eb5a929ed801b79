//! The C backend's kernels for cores with the Armv7E-M DSP extension
//! (Cortex-M4, M7, M33, M55): int8 operands widened to packed 16-bit pairs
//! with the zero point subtracted on the way (`SXTAB16`), multiplied and
//! accumulated two at a time (`SMLAD`) or one lane each (`SMLABB`/`SMLATT`),
//! requantized with `SMMULR` where the arithmetic allows. Under
//! `__ARM_FEATURE_DSP` they use `<arm_acle.h>`; elsewhere the same
//! operations are written in portable C, which gives the same bits (every
//! intermediate is an exact integer in both), so the host build of the C
//! is the same program as the device build.
//!
//! Convolutions are one matrix kernel over two output pixels at a time
//! (`mnet_mm2`, and `mnet_mm1` for an odd last pixel): each pixel's inputs
//! (its receptive field, gathered by `mnet_im2col` unless a 1x1 conv reads
//! them in place) widened into a small stack buffer, weights reordered at
//! compile time so that a pair of output channels is one 8-byte load per
//! four inputs. Depthwise convs are `mnet_dw_row`: one output row from
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
#else
#define MNET_NOINLINE
#endif
static inline uint32_t mnet_load32(const int8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* MultiplyByQuantizedMultiplier for a right shift r >= 1, plus the output
 * zero point: nz = 2^(r-1) + (zp << r). SMMULR of 2 acc is SRDHM's
 * rounding for every product (the compiler checked that 2 acc and the sum
 * below cannot overflow for this layer), and (h + (h >> 31) + 2^(r-1)) >> r
 * is RoundingDivideByPOT. */
static inline int32_t mnet_rq(int32_t acc, int32_t m, int32_t r, int32_t nz) {
    const int32_t h = mnet_smmulr((int32_t)((uint32_t)acc << 1), m);
    return (h + (h >> 31) + nz) >> r;
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

/// One step of the two-pixel inner loop in Thumb-2: four inputs of both
/// pixels against four weights of both output channels, 16 MACs.
const MM2_STEP: &str = r#"
                "ldmia %[xp]!, {%[x0], %[x1], %[x2], %[x3]}\n\t"
                "ldrd %[w0], %[w1], [%[wp]], #8\n\t"
                "sxtb16 %[t], %[w0]\n\t"
                "smlad %[a00], %[x0], %[t], %[a00]\n\t"
                "smlad %[a10], %[x2], %[t], %[a10]\n\t"
                "sxtb16 %[w0], %[w0], ror #8\n\t"
                "smlad %[a00], %[x1], %[w0], %[a00]\n\t"
                "smlad %[a10], %[x3], %[w0], %[a10]\n\t"
                "sxtb16 %[t], %[w1]\n\t"
                "smlad %[a01], %[x0], %[t], %[a01]\n\t"
                "smlad %[a11], %[x2], %[t], %[a11]\n\t"
                "sxtb16 %[w1], %[w1], ror #8\n\t"
                "smlad %[a01], %[x1], %[w1], %[a01]\n\t"
                "smlad %[a11], %[x3], %[w1], %[a11]\n\t""#;

/// The one-pixel step: four inputs against four weights of two channels.
const MM1_STEP: &str = r#"
                "ldrd %[x0], %[x1], [%[xp]], #8\n\t"
                "ldrd %[w0], %[w1], [%[wp]], #8\n\t"
                "sxtb16 %[t], %[w0]\n\t"
                "smlad %[a0], %[x0], %[t], %[a0]\n\t"
                "sxtb16 %[w0], %[w0], ror #8\n\t"
                "smlad %[a0], %[x1], %[w0], %[a0]\n\t"
                "sxtb16 %[t], %[w1]\n\t"
                "smlad %[a1], %[x0], %[t], %[a1]\n\t"
                "sxtb16 %[w1], %[w1], ror #8\n\t"
                "smlad %[a1], %[x1], %[w1], %[a1]\n\t""#;

/// A loop of `k` steps, unrolled twice (an odd first step alone).
fn asm_loop(step: &str) -> String {
    format!(
        "\n                \"tst %[k], #1\\n\\t\"\n                \"beq 2f\\n\\t\"{step}\n                \"2:\\n\\t\"\n                \"lsrs %[k], %[k], #1\\n\\t\"\n                \"beq 3f\\n\\t\"\n                \"1:\\n\\t\"{step}{step}\n                \"subs %[k], %[k], #1\\n\\t\"\n                \"bne 1b\\n\\t\"\n                \"3:\\n\\t\""
    )
}

/// The matrix kernels of one variant: the two-pixel one, the one-pixel one
/// or both.
pub fn mm(v: Variant, two: bool, one: bool) -> String {
    let s = v.suffix();
    let mut out = String::new();
    if two {
        let _ = write!(
            out,
            r#"
/* Outputs of two pixels (y0, y1) for every output channel: x holds their
 * widened inputs, interleaved per 4 (x0 of pixel 0, then of pixel 1). */
static void mnet_mm2_{s}(const struct mnet_mm *L, const uint32_t *x, int8_t *y0, int8_t *y1) {{
    const int32_t *p = L->p;
    const int8_t *const rs = L->r;
    const int8_t *w = L->w;
    const int k4 = L->k4, cout = L->cout;
    const int32_t zp = L->zp, lo = L->lo, hi = L->hi;
    const int8_t *rp = rs;
    int n;
    (void)rs;
    (void)zp;
    (void)lo;
    (void)hi;
    for (n = cout >> 1; n > 0; --n, p += 6, rp += 2, y0 += 2, y1 += 2) {{
        const uint32_t *xp = x;
        int32_t a00 = p[0], a01 = p[3];
        int32_t a10 = a00, a11 = a01;
        int k = k4;
#if defined(MNET_DSP_ASM)
        {{
            /* ldmia needs its registers in ascending order. */
            register uint32_t x0 __asm("r8"), x1 __asm("r9"), x2 __asm("r10"), x3 __asm("r11");
            uint32_t w0, w1, t;
            __asm volatile({body}
                : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11),
                  [xp] "+r"(xp), [wp] "+r"(w), [k] "+r"(k), [x0] "=&r"(x0), [x1] "=&r"(x1),
                  [x2] "=&r"(x2), [x3] "=&r"(x3), [w0] "=&r"(w0), [w1] "=&r"(w1), [t] "=&r"(t)
                :
                : "cc", "memory");
        }}
#else
        do {{
            const uint32_t w0 = mnet_load32(w), w1 = mnet_load32(w + 4);
            const uint32_t x0a = xp[0], x0b = xp[1], x1a = xp[2], x1b = xp[3];
            uint32_t wa = mnet_sxtb16(w0), wb = mnet_sxtb16_ror8(w0);
            a00 = mnet_smlad(x0a, wa, a00);
            a00 = mnet_smlad(x0b, wb, a00);
            a10 = mnet_smlad(x1a, wa, a10);
            a10 = mnet_smlad(x1b, wb, a10);
            wa = mnet_sxtb16(w1);
            wb = mnet_sxtb16_ror8(w1);
            a01 = mnet_smlad(x0a, wa, a01);
            a01 = mnet_smlad(x0b, wb, a01);
            a11 = mnet_smlad(x1a, wa, a11);
            a11 = mnet_smlad(x1b, wb, a11);
            xp += 4;
            w += 8;
        }} while (--k);
#endif
        {{
            const int32_t m = p[1], q = p[2], r = rp[0];
            (void)r;
            y0[0] = {o00};
            y1[0] = {o10};
        }}
        {{
            const int32_t m = p[4], q = p[5], r = rp[1];
            (void)r;
            y0[1] = {o01};
            y1[1] = {o11};
        }}
    }}
    if (cout & 1) {{
        const uint32_t *xp = x;
        int32_t a0 = p[0], a1 = a0;
        int k = k4;
        do {{
            const uint32_t w0 = mnet_load32(w);
            const uint32_t wa = mnet_sxtb16(w0), wb = mnet_sxtb16_ror8(w0);
            a0 = mnet_smlad(xp[0], wa, a0);
            a0 = mnet_smlad(xp[1], wb, a0);
            a1 = mnet_smlad(xp[2], wa, a1);
            a1 = mnet_smlad(xp[3], wb, a1);
            xp += 4;
            w += 4;
        }} while (--k);
        y0[0] = {o0};
        y1[0] = {o1};
    }}
}}
"#,
            body = asm_loop(MM2_STEP),
            o00 = v.out_of("a00", "m", "q", "r"),
            o10 = v.out_of("a10", "m", "q", "r"),
            o01 = v.out_of("a01", "m", "q", "r"),
            o11 = v.out_of("a11", "m", "q", "r"),
            o0 = v.out_of("a0", "p[1]", "p[2]", "rp[0]"),
            o1 = v.out_of("a1", "p[1]", "p[2]", "rp[0]"),
        );
    }
    if one {
        let _ = write!(
            out,
            r#"
/* Outputs of one pixel: x holds its widened inputs (2 words per 4). */
static void mnet_mm1_{s}(const struct mnet_mm *L, const uint32_t *x, int8_t *y) {{
    const int32_t *p = L->p;
    const int8_t *const rs = L->r;
    const int8_t *w = L->w;
    const int k4 = L->k4, cout = L->cout;
    const int32_t zp = L->zp, lo = L->lo, hi = L->hi;
    int oc;
    (void)rs;
    (void)zp;
    (void)lo;
    (void)hi;
    for (oc = 0; oc + 2 <= cout; oc += 2, p += 6) {{
        const uint32_t *xp = x;
        int32_t a0 = p[0], a1 = p[3];
        int k = k4;
#if defined(MNET_DSP_ASM)
        {{
            uint32_t x0, x1, w0, w1, t;
            __asm volatile({body}
                : [a0] "+r"(a0), [a1] "+r"(a1), [xp] "+r"(xp), [wp] "+r"(w), [k] "+r"(k),
                  [x0] "=&r"(x0), [x1] "=&r"(x1), [w0] "=&r"(w0), [w1] "=&r"(w1), [t] "=&r"(t)
                :
                : "cc", "memory");
        }}
#else
        do {{
            const uint32_t w0 = mnet_load32(w), w1 = mnet_load32(w + 4);
            const uint32_t xa = xp[0], xb = xp[1];
            a0 = mnet_smlad(xa, mnet_sxtb16(w0), a0);
            a0 = mnet_smlad(xb, mnet_sxtb16_ror8(w0), a0);
            a1 = mnet_smlad(xa, mnet_sxtb16(w1), a1);
            a1 = mnet_smlad(xb, mnet_sxtb16_ror8(w1), a1);
            xp += 2;
            w += 8;
        }} while (--k);
#endif
        y[oc] = {p0};
        y[oc + 1] = {p1};
    }}
    if (oc < cout) {{
        const uint32_t *xp = x;
        int32_t a0 = p[0];
        int k = k4;
        do {{
            const uint32_t w0 = mnet_load32(w);
            a0 = mnet_smlad(xp[0], mnet_sxtb16(w0), a0);
            a0 = mnet_smlad(xp[1], mnet_sxtb16_ror8(w0), a0);
            xp += 2;
            w += 4;
        }} while (--k);
        y[oc] = {p0};
    }}
}}
"#,
            body = asm_loop(MM1_STEP),
            p0 = v.out("a0", "p", "oc"),
            p1 = v.out("a1", "p + 3", "oc + 1"),
        );
    }
    out
}

/// The Thumb-2 body of a 3x3 window's taps of 4 channels with all rows and
/// `cols` (3, or 2 at the first or last column) columns: per tap one input
/// word (the row's last tap steps the row pointer to the next 4 channels),
/// widened minus the zero point, against the tap's two weight words; the
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
                format!("ldr %[w], [%[wp], #{}]", t * 8),
                "sxtab16 %[xa], %[nzp], %[xv]".into(),
                "sxtab16 %[xv], %[nzp], %[xv], ror #8".into(),
                "smlabb %[a0], %[xa], %[w], %[a0]".into(),
                "smlatt %[a2], %[xa], %[w], %[a2]".into(),
                format!("ldr %[w], [%[wp], #{}]", t * 8 + 4),
                "smlabb %[a1], %[xv], %[w], %[a1]".into(),
                "smlatt %[a3], %[xv], %[w], %[a3]".into(),
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
                          [w] "=&r"(w)
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
                uint32_t xv, xa, w;
                if (n == 3) {{
                    {a3}
                }} else {{
                    {a2}
                }}
                y[ch] = {o0};
                y[ch + 1] = {o1};
                y[ch + 2] = {o2};
                y[ch + 3] = {o3};
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

/// A conv's weights (`[out][k]`) in the matrix kernel's order: pairs of
/// output channels interleaved per 4 inputs, k padded with zeros to groups
/// of 4, an odd last channel alone.
pub fn mm_weights(w: &[i8], cout: usize, k: usize) -> Vec<i8> {
    let k4 = k.div_ceil(4);
    let at = |oc: usize, j: usize| if j < k { w[oc * k + j] } else { 0 };
    let mut out = Vec::with_capacity(cout * k4 * 4);
    let mut oc = 0;
    while oc + 2 <= cout {
        for g in 0..k4 {
            for o in [oc, oc + 1] {
                out.extend((0..4).map(|j| at(o, 4 * g + j)));
            }
        }
        oc += 2;
    }
    if oc < cout {
        for g in 0..k4 {
            out.extend((0..4).map(|j| at(oc, 4 * g + j)));
        }
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
/// kernel: `pixels` output pixels, pixel `p`'s inputs loaded by `load(p,
/// offset, step)`, written at `out(p)`; pairs first, or last to first when
/// `backwards` (an in-place conv whose output pixels are larger).
pub struct MmLoop<'a> {
    pub i: usize,
    pub suffix: &'static str,
    pub pixels: usize,
    pub load: &'a dyn Fn(&str, &str, u32) -> String,
    pub out: &'a dyn Fn(&str) -> String,
    pub backwards: bool,
    pub var: &'a str,
    pub indent: &'a str,
}

impl MmLoop<'_> {
    pub fn emit(&self, c: &mut String) {
        let (i, s, n, p, ind) = (self.i, self.suffix, self.pixels, self.var, self.indent);
        let pair = |c: &mut String, a: &str, b: &str, inner: &str| {
            let _ = writeln!(c, "{inner}{}", (self.load)(a, "0", 4));
            let _ = writeln!(c, "{inner}{}", (self.load)(b, "2", 4));
            let _ = writeln!(
                c,
                "{inner}mnet_mm2_{s}(&L{i}, xb, {}, {});",
                (self.out)(a),
                (self.out)(b)
            );
        };
        let single = |c: &mut String, a: &str, inner: &str| {
            let _ = writeln!(c, "{inner}{}", (self.load)(a, "0", 2));
            let _ = writeln!(c, "{inner}mnet_mm1_{s}(&L{i}, xb, {});", (self.out)(a));
        };
        if n == 1 {
            single(c, "0", ind);
            return;
        }
        let inner = format!("{ind}    ");
        let _ = writeln!(c, "{ind}int {p};");
        if self.backwards {
            let _ = writeln!(c, "{ind}for ({p} = {n}; {p} >= 2; {p} -= 2) {{");
            pair(c, &format!("{p} - 2"), &format!("{p} - 1"), &inner);
            let _ = writeln!(c, "{ind}}}");
            if n % 2 == 1 {
                single(c, "0", ind);
            }
        } else {
            let _ = writeln!(c, "{ind}for ({p} = 0; {p} + 2 <= {n}; {p} += 2) {{");
            pair(c, p, &format!("{p} + 1"), &inner);
            let _ = writeln!(c, "{ind}}}");
            if n % 2 == 1 {
                single(c, &(n - 1).to_string(), ind);
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

/// The stack buffers of conv `i`'s matrix kernel.
pub fn buffers(kernel: Kernel) -> String {
    let Kernel::Mm { k, direct } = kernel else {
        unreachable!("the matrix kernel")
    };
    let k4 = k.div_ceil(4);
    if direct {
        format!("uint32_t xb[{}];", 4 * k4)
    } else {
        format!(
            "uint32_t xb[{}];\n        int8_t patch[{}];",
            4 * k4,
            4 * k4
        )
    }
}

/// Bytes of the largest stack buffers of any step's matrix kernel
/// ([`buffers`]: two pixels' widened inputs, and an im2col patch when it
/// gathers).
pub fn buffer_bytes(l: &crate::lower::Lowered, plan: &MemoryPlan) -> usize {
    (1..l.nodes.len())
        .filter_map(|i| match kernel_of(l, plan, i)? {
            Kernel::Mm { k, direct } => {
                let k4 = k.div_ceil(4);
                Some(16 * k4 + if direct { 0 } else { 4 * k4 })
            }
            Kernel::Dw { .. } => None,
        })
        .max()
        .unwrap_or(0)
}

/// The pixels of conv `cv` each output row of the depthwise conv `dw` it
/// streams into computes (the rows it needs next, as the C's fused loop
/// runs them; 0 when none are due).
pub fn fused_counts(l: &crate::lower::Lowered, cv: usize, dw: usize) -> Vec<usize> {
    let LKind::Depthwise { window } = &l.nodes[dw].kind else {
        unreachable!("fused into a depthwise conv")
    };
    let (hc, wc) = (l.nodes[cv].shape[0] as i64, l.nodes[cv].shape[1] as usize);
    let place = window.over([l.nodes[cv].shape[0], l.nodes[cv].shape[1]]);
    let (ph, oh) = (place.pad[0] as i64, place.out[0] as i64);
    let (k, s) = (window.kernel[0] as i64, window.stride[0] as i64);
    let mut next = 0i64;
    let mut counts = Vec::new();
    for oy in 0..oh {
        let need = (oy * s - ph + k - 1).min(hc - 1);
        if next <= need {
            counts.push((need + 1 - next) as usize * wc);
            next = need + 1;
        }
    }
    counts
}
