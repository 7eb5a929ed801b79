//! The ahead-of-time C backend: `NAME.h` and `NAME.c`, no interpreter.
//!
//! Every layer becomes a loop nest with its shapes, strides, zero points and
//! clamps as literals; weights, biases and requantization multipliers are
//! `static const`, 16-byte aligned arrays; activations live in one static
//! arena laid out by [`crate::plan`], whose table is printed as a comment.
//! The arithmetic is the reference interpreter's ([`crate::exec::interp`]),
//! which is TFLM's: the C output is bit-identical to both. C99, only
//! `<stdint.h>` and `<string.h>`, no allocation.

use super::dsp;
use crate::exec::interp::Prepared;
use crate::lower::{LKind, QuantGraph};
use crate::ops::PoolKind;
use crate::plan::{CheckedPlan, MemoryPlan, Place};
use std::fmt::Write;

/// Why a network cannot be written as C.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("`{name}` has {elems} elements, more than a C `int` indexes")]
    TooLarge { name: String, elems: u64 },
}

/// The core the C is for: it chooses the kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cpu {
    /// No DSP extension (Cortex-M0/M0+/M3, or any host): one plain loop
    /// nest a layer.
    Generic,
    /// Cores with the Armv7E-M DSP extension: packed 16-bit kernels
    /// ([`super::dsp`]), portable C where the extension is absent.
    #[default]
    CortexM4,
    CortexM7,
    CortexM33,
    CortexM55,
}

impl Cpu {
    /// All of them, by name.
    pub const ALL: [Cpu; 5] = [
        Cpu::Generic,
        Cpu::CortexM4,
        Cpu::CortexM7,
        Cpu::CortexM33,
        Cpu::CortexM55,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cpu::Generic => "generic",
            Cpu::CortexM4 => "cortex-m4",
            Cpu::CortexM7 => "cortex-m7",
            Cpu::CortexM33 => "cortex-m33",
            Cpu::CortexM55 => "cortex-m55",
        }
    }

    /// The cpu of a name (`cortex-m4`) or a board's core (`cortex_m4`);
    /// the cores without the DSP extension are `generic`.
    pub fn parse(name: &str) -> Option<Cpu> {
        let n = name.replace('_', "-").to_ascii_lowercase();
        match n.as_str() {
            "cortex-m0" | "cortex-m0plus" | "cortex-m0+" | "cortex-m1" | "cortex-m3"
            | "cortex-m23" => Some(Cpu::Generic),
            _ => Cpu::ALL.into_iter().find(|c| c.name() == n),
        }
    }

    /// Whether the DSP kernels are used.
    pub fn dsp(self) -> bool {
        self != Cpu::Generic
    }
}

/// Bytes of stack `NAME_invoke` may use on `cpu`, without a build: the
/// loop nests' frames (100-124 B measured on a Cortex-M4) rounded up to
/// 256, or, with the DSP kernels, 400 B of frames (276-324 B measured on
/// the MicroNets and `tiny`) plus the largest matrix kernel's stack
/// buffers ([`dsp::buffer_bytes`]). What the search allows for stack in
/// the SRAM budget; `mnet compile` measures the real figure with the cross
/// compiler.
pub fn stack_estimate(l: &crate::lower::Lowered, plan: &MemoryPlan, cpu: Cpu) -> u64 {
    if cpu.dsp() {
        400 + dsp::buffer_bytes(l, plan) as u64
    } else {
        256
    }
}

/// Most taps of a depthwise window the in-place kernel unrolls (5x5).
const MAX_UNROLLED_TAPS: usize = 25;

/// Options of the C backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Replace constant array contents by their length and a hash (for
    /// snapshots that stay reviewable).
    pub summarize_constants: bool,
    /// Declare the constant arrays `extern` instead of defining them: the
    /// same code without the data, which compiles in milliseconds (the
    /// memory report measures code and stack on it).
    pub extern_constants: bool,
    /// The kernels' core.
    pub cpu: Cpu,
    /// Requantize every DSP layer with the exact gemmlowp helpers and
    /// clamp every output to its activation's bounds, instead of the
    /// fastest arithmetic the compiler proves exact (the same outputs,
    /// slower: for tests and comparisons).
    pub exact_requant: bool,
}

/// The generated files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CFiles {
    pub header: String,
    pub source: String,
    /// Bytes of the constant arrays (weights, biases, requantization,
    /// lookup tables) in flash.
    pub constant_bytes: usize,
}

/// Write a constant array; its bytes in flash.
pub(crate) fn array<T: std::fmt::Display + Copy>(
    out: &mut String,
    ctype: &str,
    name: &str,
    values: &[T],
    bytes: impl IntoIterator<Item = u8>,
    opts: Options,
) -> usize {
    let size = values.len().max(1) * std::mem::size_of::<T>();
    if opts.extern_constants {
        let _ = writeln!(out, "extern const {ctype} {name}[{}];", values.len().max(1));
        return size;
    }
    let _ = write!(
        out,
        "static const {ctype} {name}[{}] MNET_ALIGN = {{",
        values.len().max(1)
    );
    if opts.summarize_constants {
        let _ = writeln!(
            out,
            " /* {} values, fnv1a64 {:016x} */ }};",
            values.len(),
            crate::fnv1a(bytes)
        );
        return size;
    }
    for (i, v) in values.iter().enumerate() {
        if i % 24 == 0 {
            out.push_str("\n    ");
        }
        let _ = write!(out, "{v},");
    }
    if values.is_empty() {
        out.push('0');
    }
    out.push_str("\n};\n");
    size
}

pub(crate) fn ptr(p: Place) -> String {
    match p {
        Place::Input => "input".to_string(),
        Place::Output => "output".to_string(),
        Place::Arena { offset } => format!("(mnet_arena + {offset})"),
    }
}

const ALIGN: &str = r#"#if defined(__GNUC__)
#define MNET_ALIGN __attribute__((aligned(16)))
#else
#define MNET_ALIGN
#endif
"#;

/// The optional per-step hook (profiling on the device, the emulator's
/// per-layer instruction counts).
const LAYER_HOOK: &str = r#"
/* Build with -DMNET_LAYER_HOOK=f to have `void f(int step)` called after
 * each step (the step numbers are those of the comments below). */
#ifdef MNET_LAYER_HOOK
void MNET_LAYER_HOOK(int step);
#define MNET_STEP_DONE(step) MNET_LAYER_HOOK(step)
#else
#define MNET_STEP_DONE(step) ((void)0)
#endif
"#;

/// SaturatingRoundingDoublingHighMul and RoundingDivideByPOT.
const FIXED_POINT: &str = r#"
/* TFLM fixed-point arithmetic (gemmlowp double rounding). */
static inline int32_t mnet_srdhm(int32_t a, int32_t b) {
    int64_t ab;
    int64_t nudge;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static inline int32_t mnet_rdbpot(int32_t x, int e) {
    const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
    const int32_t rem = x & mask;
    const int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > thr ? 1 : 0);
}
"#;

/// MultiplyByQuantizedMultiplier.
const MBQM: &str = r#"
static inline int32_t mnet_mbqm(int32_t x, int32_t m, int s) {
    const int left = s > 0 ? s : 0;
    const int right = s > 0 ? 0 : -s;
    return mnet_rdbpot(mnet_srdhm((int32_t)((uint32_t)x << left), m), right);
}
"#;

const CLAMP: &str = r#"
static inline int8_t mnet_clamp(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}
"#;

/// The helpers a network's code calls (C warns of unused static ones).
fn prelude(l: &crate::lower::Lowered) -> String {
    let (mut mbqm, mut fixed, mut clamp) = (false, false, false);
    for n in &l.nodes {
        let (m, f, c) = match n.kind {
            LKind::Conv { .. } | LKind::Depthwise { .. } => (true, true, true),
            LKind::Add | LKind::Softmax => (false, true, true),
            LKind::Mean => (true, true, true),
            LKind::Pool { .. } => (false, false, true),
            LKind::Input
            | LKind::Concat
            | LKind::Pad { .. }
            | LKind::Reshape
            | LKind::Act(_)
            | LKind::Requantize => (false, false, false),
        };
        (mbqm, fixed, clamp) = (mbqm || m, fixed || f, clamp || c);
    }
    let mut out = ALIGN.to_string();
    for (needed, text) in [(fixed, FIXED_POINT), (mbqm, MBQM), (clamp, CLAMP)] {
        if needed {
            out.push_str(text);
        }
    }
    out
}

const SOFTMAX: &str = r#"
static int32_t mnet_sat_shl(int32_t v, int e) {
    const int64_t limit = ((int64_t)1 << (31 - e)) - 1;
    if ((int64_t)v > limit) {
        return INT32_MAX;
    }
    if ((int64_t)v < -limit) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)v << e);
}

static int32_t mnet_exp_on_negative(int32_t v) {
    static const int32_t k[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t q = (int32_t)1 << 24;
    int32_t vm, rem, x, x2, x3, x4, poly, r;
    int bit;
    if (v == 0) {
        return INT32_MAX;
    }
    vm = (v & (q - 1)) - q;
    rem = (int32_t)((uint32_t)vm - (uint32_t)v);
    x = (int32_t)((uint32_t)vm << 5) + ((int32_t)1 << 28);
    x2 = mnet_srdhm(x, x);
    x3 = mnet_srdhm(x2, x);
    x4 = mnet_srdhm(x2, x2);
    poly = x + mnet_rdbpot(mnet_srdhm(mnet_rdbpot(x4, 2) + x3, 715827883) + x2, 1);
    r = 1895147668 + mnet_srdhm(1895147668, poly);
    for (bit = 24; bit <= 30; ++bit) {
        if (rem & ((int32_t)1 << bit)) {
            r = mnet_srdhm(r, k[bit - 24]);
        }
    }
    return r;
}

static int32_t mnet_one_over_one_plus_x(int32_t v) {
    const int64_t sum = (int64_t)v + INT32_MAX;
    const int32_t half = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = (int32_t)((uint32_t)1515870810 + (uint32_t)mnet_srdhm(half, -1010580540));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t hx = mnet_srdhm(half, x);
        const int32_t one_minus = (int32_t)(((uint32_t)1 << 29) - (uint32_t)hx);
        x = (int32_t)((uint32_t)x + (uint32_t)mnet_sat_shl(mnet_srdhm(x, one_minus), 2));
    }
    return mnet_sat_shl(x, 1);
}

static int mnet_clz32(uint32_t v) {
    int n = 0;
    if (v == 0) {
        return 32;
    }
    while (!(v & 0x80000000u)) {
        v <<= 1;
        ++n;
    }
    return n;
}

static void mnet_softmax_row(const int8_t *x, int8_t *y, int n, int32_t mult, int shift, int32_t diff_min) {
    int32_t mx = x[0];
    int32_t sum = 0;
    int headroom, bits, i;
    int32_t scale;
    for (i = 1; i < n; ++i) {
        mx = x[i] > mx ? x[i] : mx;
    }
    for (i = 0; i < n; ++i) {
        const int32_t d = x[i] - mx;
        if (d >= diff_min) {
            sum = (int32_t)((uint32_t)sum + (uint32_t)mnet_rdbpot(mnet_exp_on_negative(mnet_srdhm((int32_t)((uint32_t)d << shift), mult)), 12));
        }
    }
    headroom = mnet_clz32((uint32_t)sum);
    scale = mnet_one_over_one_plus_x((int32_t)(((int64_t)sum << headroom) - ((int64_t)1 << 31)));
    bits = 12 - headroom + 23;
    for (i = 0; i < n; ++i) {
        const int32_t d = x[i] - mx;
        if (d >= diff_min) {
            const int32_t e = mnet_exp_on_negative(mnet_srdhm((int32_t)((uint32_t)d << shift), mult));
            y[i] = mnet_clamp(mnet_rdbpot(mnet_srdhm(scale, e), bits) - 128, -128, 127);
        } else {
            y[i] = -128;
        }
    }
}
"#;

/// `need`: the last conv row the depthwise window of output row `oy` reads
/// (stride `s`, padding `pad`, kernel height `k`, `h` conv rows).
fn need_row(c: &mut String, s: u32, pad: u32, k: u32, h: u32) {
    let _ = writeln!(
        c,
        "            int need = oy * {s} - {pad} + {};\n            if (need > {}) need = {};",
        k - 1,
        h - 1,
        h - 1
    );
}

/// A conv `cv` streamed into the depthwise conv `dw` that reads it: conv
/// output rows are computed when the depthwise window first needs them, into
/// a ring of `ring_rows` rows, so the conv's full output never exists.
fn fused_conv_depthwise(
    c: &mut String,
    q: &QuantGraph,
    prep: &[Prepared],
    plan: &MemoryPlan,
    cv: usize,
    dw: usize,
) {
    let l = &q.lowered;
    let (conv, depth) = (&l.nodes[cv], &l.nodes[dw]);
    let (LKind::Conv { window: cw, .. }, LKind::Depthwise { window: dwin }) =
        (&conv.kind, &depth.kind)
    else {
        unreachable!("a fused pair is conv then depthwise")
    };
    let (
        Prepared::Weighted {
            act_min: cmin,
            act_max: cmax,
            ..
        },
        Prepared::Weighted {
            act_min: dmin,
            act_max: dmax,
            ..
        },
    ) = (&prep[cv], &prep[dw])
    else {
        unreachable!("weighted layers")
    };
    let x_shape = &l.nodes[conv.inputs[0]].shape;
    let (xh, xw, xc) = (x_shape[0], x_shape[1], x_shape[2]);
    let (hc, wc, cc) = (conv.shape[0], conv.shape[1], conv.shape[2]);
    let (ck, cs, dk, ds) = (cw.kernel, cw.stride, dwin.kernel, dwin.stride);
    let cplace = cw.over([xh, xw]);
    let (cph, cpw) = (cplace.pad[0], cplace.pad[1]);
    let dplace = dwin.over([hc, wc]);
    let ([dph, dpw], [doh, dow]) = (dplace.pad, dplace.out);
    let rows = crate::plan::ring_rows(l, cv, dw);
    let Place::Arena { offset: ring } = plan.places[cv] else {
        unreachable!("a ring lives in the arena")
    };
    let (x_zp, c_zp, d_zp) = (
        q.qparams[conv.inputs[0]].zero_point,
        q.qparams[cv].zero_point,
        q.qparams[dw].zero_point,
    );
    let _ = writeln!(
        c,
        "        /* fused with {}: a ring of {rows} rows of [{wc}, {cc}] at arena offset {ring} */",
        conv.name
    );
    let _ = writeln!(c, "        const int8_t *x = {};\n        int8_t *ring = mnet_arena + {ring};\n        int8_t *y = {};", ptr(plan.places[conv.inputs[0]]), ptr(plan.places[dw]));
    c.push_str("        int next = 0, oy, ox, oc, ky, kx, ch;\n");
    let _ = writeln!(c, "        for (oy = 0; oy < {doh}; ++oy) {{");
    need_row(c, ds[0], dph, dk[0], hc);
    c.push_str("            for (; next <= need; ++next) {\n");
    let _ = writeln!(
        c,
        "                int8_t *row = ring + (next % {rows}) * {};",
        wc * cc
    );
    let _ = writeln!(
        c,
        "                const int iy0 = next * {} - {cph};",
        cs[0]
    );
    let _ = writeln!(c, "                for (ox = 0; ox < {wc}; ++ox) {{\n                    const int ix0 = ox * {} - {cpw};", cs[1]);
    let _ = writeln!(c, "                    for (oc = 0; oc < {cc}; ++oc) {{\n                        int32_t acc = b{cv}[oc];");
    let _ = writeln!(c, "                        for (ky = 0; ky < {}; ++ky) {{\n                            const int iy = iy0 + ky;\n                            if (iy < 0 || iy >= {xh}) continue;", ck[0]);
    let _ = writeln!(c, "                            for (kx = 0; kx < {}; ++kx) {{\n                                const int ix = ix0 + kx;\n                                if (ix < 0 || ix >= {xw}) continue;", ck[1]);
    let _ = writeln!(c, "                                {{\n                                    const int8_t *xp = x + (iy * {xw} + ix) * {xc};");
    let _ = writeln!(c, "                                    const int8_t *wp = w{cv} + ((oc * {} + ky) * {} + kx) * {xc};", ck[0], ck[1]);
    let _ = writeln!(c, "                                    int ic;\n                                    for (ic = 0; ic < {xc}; ++ic) acc += wp[ic] * (xp[ic] - ({x_zp}));\n                                }}");
    c.push_str("                            }\n                        }\n");
    let _ = writeln!(c, "                        row[ox * {cc} + oc] = mnet_clamp(mnet_mbqm(acc, m{cv}[oc], s{cv}[oc]) + ({c_zp}), {cmin}, {cmax});");
    c.push_str("                    }\n                }\n            }\n");
    let _ = writeln!(c, "            for (ox = 0; ox < {dow}; ++ox) {{\n                for (ch = 0; ch < {cc}; ++ch) {{\n                    int32_t acc = b{dw}[ch];");
    let _ = writeln!(c, "                    for (ky = 0; ky < {}; ++ky) {{\n                        const int iy = oy * {} - {dph} + ky;\n                        if (iy < 0 || iy >= {hc}) continue;", dk[0], ds[0]);
    let _ = writeln!(c, "                        for (kx = 0; kx < {}; ++kx) {{\n                            const int ix = ox * {} - {dpw} + kx;\n                            if (ix < 0 || ix >= {wc}) continue;", dk[1], ds[1]);
    let _ = writeln!(c, "                            acc += w{dw}[(ky * {} + kx) * {cc} + ch] * (ring[((iy % {rows}) * {wc} + ix) * {cc} + ch] - ({c_zp}));", dk[1]);
    c.push_str("                        }\n                    }\n");
    let _ = writeln!(c, "                    y[(oy * {dow} + ox) * {cc} + ch] = mnet_clamp(mnet_mbqm(acc, m{dw}[ch], s{dw}[ch]) + ({d_zp}), {dmin}, {dmax});");
    c.push_str("                }\n            }\n        }\n");
}

/// The DSP kernels' version of [`fused_conv_depthwise`]: each conv row the
/// depthwise window needs next is computed by the matrix kernel into the
/// ring, then the depthwise row kernel reads the window's rows there.
#[allow(clippy::too_many_arguments)]
fn fused_dsp(
    c: &mut String,
    q: &QuantGraph,
    plan: &MemoryPlan,
    cv: usize,
    dw: usize,
    ck: dsp::Kernel,
    cvar: dsp::Variant,
    dvar: dsp::Variant,
    six: bool,
) {
    let l = &q.lowered;
    let (conv, depth) = (&l.nodes[cv], &l.nodes[dw]);
    let (LKind::Conv { .. }, LKind::Depthwise { window: dwin }) = (&conv.kind, &depth.kind) else {
        unreachable!("a fused pair is conv then depthwise")
    };
    let x_shape = &l.nodes[conv.inputs[0]].shape;
    let (hc, wc, cc) = (conv.shape[0], conv.shape[1], conv.shape[2]);
    let dplace = dwin.over([hc, wc]);
    let ([dph, _], [doh, dow]) = (dplace.pad, dplace.out);
    let (dk, ds) = (dwin.kernel, dwin.stride);
    let rows = crate::plan::ring_rows(l, cv, dw);
    let Place::Arena { offset: ring } = plan.places[cv] else {
        unreachable!("a ring lives in the arena")
    };
    let x_zp = q.qparams[conv.inputs[0]].zero_point;
    let _ = writeln!(
        c,
        "        /* fused with {}: a ring of {rows} rows of [{wc}, {cc}] at arena offset {ring} */",
        conv.name
    );
    let _ = writeln!(
        c,
        "        const int8_t *x = {};\n        int8_t *ring = mnet_arena + {ring};\n        int8_t *y = {};\n        const int8_t *rows[{}];\n        {}\n        int next = 0, oy, ky;",
        ptr(plan.places[conv.inputs[0]]),
        ptr(plan.places[dw]),
        dk[0],
        dsp::buffers(ck, dsp::widest(l, plan, cv, dsp::max_width(cvar, six)))
    );
    let _ = writeln!(c, "        for (oy = 0; oy < {doh}; ++oy) {{");
    need_row(c, ds[0], dph, dk[0], hc);
    // The rows the window needs next, as runs of pixels that end where the
    // ring wraps (so that calls cross rows where two rows are due at once,
    // and a call's outputs follow each other), each run in the calls of
    // dsp::chunks, chosen at run time by the pixels left (dsp::chain).
    let _ = writeln!(
        c,
        "            while (next <= need) {{\n                const int wrap = (next / {rows} + 1) * {rows} - 1;\n                const int last = need < wrap ? need : wrap;\n                const int end = (last + 1) * {wc};\n                int8_t *yq = ring + (next % {rows}) * {};\n                int q = next * {wc};\n                while (q < end) {{",
        wc * cc
    );
    let load = dsp::loader(cv, ck, x_shape[2], wc, x_zp, None);
    let s = cvar.suffix();
    let chain = dsp::chain(
        &dsp::fused_counts(l, cv, dw),
        dsp::k4_of(l, plan, cv),
        dsp::max_width(cvar, six),
    );
    let inner = "                        ";
    for (n, (&w, lefts)) in chain.iter().rev().enumerate() {
        let open = match (n, n + 1 == chain.len()) {
            (0, true) => "                    {\n".to_string(),
            (0, false) => format!(
                "                    const int r = end - q;\n                    if ({}) {{\n",
                dsp::chain_condition(lefts, "r")
            ),
            (_, true) => " else {\n".to_string(),
            (_, false) => format!(" else if ({}) {{\n", dsp::chain_condition(lefts, "r")),
        };
        c.push_str(&open);
        dsp::call(c, (cv, s), "q", w, &load, "yq", inner);
        let _ = write!(
            c,
            "{inner}q += {w};\n{inner}yq += {};\n                    }}",
            w as u32 * cc
        );
    }
    c.push_str("\n                }\n                next = last + 1;\n            }\n");
    let _ = writeln!(
        c,
        "            for (ky = 0; ky < {}; ++ky) {{\n                const int iy = oy * {} - {dph} + ky;",
        dk[0], ds[0]
    );
    let _ = writeln!(
        c,
        "                rows[ky] = iy >= 0 && iy < {hc} ? ring + (iy % {rows}) * {} : 0;\n            }}",
        wc * cc
    );
    let _ = writeln!(
        c,
        "            mnet_dw_row_{}(&D{dw}, rows, y + oy * {});\n        }}",
        dvar.suffix(),
        dow * cc
    );
}

/// Generate `NAME.h` and `NAME.c` from a quantized network, its prepared
/// kernel parameters ([`crate::exec::interp::prepare`]) and its checked
/// memory plan.
pub fn write(
    q: &QuantGraph,
    prep: &[Prepared],
    plan: &CheckedPlan,
    opts: &Options,
) -> Result<CFiles, Error> {
    let l = &q.lowered;
    // Loops index with `int`: every tensor and the arena must fit.
    let limit = i32::MAX as u64;
    for n in &l.nodes {
        let elems: u64 = n.shape.iter().map(|&d| d as u64).product();
        if elems > limit {
            return Err(Error::TooLarge {
                name: n.name.clone(),
                elems,
            });
        }
    }
    if plan.arena_size as u64 > limit {
        return Err(Error::TooLarge {
            name: "the arena".into(),
            elems: plan.arena_size as u64,
        });
    }
    let macs = crate::back::lowered_macs(l);
    let opts = *opts;
    let name = &l.name;
    let upper = name.to_uppercase();
    let in_size: usize = l.nodes[0].shape.iter().map(|&d| d as usize).product();
    let out_size: usize = l.nodes[l.output]
        .shape
        .iter()
        .map(|&d| d as usize)
        .product();
    let (iq, oq) = (q.qparams[0], q.qparams[l.output]);
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* {name}.h: generated by mnet {}; do not edit. */",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        h,
        "#ifndef {upper}_H\n#define {upper}_H\n\n#include <stdint.h>\n"
    );
    let _ = writeln!(
        h,
        "/* Input: int8 NHWC {:?}, real = {:e} * (q - ({})). */",
        l.nodes[0].shape, iq.scale, iq.zero_point
    );
    let _ = writeln!(h, "#define {upper}_INPUT_SIZE {in_size}");
    let _ = writeln!(h, "#define {upper}_INPUT_SCALE {:e}f", iq.scale);
    let _ = writeln!(h, "#define {upper}_INPUT_ZERO_POINT ({})", iq.zero_point);
    let _ = writeln!(
        h,
        "/* Output: int8 {:?}, real = {:e} * (q - ({})). */",
        l.nodes[l.output].shape, oq.scale, oq.zero_point
    );
    let _ = writeln!(h, "#define {upper}_OUTPUT_SIZE {out_size}");
    let _ = writeln!(h, "#define {upper}_OUTPUT_SCALE {:e}f", oq.scale);
    let _ = writeln!(h, "#define {upper}_OUTPUT_ZERO_POINT ({})", oq.zero_point);
    let _ = writeln!(
        h,
        "/* Bytes of SRAM for activations (the static arena in {name}.c). */"
    );
    let _ = writeln!(h, "#define {upper}_ARENA_SIZE {}", plan.arena_size);
    let _ = writeln!(
        h,
        "\n/* Run the network: 0 on success. input and output must not overlap. */"
    );
    let _ = writeln!(
        h,
        "int {name}_invoke(const int8_t *input, int8_t *output);\n\n#endif /* {upper}_H */"
    );

    let mut c = String::new();
    let _ = writeln!(
        c,
        "/* {name}.c: generated by mnet {}; do not edit. */",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(c, "#include \"{name}.h\"\n\n#include <string.h>\n");
    // The memory plan.
    let _ = writeln!(c, "/* Memory plan: arena {} bytes.", plan.arena_size);
    let _ = writeln!(
        c,
        " *   (ring: rows of a fused conv, computed as the depthwise conv after it needs them)\n *   tensor                                     place          offset      size  live"
    );
    for (i, n) in l.nodes.iter().enumerate() {
        let (place, offset) = match plan.places[i] {
            Place::Input => ("input", "-".to_string()),
            Place::Output => ("output", "-".to_string()),
            Place::Arena { offset } => ("arena", offset.to_string()),
        };
        let (a, b) = plan.life[i];
        let (place, size) = match plan.fused[i] {
            Some(d) => (
                "ring",
                crate::plan::ring_rows(l, i, d) * (n.shape[1] * n.shape[2]) as usize,
            ),
            None => (place, plan.sizes[i]),
        };
        let _ = writeln!(
            c,
            " *   {:<42} {:<8} {:>12} {:>9}  {}..{}",
            n.name, place, offset, size, a, b
        );
    }
    for (i, sc) in plan.scratch.iter().enumerate() {
        if let Some((offset, size)) = sc {
            let _ = writeln!(
                c,
                " *   {:<42} {:<8} {:>12} {:>9}  {i}..{i}",
                format!("(scratch of {})", l.nodes[i].name),
                "arena",
                offset,
                size
            );
        }
    }
    c.push_str(" */\n\n");
    c.push_str(&prelude(l));
    let kernels: Vec<Option<dsp::Kernel>> = (0..l.nodes.len())
        .map(|i| opts.cpu.dsp().then(|| dsp::kernel_of(l, plan, i)).flatten())
        .collect();
    let variants: Vec<Option<dsp::Variant>> = kernels
        .iter()
        .enumerate()
        .map(|(i, k)| {
            k.map(|k| {
                let v = dsp::layer(q, &prep[i], i, k.k()).variant;
                match opts.exact_requant {
                    true => dsp::Variant {
                        fast: false,
                        clamp: true,
                    },
                    false => v,
                }
            })
        })
        .collect();
    // 6-pixel calls where they pay for their code in this network.
    let six = dsp::six(l, plan, &|i| variants[i] == Some(dsp::FS));
    let dsp_helpers = kernels.iter().any(Option::is_some);
    if dsp_helpers {
        c.push_str(dsp::PRIMITIVES);
        if kernels
            .iter()
            .any(|k| matches!(k, Some(dsp::Kernel::Mm { .. })))
        {
            c.push_str(dsp::MM_LAYER);
        }
        if kernels
            .iter()
            .any(|k| matches!(k, Some(dsp::Kernel::Mm { direct: false, .. })))
        {
            c.push_str(dsp::IM2COL);
        }
        if kernels
            .iter()
            .any(|k| matches!(k, Some(dsp::Kernel::Dw { .. })))
        {
            c.push_str(dsp::DW_LAYER);
        }
        // Each variant's kernels once, only those some layer calls (C
        // warns of unused static functions): the matrix kernel's pixel
        // widths of call (dsp::chunks), the depthwise row kernel.
        let mut mms: std::collections::BTreeMap<dsp::Variant, std::collections::BTreeSet<usize>> =
            Default::default();
        let mut dws = std::collections::BTreeSet::new();
        for (i, (k, v)) in kernels.iter().zip(&variants).enumerate() {
            let (Some(k), Some(v)) = (k, v) else { continue };
            match k {
                dsp::Kernel::Mm { .. } => {
                    mms.entry(*v).or_default().extend(dsp::widths(
                        l,
                        plan,
                        i,
                        dsp::max_width(*v, six),
                    ));
                }
                dsp::Kernel::Dw { .. } => {
                    dws.insert(*v);
                }
            }
        }
        for (v, widths) in mms {
            for w in widths {
                c.push_str(&dsp::mm(v, w));
            }
        }
        for v in dws {
            c.push_str(&dsp::dw(v));
        }
    }
    c.push_str(LAYER_HOOK);
    if l.nodes.iter().any(|n| n.kind == LKind::Softmax) {
        c.push_str(SOFTMAX);
    }
    if plan.arena_size > 0 {
        let _ = writeln!(
            c,
            "\nstatic int8_t mnet_arena[{}] MNET_ALIGN;\n",
            plan.arena_size
        );
    } else {
        c.push('\n');
    }
    // Constants.
    let mut consts = 0;
    for (i, n) in l.nodes.iter().enumerate() {
        if let Prepared::Unary(u) = &prep[i] {
            let _ = writeln!(c, "/* {}: the output for each input -128..127 */", n.name);
            let table = u.table();
            consts += array(
                &mut c,
                "int8_t",
                &format!("lut{i}"),
                &table,
                table.iter().map(|&v| v as u8),
                opts,
            );
        }
        let Some(w) = q.weights.get(&i) else { continue };
        if let Some(k) = kernels[i] {
            consts += dsp::constants(&mut c, q, prep, i, k, variants[i].expect("a variant"), opts);
            continue;
        }
        let _ = writeln!(c, "/* {} */", n.name);
        consts += array(
            &mut c,
            "int8_t",
            &format!("w{i}"),
            &w.weight,
            w.weight.iter().map(|&v| v as u8),
            opts,
        );
        consts += array(
            &mut c,
            "int32_t",
            &format!("b{i}"),
            &w.bias,
            w.bias.iter().flat_map(|v| v.to_le_bytes()),
            opts,
        );
        if let Prepared::Weighted { mult, shift, .. } = &prep[i] {
            consts += array(
                &mut c,
                "int32_t",
                &format!("m{i}"),
                mult,
                mult.iter().flat_map(|v| v.to_le_bytes()),
                opts,
            );
            consts += array(
                &mut c,
                "int32_t",
                &format!("s{i}"),
                shift,
                shift.iter().flat_map(|v| v.to_le_bytes()),
                opts,
            );
        }
    }
    let _ = writeln!(
        c,
        "\nint {name}_invoke(const int8_t *input, int8_t *output) {{"
    );
    for (i, n) in l.nodes.iter().enumerate() {
        if n.kind == LKind::Input {
            continue;
        }
        let y = ptr(plan.places[i]);
        let xs: Vec<String> = n.inputs.iter().map(|&j| ptr(plan.places[j])).collect();
        let in_shape = &l.nodes[n.inputs[0]].shape;
        let in_zp = q.qparams[n.inputs[0]].zero_point;
        let out_zp = q.qparams[i].zero_point;
        let _ = writeln!(
            c,
            "    /* {i}: {} {} -> {:?}, {} MACs */",
            n.kind.name(),
            n.name,
            n.shape,
            macs.get(i).copied().unwrap_or(0)
        );
        if let Some(d) = plan.fused[i] {
            let _ = writeln!(
                c,
                "    /* computed row by row into a ring buffer inside step {d} */"
            );
            continue;
        }
        c.push_str("    {\n");
        if let Some(&cv) = n.inputs.first().filter(|&&j| plan.fused[j] == Some(i)) {
            match (kernels[cv], kernels[i], variants[cv], variants[i]) {
                (Some(ck), Some(_), Some(cvar), Some(dvar)) => {
                    fused_dsp(&mut c, q, plan, cv, i, ck, cvar, dvar, six)
                }
                _ => fused_conv_depthwise(&mut c, q, prep, plan, cv, i),
            }
            let _ = writeln!(c, "    }}\n    MNET_STEP_DONE({i});");
            continue;
        }
        match (&n.kind, &prep[i]) {
            (LKind::Conv { window, .. }, _) if kernels[i].is_some() => {
                let k = kernels[i].expect("a kernel");
                let variant = variants[i].expect("a variant");
                let suffix = variant.suffix();
                let max = dsp::max_width(variant, six);
                let (cin, cout) = (in_shape[2], n.shape[2]);
                let place = window.over([in_shape[0], in_shape[1]]);
                let [oh, ow] = place.out;
                let pixels = (oh * ow) as usize;
                let x_zp = in_zp;
                // In place (1x1, stride 1; x and y are the same bytes):
                // both pixels of a pair are widened before either output
                // is written, forwards when the output has no more
                // channels, else backwards.
                let backwards = plan.scratch[i].is_some() && cout > cin;
                let _ = writeln!(
                    c,
                    "        const int8_t *x = {};\n        int8_t *y = {y};\n        {}",
                    xs[0],
                    dsp::buffers(k, dsp::widest(l, plan, i, max))
                );
                let load = dsp::loader(i, k, cin, ow, x_zp, None);
                let out = |p: &str| format!("y + ({p}) * {cout}");
                dsp::MmLoop {
                    i,
                    k4: k.k().div_ceil(4),
                    suffix,
                    pixels,
                    load: &load,
                    out: &out,
                    backwards,
                    max,
                    var: "p",
                    indent: "        ",
                }
                .emit(&mut c);
            }
            (LKind::Depthwise { window }, _) if kernels[i].is_some() => {
                let suffix = variants[i].expect("a variant").suffix();
                let (hh, ww, ch) = (in_shape[0], in_shape[1], in_shape[2]);
                let place = window.over([hh, ww]);
                let ([ph, _], [oh, ow]) = (place.pad, place.out);
                let kh = window.kernel[0];
                let _ = writeln!(
                    c,
                    "        const int8_t *x = {};\n        int8_t *y = {y};\n        const int8_t *rows[{kh}];\n        int oy, ky;",
                    xs[0]
                );
                let _ = writeln!(c, "        for (oy = 0; oy < {oh}; ++oy) {{\n            for (ky = 0; ky < {kh}; ++ky) {{\n                const int iy = oy * {} - {ph} + ky;", window.stride[0]);
                let _ = writeln!(
                    c,
                    "                rows[ky] = iy >= 0 && iy < {hh} ? x + iy * {} : 0;\n            }}",
                    ww * ch
                );
                let _ = writeln!(
                    c,
                    "            mnet_dw_row_{suffix}(&D{i}, rows, y + oy * {});\n        }}",
                    ow * ch
                );
            }
            (
                LKind::Depthwise { window },
                Prepared::Weighted {
                    act_min, act_max, ..
                },
            ) if plan.scratch[i].is_some() => {
                let (kernel, stride) = (window.kernel, window.stride);
                // In place, channel by channel (TinyEngine): copy one input
                // plane to the scratch, write the output channel over the
                // input channel's own slots.
                let (hh, ww, ch) = (in_shape[0], in_shape[1], in_shape[2]);
                let place = window.over([hh, ww]);
                let ([ph, pw], [oh, ow]) = (place.pad, place.out);
                let (soff, _) = plan.scratch[i].expect("scratch");
                let taps = (kernel[0] * kernel[1]) as usize;
                let unrolled = opts.cpu.dsp() && taps <= MAX_UNROLLED_TAPS;
                let vars = if unrolled {
                    "oy, ox, ch"
                } else {
                    "k, oy, ox, ch, ky, kx"
                };
                let _ = writeln!(c, "        int8_t *buf = {y};\n        int8_t *tmp = mnet_arena + {soff};\n        int {vars};");
                let _ = writeln!(c, "        for (ch = 0; ch < {ch}; ++ch) {{");
                if unrolled {
                    // With a DSP target: the plane copied into the padded
                    // scratch (padding = the zero point, so it adds
                    // nothing), every window read without checks, its taps
                    // unrolled over the weights held in registers and the
                    // zero point folded into the bias.
                    let [phh, pww] = place.padded();
                    let _ = writeln!(
                        c,
                        "            const int32_t {};",
                        (0..taps)
                            .map(|t| format!("wt{t} = w{i}[{} + ch]", t * ch as usize))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let ws: Vec<String> = (0..taps).map(|t| format!("wt{t}")).collect();
                    let _ = writeln!(
                        c,
                        "            const int32_t bz = b{i}[ch] - ({in_zp}) * ({});",
                        ws.join(" + ")
                    );
                    // SMMULR requantization where the compiler proves it
                    // exact (and the DSP helpers are in the file).
                    let v = dsp::layer(q, &prep[i], i, taps).variant;
                    let store = if v.fast && !opts.exact_requant && dsp_helpers {
                        let _ = writeln!(
                            c,
                            "            const int32_t mq = m{i}[ch], rr = -s{i}[ch];\n            const int32_t nz = (int32_t)((1u << (rr - 1)) + ((uint32_t)({out_zp}) << rr));"
                        );
                        if v.clamp {
                            let _ = writeln!(
                                c,
                                "            const int32_t lo = {act_min}, hi = {act_max};"
                            );
                        }
                        v.out_of("acc", "mq", "nz", "rr")
                    } else {
                        format!("mnet_clamp(mnet_mbqm(acc, m{i}[ch], s{i}[ch]) + ({out_zp}), {act_min}, {act_max})")
                    };
                    if [phh, pww] != [hh, ww] {
                        let _ = writeln!(c, "            memset(tmp, {in_zp}, {});", phh * pww);
                    }
                    let _ = writeln!(
                        c,
                        "            for (oy = 0; oy < {hh}; ++oy) {{\n                int8_t *d = tmp + (oy + {ph}) * {pww} + {pw};\n                const int8_t *s = buf + oy * {} + ch;\n                for (ox = 0; ox < {ww}; ++ox) d[ox] = s[ox * {ch}];\n            }}",
                        ww * ch
                    );
                    let sum: Vec<String> = (0..taps)
                        .map(|t| {
                            let (ky, kx) = (t as u32 / kernel[1], t as u32 % kernel[1]);
                            format!("wt{t} * t[{}]", ky * pww + kx)
                        })
                        .collect();
                    let _ = writeln!(c, "            for (oy = 0; oy < {oh}; ++oy) {{\n            for (ox = 0; ox < {ow}; ++ox) {{");
                    let _ = writeln!(
                        c,
                        "                const int8_t *t = tmp + oy * {} + ox * {};\n                const int32_t acc = bz + {};",
                        stride[0] * pww,
                        stride[1],
                        sum.join(" + ")
                    );
                    let _ = writeln!(
                        c,
                        "                buf[(oy * {ow} + ox) * {ch} + ch] = {store};"
                    );
                    c.push_str("            }\n            }\n        }\n");
                } else {
                    let _ = writeln!(
                        c,
                        "            for (k = 0; k < {}; ++k) tmp[k] = buf[k * {ch} + ch];",
                        hh * ww
                    );
                    let _ = writeln!(c, "            for (oy = 0; oy < {oh}; ++oy) {{\n            for (ox = 0; ox < {ow}; ++ox) {{");
                    let _ = writeln!(c, "                int32_t acc = b{i}[ch];");
                    let _ = writeln!(c, "                for (ky = 0; ky < {}; ++ky) {{\n                    const int iy = oy * {} - {ph} + ky;", kernel[0], stride[0]);
                    let _ = writeln!(c, "                    if (iy < 0 || iy >= {hh}) continue;");
                    let _ = writeln!(c, "                    for (kx = 0; kx < {}; ++kx) {{\n                        const int ix = ox * {} - {pw} + kx;", kernel[1], stride[1]);
                    let _ = writeln!(
                        c,
                        "                        if (ix < 0 || ix >= {ww}) continue;"
                    );
                    let _ = writeln!(c, "                        acc += w{i}[(ky * {} + kx) * {ch} + ch] * (tmp[iy * {ww} + ix] - ({in_zp}));", kernel[1]);
                    c.push_str("                    }\n                }\n");
                    let _ = writeln!(c, "                buf[(oy * {ow} + ox) * {ch} + ch] = mnet_clamp(mnet_mbqm(acc, m{i}[ch], s{i}[ch]) + ({out_zp}), {act_min}, {act_max});");
                    c.push_str("            }\n            }\n        }\n");
                }
            }
            (
                LKind::Conv { out, .. },
                Prepared::Weighted {
                    act_min, act_max, ..
                },
            ) if plan.scratch[i].is_some() => {
                // In place, pixel by pixel (1x1, stride 1): forwards when the
                // output has no more channels than the input, else backwards.
                let cin = in_shape[2];
                let pixels = in_shape[0] * in_shape[1];
                let (soff, _) = plan.scratch[i].expect("scratch");
                let _ = writeln!(c, "        int8_t *buf = {y};\n        int8_t *tmp = mnet_arena + {soff};\n        int q, p, oc, ic;");
                let _ = writeln!(c, "        for (q = 0; q < {pixels}; ++q) {{");
                if *out > cin {
                    let _ = writeln!(c, "            p = {} - q;", pixels - 1);
                } else {
                    c.push_str("            p = q;\n");
                }
                let _ = writeln!(c, "            memcpy(tmp, buf + p * {cin}, {cin});");
                let _ = writeln!(c, "            for (oc = 0; oc < {out}; ++oc) {{\n                int32_t acc = b{i}[oc];\n                const int8_t *wp = w{i} + oc * {cin};");
                let _ = writeln!(c, "                for (ic = 0; ic < {cin}; ++ic) acc += wp[ic] * (tmp[ic] - ({in_zp}));");
                let _ = writeln!(c, "                buf[p * {out} + oc] = mnet_clamp(mnet_mbqm(acc, m{i}[oc], s{i}[oc]) + ({out_zp}), {act_min}, {act_max});");
                c.push_str("            }\n        }\n");
            }
            (
                LKind::Conv { window, .. } | LKind::Depthwise { window },
                Prepared::Weighted {
                    act_min, act_max, ..
                },
            ) => {
                let depthwise = matches!(n.kind, LKind::Depthwise { .. });
                let (hh, ww, cin) = (in_shape[0], in_shape[1], in_shape[2]);
                let cout = n.shape[2];
                let (kernel, stride) = (window.kernel, window.stride);
                let place = window.over([hh, ww]);
                let ([ph, pw], [oh, ow]) = (place.pad, place.out);
                let _ = writeln!(c, "        const int8_t *x = {};\n        int8_t *y = {y};\n        int oy, ox, oc, ky, kx;", xs[0]);
                let _ = writeln!(c, "        for (oy = 0; oy < {oh}; ++oy) {{\n        for (ox = 0; ox < {ow}; ++ox) {{");
                let _ = writeln!(
                    c,
                    "            const int iy0 = oy * {} - {ph}, ix0 = ox * {} - {pw};",
                    stride[0], stride[1]
                );
                let _ = writeln!(c, "            for (oc = 0; oc < {cout}; ++oc) {{\n                int32_t acc = b{i}[oc];");
                let _ = writeln!(c, "                for (ky = 0; ky < {}; ++ky) {{\n                    const int iy = iy0 + ky;", kernel[0]);
                let _ = writeln!(c, "                    if (iy < 0 || iy >= {hh}) continue;");
                let _ = writeln!(c, "                    for (kx = 0; kx < {}; ++kx) {{\n                        const int ix = ix0 + kx;", kernel[1]);
                let _ = writeln!(
                    c,
                    "                        if (ix < 0 || ix >= {ww}) continue;"
                );
                if depthwise {
                    let _ = writeln!(
                        c,
                        "                        acc += w{i}[(ky * {} + kx) * {cin} + oc] * (x[(iy * {ww} + ix) * {cin} + oc] - ({in_zp}));",
                        kernel[1]
                    );
                } else {
                    let _ = writeln!(c, "                        {{\n                            const int8_t *xp = x + (iy * {ww} + ix) * {cin};");
                    let _ = writeln!(c, "                            const int8_t *wp = w{i} + ((oc * {} + ky) * {} + kx) * {cin};", kernel[0], kernel[1]);
                    let _ = writeln!(c, "                            int ic;\n                            for (ic = 0; ic < {cin}; ++ic) acc += wp[ic] * (xp[ic] - ({in_zp}));\n                        }}");
                }
                let _ = writeln!(c, "                    }}\n                }}");
                let _ = writeln!(
                    c,
                    "                y[(oy * {ow} + ox) * {cout} + oc] = mnet_clamp(mnet_mbqm(acc, m{i}[oc], s{i}[oc]) + ({out_zp}), {act_min}, {act_max});"
                );
                c.push_str("            }\n        }\n        }\n");
            }
            (LKind::Pool { kind, window }, Prepared::Clamp { act_min, act_max }) => {
                let avg = *kind == PoolKind::Avg;
                let (hh, ww, ch) = (in_shape[0], in_shape[1], in_shape[2]);
                let (size, stride) = (window.kernel, window.stride);
                let place = window.over([hh, ww]);
                let ([ph, pw], [oh, ow]) = (place.pad, place.out);
                let _ = writeln!(c, "        const int8_t *x = {};\n        int8_t *y = {y};\n        int oy, ox, ch, ky, kx;", xs[0]);
                let _ = writeln!(c, "        for (oy = 0; oy < {oh}; ++oy) {{\n        for (ox = 0; ox < {ow}; ++ox) {{\n        for (ch = 0; ch < {ch}; ++ch) {{");
                if avg {
                    c.push_str("            int32_t acc = 0, cnt = 0, v;\n");
                } else {
                    c.push_str("            int32_t mx = -128;\n");
                }
                let _ = writeln!(c, "            for (ky = 0; ky < {}; ++ky) {{\n                const int iy = oy * {} - {ph} + ky;", size[0], stride[0]);
                let _ = writeln!(c, "                if (iy < 0 || iy >= {hh}) continue;");
                let _ = writeln!(c, "                for (kx = 0; kx < {}; ++kx) {{\n                    const int ix = ox * {} - {pw} + kx;", size[1], stride[1]);
                let _ = writeln!(c, "                    if (ix < 0 || ix >= {ww}) continue;");
                if avg {
                    let _ = writeln!(c, "                    acc += x[(iy * {ww} + ix) * {ch} + ch];\n                    ++cnt;");
                } else {
                    let _ = writeln!(c, "                    if (x[(iy * {ww} + ix) * {ch} + ch] > mx) mx = x[(iy * {ww} + ix) * {ch} + ch];");
                }
                c.push_str("                }\n            }\n");
                if avg {
                    c.push_str("            v = acc > 0 ? (acc + cnt / 2) / cnt : (acc - cnt / 2) / cnt;\n");
                    let _ = writeln!(c, "            y[(oy * {ow} + ox) * {ch} + ch] = mnet_clamp(v, {act_min}, {act_max});");
                } else {
                    let _ = writeln!(c, "            y[(oy * {ow} + ox) * {ch} + ch] = mnet_clamp(mx, {act_min}, {act_max});");
                }
                c.push_str("        }\n        }\n        }\n");
            }
            (
                LKind::Add,
                Prepared::Add {
                    m1,
                    s1,
                    m2,
                    s2,
                    mo,
                    so,
                    act_min,
                    act_max,
                },
            ) => {
                let total: u32 = n.shape.iter().product();
                let (z1, z2) = (
                    q.qparams[n.inputs[0]].zero_point,
                    q.qparams[n.inputs[1]].zero_point,
                );
                let _ = writeln!(c, "        const int8_t *a = {};\n        const int8_t *b = {};\n        int8_t *y = {y};\n        int k;", xs[0], xs[1]);
                let _ = writeln!(c, "        for (k = 0; k < {total}; ++k) {{");
                let _ = writeln!(c, "            const int32_t sa = mnet_rdbpot(mnet_srdhm((a[k] - ({z1})) * (1 << 20), {m1}), {});", -s1);
                let _ = writeln!(c, "            const int32_t sb = mnet_rdbpot(mnet_srdhm((b[k] - ({z2})) * (1 << 20), {m2}), {});", -s2);
                let _ = writeln!(c, "            y[k] = mnet_clamp(mnet_rdbpot(mnet_srdhm(sa + sb, {mo}), {}) + ({out_zp}), {act_min}, {act_max});\n        }}", -so);
            }
            (LKind::Concat, _) => {
                let outer: u32 = n.shape[..n.shape.len() - 1].iter().product();
                let total_c = *n.shape.last().unwrap();
                let _ = writeln!(c, "        int8_t *y = {y};\n        int o;\n        for (o = 0; o < {outer}; ++o) {{");
                let mut at = 0;
                for (k, &j) in n.inputs.iter().enumerate() {
                    let cj = *l.nodes[j].shape.last().unwrap();
                    let _ = writeln!(
                        c,
                        "            memcpy(y + o * {total_c} + {at}, {} + o * {cj}, {cj});",
                        xs[k]
                    );
                    at += cj;
                }
                c.push_str("        }\n");
            }
            (LKind::Pad { pads }, _) => {
                let (hh, ww, ch) = (in_shape[0], in_shape[1], in_shape[2]);
                let ow = ww + pads[2] + pads[3];
                let total: u32 = n.shape.iter().product();
                let _ = writeln!(
                    c,
                    "        const int8_t *x = {};\n        int8_t *y = {y};\n        int r;",
                    xs[0]
                );
                let _ = writeln!(c, "        memset(y, {out_zp}, {total});");
                let _ = writeln!(c, "        for (r = 0; r < {hh}; ++r) memcpy(y + ((r + {}) * {ow} + {}) * {ch}, x + r * {} , {});", pads[0], pads[2], ww * ch, ww * ch);
            }
            (LKind::Act(_) | LKind::Requantize, Prepared::Unary(_)) => {
                // The reference kernel's output for every input value.
                let total: u32 = n.shape.iter().product();
                let _ = writeln!(
                    c,
                    "        const int8_t *x = {};\n        int8_t *y = {y};\n        int k;",
                    xs[0]
                );
                let _ = writeln!(
                    c,
                    "        for (k = 0; k < {total}; ++k) y[k] = lut{i}[x[k] + 128];"
                );
            }
            (LKind::Reshape, _) => {
                let total: u32 = n.shape.iter().product();
                if plan.places[i] != plan.places[n.inputs[0]] {
                    let _ = writeln!(c, "        memmove({y}, {}, {total});", xs[0]);
                } else {
                    c.push_str("        /* alias: same bytes as its input */\n");
                }
            }
            (
                LKind::Softmax,
                Prepared::Softmax {
                    mult,
                    shift,
                    diff_min,
                },
            ) => {
                let depth = *n.shape.last().unwrap();
                let rows: u32 = n.shape.iter().product::<u32>() / depth;
                let _ = writeln!(c, "        int r;\n        for (r = 0; r < {rows}; ++r) mnet_softmax_row({} + r * {depth}, {y} + r * {depth}, {depth}, {mult}, {shift}, {diff_min});", xs[0]);
            }
            (LKind::Mean, Prepared::Mean { mult, shift }) => {
                let (pixels, ch) = (in_shape[0] * in_shape[1], in_shape[2]);
                let in_zp = q.qparams[n.inputs[0]].zero_point;
                let _ = writeln!(
                    c,
                    "        const int8_t *x = {};\n        int8_t *y = {y};\n        int ch, p;",
                    xs[0]
                );
                let _ = writeln!(
                    c,
                    "        for (ch = 0; ch < {ch}; ++ch) {{\n            int32_t acc = 0;"
                );
                let _ = writeln!(c, "            for (p = 0; p < {pixels}; ++p) acc += x[p * {ch} + ch] - ({in_zp});");
                let _ = writeln!(c, "            y[ch] = mnet_clamp(mnet_mbqm(acc, {mult}, {shift}) + ({out_zp}), -128, 127);\n        }}");
            }
            (LKind::Input, _) => unreachable!("the input is not a step"),
            (
                k @ (LKind::Conv { .. }
                | LKind::Depthwise { .. }
                | LKind::Pool { .. }
                | LKind::Add
                | LKind::Act(_)
                | LKind::Requantize
                | LKind::Softmax
                | LKind::Mean),
                p,
            ) => unreachable!("{k:?} prepared as {p:?}"),
        }
        let _ = writeln!(c, "    }}\n    MNET_STEP_DONE({i});");
    }
    if plan.places[l.output] != Place::Output {
        let _ = writeln!(
            c,
            "    memcpy(output, {}, {out_size});",
            ptr(plan.places[l.output])
        );
    }
    c.push_str("    return 0;\n}\n");
    Ok(CFiles {
        header: h,
        source: c,
        constant_bytes: consts,
    })
}
