//! The int8 network compiled for the host by Cranelift: one native function
//! that runs the whole network over one block of memory, bit-exact with the
//! reference interpreter ([`crate::exec::interp`], which is TFLM's
//! arithmetic) and so with TFLM.
//!
//! The JIT takes what the C backend takes: the quantized graph and its
//! [`Prepared`] kernel parameters. Shapes, strides, zero points and the
//! requantization constants of ADD and MEAN are constants in the code;
//! weights are widened to int16 once, at compile time, in the layout the
//! kernels read. Activations live where [`plan::tflm_offsets`] puts them
//! (the plan written into the `.tflite`: reshapes on their input's bytes,
//! elementwise ops over a dying input), in one arena, followed by one
//! scratch region for a padded copy of a window's input (so the conv,
//! depthwise and pool loops need no bounds checks).
//!
//! Inner products use 128-bit vectors: conv and 1x1 conv take two output
//! pixels by four output channels at a time (each weight load feeds both
//! pixels), sixteen input values per step where the host multiplies u8 by
//! i8 (VNNI's `vpdpbusd`, the input flipped to `x + 128`) or eight
//! (int8 widened to i16x8, multiplied with int16 weights and summed
//! pairwise into i32x4: `pmaddwd`); a window whose rows are short is
//! first copied into one patch (im2col). Depthwise takes eight channels
//! at a time, one i16x8 product per tap. The input zero point is folded
//! into the bias (`Σ w·(x − zp) = Σ w·x − zp·Σ w` in wrapping int32, the
//! same value modulo 2^32 as TFLM's sum, and padding filled with `zp`
//! adds nothing). Requantization of conv and depthwise outputs is four
//! channels at a time in 32×32→64-bit multiplies ([`Gen::requant4`]);
//! ADD, pools, MEAN and table lookups (lone activations, QUANTIZE) are
//! scalar; SOFTMAX calls the interpreter's row function.

use std::any::Any;
use std::time::{Duration, Instant};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I16X8, I32, I32X4, I64, I64X2, I8, I8X16};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use crate::exec::arith::softmax_row;
use crate::exec::interp::Prepared;
use crate::lower::{LKind, QuantGraph};
use crate::ops::window::Placement;
use crate::ops::PoolKind;
use crate::plan;

/// How to compile.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Run Cranelift's IR verifier on the function before compiling it
    /// (the tests do; it costs compile time).
    pub verify: bool,
    /// Use the i16 pair products (`pmaddwd`) for convs even where the host
    /// has VNNI's u8 × i8 products (the tests run both forms).
    pub no_vnni: bool,
}

/// Why the network could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cranelift has no backend for this host: {0}")]
    Host(String),
    #[error("Cranelift rejected the generated code: {0}")]
    Codegen(String),
    #[error("layer {layer}: {message}")]
    Unsupported { layer: String, message: String },
}

/// A compiled network: call [`Compiled::run`] with a [`Memory`] from
/// [`Compiled::memory`] (one per thread).
pub struct Compiled {
    module: Option<JITModule>,
    entry: unsafe extern "C" fn(*mut u8, *const i8, *mut i8),
    /// Weights, tables and per-channel parameters the code points into.
    _consts: Vec<Box<dyn Any + Send + Sync>>,
    memory_bytes: usize,
    input_len: usize,
    output_len: usize,
    /// Wall time of IR generation and Cranelift's compilation.
    pub compile_time: Duration,
    /// Bytes of machine code.
    pub code_bytes: usize,
    /// Bytes of the activation arena (the rest of the memory is scratch).
    pub arena_bytes: usize,
}

// SAFETY: after `finalize_definitions` the code and the constants it reads
// are never written again; each call gets its own `Memory`.
unsafe impl Send for Compiled {}
unsafe impl Sync for Compiled {}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `entry` is not called after this: `self` is going.
            unsafe { m.free_memory() };
        }
    }
}

/// The arena and scratch one call runs in.
pub struct Memory(Vec<u8>);

impl Compiled {
    /// Fresh memory for [`Compiled::run`].
    pub fn memory(&self) -> Memory {
        Memory(vec![0; self.memory_bytes])
    }

    /// Run the network on one int8 input, writing its int8 output.
    pub fn run(&self, mem: &mut Memory, input: &[i8], output: &mut [i8]) {
        assert_eq!(input.len(), self.input_len, "input size");
        assert_eq!(output.len(), self.output_len, "output size");
        assert_eq!(mem.0.len(), self.memory_bytes, "memory of another network");
        // SAFETY: the sizes are checked above; the code touches only the
        // memory block (within `memory_bytes`, slack included), the input,
        // the output and its own constants.
        unsafe { (self.entry)(mem.0.as_mut_ptr(), input.as_ptr(), output.as_mut_ptr()) }
    }

    /// Run on one input, allocating the memory (for one-off calls).
    pub fn infer(&self, input: &[i8]) -> Vec<i8> {
        let mut out = vec![0; self.output_len];
        self.run(&mut self.memory(), input, &mut out);
        out
    }
}

/// Bytes past the end of memory the vector loads may read (a tail of
/// eight values read whole).
const SLACK: usize = 64;

fn align16(v: usize) -> usize {
    v.div_ceil(16) * 16
}

fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

fn elems(shape: &[u32]) -> usize {
    shape.iter().map(|&d| d as usize).product()
}

/// The host's instruction set, tuned for speed.
fn host_isa(verify: bool) -> Result<OwnedTargetIsa, Error> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| Error::Codegen(format!("setting {k}={v}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    set(
        &mut flags,
        "enable_verifier",
        if verify { "true" } else { "false" },
    )?;
    cranelift_native::builder()
        .map_err(|e| Error::Host(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| Error::Host(e.to_string()))
}

/// Compile the network.
pub fn compile(q: &QuantGraph, prep: &[Prepared], opts: &Options) -> Result<Compiled, Error> {
    let start = Instant::now();
    let l = &q.lowered;
    let (offsets, arena) = plan::tflm_offsets(l);
    let scratch_at = align16(arena);
    let scratch = l
        .nodes
        .iter()
        .map(|n| match n.kind {
            LKind::Conv { window, .. }
            | LKind::Depthwise { window }
            | LKind::Pool { window, .. } => {
                let s = &l.nodes[n.inputs[0]].shape;
                let [ph, pw] = window.over([s[0], s[1]]).padded();
                (ph * pw * s[2]) as usize
            }
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let vnni = host_has_vnni() && !opts.no_vnni;
    let lanes = if vnni { 16 } else { 8 };
    let patch = l
        .nodes
        .iter()
        .map(|n| match n.kind {
            LKind::Conv { window, .. } => {
                let cin = l.nodes[n.inputs[0]].shape[2] as usize;
                let [kh, kw] = window.kernel.map(|k| k as usize);
                if uses_patch(kh, kw * cin, lanes) {
                    // Two pixels' patches (the conv takes pixels in pairs).
                    2 * align16(kh * kw * cin)
                } else {
                    0
                }
            }
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let patch_at = scratch_at + align16(scratch) + SLACK;
    let memory_bytes = patch_at + align16(patch) + SLACK;
    // The vector requantization divides by 2^e as a multiply by 2^(31-e).
    for (n, p) in l.nodes.iter().zip(prep) {
        if let Prepared::Weighted { shift, .. } = p {
            if let Some(s) = shift.iter().find(|&&s| s < -31) {
                return Err(Error::Unsupported {
                    layer: n.name.clone(),
                    message: format!(
                        "a requantization right shift of {} (a multiplier below 2^-31): the JIT shifts by at most 31",
                        -s
                    ),
                });
            }
        }
    }

    let isa = host_isa(opts.verify)?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa.clone(), default_libcall_names()));
    let mut sig = module.make_signature();
    for _ in 0..3 {
        sig.params.push(AbiParam::new(I64));
    }
    let id = module
        .declare_function(&format!("mnet_{}", l.name), Linkage::Local, &sig)
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let mut consts: Vec<Box<dyn Any + Send + Sync>> = Vec::new();
    {
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let params = b.block_params(entry).to_vec();
        let mut g = Gen {
            b: &mut b,
            config: module.target_config(),
            consts: &mut consts,
            mem: params[0],
        };
        let place = |g: &mut Gen, i: usize| g.at(g.mem, offsets[i] as i64);
        let scratch_ptr = g.at(g.mem, scratch_at as i64);
        let patch_ptr = g.at(g.mem, patch_at as i64);
        for (i, n) in l.nodes.iter().enumerate() {
            let y = place(&mut g, i);
            let size = elems(&n.shape) as u64;
            let input = |k: usize| n.inputs[k];
            match (&n.kind, &prep[i]) {
                (LKind::Input, _) => g.copy(y, params[1], size),
                (LKind::Conv { window, .. }, Prepared::Weighted { .. })
                | (LKind::Depthwise { window }, Prepared::Weighted { .. })
                | (LKind::Pool { window, .. }, Prepared::Clamp { .. }) => {
                    let j = input(0);
                    let s = &l.nodes[j].shape;
                    let p = window.over([s[0], s[1]]);
                    let fill = match n.kind {
                        LKind::Pool {
                            kind: PoolKind::Max,
                            ..
                        } => -128,
                        LKind::Pool { .. } => 0,
                        _ => q.qparams[j].zero_point,
                    };
                    let x = place(&mut g, j);
                    let x = g.padded(x, scratch_ptr, &p, s[2], fill);
                    let k = Kernel {
                        p,
                        c: s[2] as usize,
                        pw: p.padded()[1] as usize,
                        in_zp: q.qparams[j].zero_point,
                        out_zp: q.qparams[i].zero_point,
                    };
                    match (&n.kind, &prep[i]) {
                        (LKind::Conv { out, .. }, _) => g.conv(
                            &k,
                            x,
                            y,
                            patch_ptr,
                            *out as usize,
                            &q.weights[&i],
                            &prep[i],
                            vnni,
                        ),
                        (LKind::Depthwise { .. }, _) => {
                            g.depthwise(&k, x, y, &q.weights[&i], &prep[i])
                        }
                        (LKind::Pool { kind, .. }, Prepared::Clamp { act_min, act_max }) => {
                            g.pool(&k, x, y, *kind, (*act_min, *act_max))
                        }
                        _ => unreachable!(),
                    }
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
                    let (a, bb) = (place(&mut g, input(0)), place(&mut g, input(1)));
                    let (z1, z2) = (
                        q.qparams[input(0)].zero_point,
                        q.qparams[input(1)].zero_point,
                    );
                    let zo = q.qparams[i].zero_point;
                    g.for_range(size, |g, e| {
                        let side = |g: &mut Gen, base: Value, z: i32, m: i32, s: i32| {
                            let v = g.load_i8(base, e);
                            let v = g.b.ins().iadd_imm_s(v, -(z as i64));
                            let v = g.b.ins().ishl_imm_u(v, 20);
                            let v = g.srdhm_const(v, m);
                            g.rdbpot_const(v, -s)
                        };
                        let sa = side(g, a, z1, *m1, *s1);
                        let sb = side(g, bb, z2, *m2, *s2);
                        let sum = g.b.ins().iadd(sa, sb);
                        let r = g.srdhm_const(sum, *mo);
                        let r = g.rdbpot_const(r, -so);
                        let r = g.b.ins().iadd_imm_s(r, zo as i64);
                        g.store_clamped(r, y, e, *act_min, *act_max);
                    });
                }
                (LKind::Concat, _) => {
                    let c_out = *n.shape.last().unwrap() as i64;
                    let outer = size / c_out as u64;
                    let parts: Vec<(Value, i64)> = n
                        .inputs
                        .iter()
                        .map(|&j| (place(&mut g, j), *l.nodes[j].shape.last().unwrap() as i64))
                        .collect();
                    g.for_range(outer, |g, o| {
                        let mut at = 0;
                        for &(src, c) in &parts {
                            let s = g.index(src, o, c);
                            let d = g.index(y, o, c_out);
                            let d = g.at(d, at);
                            g.copy(d, s, c as u64);
                            at += c;
                        }
                    });
                }
                (LKind::Pad { pads }, _) => {
                    let j = input(0);
                    let s = &l.nodes[j].shape;
                    let x = place(&mut g, j);
                    g.pad(
                        x,
                        y,
                        [s[0], s[1], s[2]],
                        [pads[0], pads[2]],
                        [n.shape[0], n.shape[1]],
                        q.qparams[i].zero_point,
                    );
                }
                (LKind::Reshape, _) => {
                    if offsets[i] != offsets[input(0)] {
                        let x = place(&mut g, input(0));
                        g.copy(y, x, size);
                    }
                }
                (LKind::Mean, Prepared::Mean { mult, shift }) => {
                    let j = input(0);
                    let s = &l.nodes[j].shape;
                    let (pixels, c) = ((s[0] * s[1]) as u64, s[2] as i64);
                    let x = place(&mut g, j);
                    let (in_zp, out_zp) = (q.qparams[j].zero_point, q.qparams[i].zero_point);
                    let (mult, shift) = (*mult, *shift);
                    g.for_range(c as u64, |g, ch| {
                        let acc = g.b.declare_var(I32);
                        let z = g.b.ins().iconst(I32, 0);
                        g.b.def_var(acc, z);
                        let xc = g.b.ins().iadd(x, ch);
                        g.for_range(pixels, |g, px| {
                            let v = g.load_i8_strided(xc, px, c);
                            let v = g.b.ins().iadd_imm_s(v, -(in_zp as i64));
                            let a = g.b.use_var(acc);
                            let a = g.b.ins().iadd(a, v);
                            g.b.def_var(acc, a);
                        });
                        let a = g.b.use_var(acc);
                        let r = g.mbqm_const(a, mult, shift);
                        let r = g.b.ins().iadd_imm_s(r, out_zp as i64);
                        g.store_clamped(r, y, ch, -128, 127);
                    });
                }
                (LKind::Act(_) | LKind::Requantize, Prepared::Unary(u)) => {
                    let x = place(&mut g, input(0));
                    let table = g.konst(u.table().to_vec());
                    g.for_range(size, |g, e| {
                        let v = g.load_i8(x, e);
                        let v = g.b.ins().sextend(I64, v);
                        let t = g.b.ins().iadd(table, v);
                        let r = g.b.ins().sload8(I32, flags(), t, 128);
                        g.store_i8(r, y, e);
                    });
                }
                (
                    LKind::Softmax,
                    Prepared::Softmax {
                        mult,
                        shift,
                        diff_min,
                    },
                ) => {
                    let x = place(&mut g, input(0));
                    let depth = *n.shape.last().unwrap() as u64;
                    g.softmax(x, y, size / depth, depth, *mult, *shift, *diff_min);
                }
                (k, p) => unreachable!("node {i} {k:?} prepared as {p:?}"),
            }
        }
        let out = place(&mut g, l.output);
        let out_len = elems(&l.nodes[l.output].shape) as u64;
        g.copy(params[2], out, out_len);
        g.b.ins().return_(&[]);
        g.b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    if opts.verify {
        cranelift_codegen::verify_function(&ctx.func, isa.as_ref())
            .map_err(|e| Error::Codegen(format!("the verifier: {e}")))?;
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| Error::Codegen(format!("{e:?}")))?;
    let code_bytes = ctx
        .compiled_code()
        .map(|c| c.code_buffer().len())
        .unwrap_or(0);
    module.clear_context(&mut ctx);
    module
        .finalize_definitions()
        .map_err(|e| Error::Codegen(e.to_string()))?;
    let ptr = module.get_finalized_function(id);
    // SAFETY: the function was declared with three pointer-sized
    // parameters and no results, the host's default calling convention.
    let entry = unsafe {
        std::mem::transmute::<*const u8, unsafe extern "C" fn(*mut u8, *const i8, *mut i8)>(ptr)
    };
    Ok(Compiled {
        module: Some(module),
        entry,
        _consts: consts,
        memory_bytes,
        input_len: elems(&l.nodes[0].shape),
        output_len: elems(&l.nodes[l.output].shape),
        compile_time: start.elapsed(),
        code_bytes,
        arena_bytes: arena,
    })
}

/// Whether a conv copies its window into one patch: when the window's
/// rows (kernel columns times input channels) are short, so that the
/// whole window in one run takes fewer vector steps than row by row.
fn uses_patch(kh: usize, row: usize, lanes: usize) -> bool {
    kh > 1 && round_up(kh * row, lanes) < kh * round_up(row, lanes)
}

/// Whether the host multiplies u8 by i8 in fours into int32 lanes
/// (`vpdpbusd`, AVX-VNNI or AVX512-VNNI with VL), which Cranelift selects
/// for the widening dot-product tree the conv kernel emits.
fn host_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avxvnni")
            || (std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512vl"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// What a window kernel knows about its input and output.
struct Kernel {
    p: Placement,
    /// Input channels.
    c: usize,
    /// Columns of the (padded) input the kernel reads.
    pw: usize,
    in_zp: i32,
    out_zp: i32,
}

/// Per-channel requantization tables, int32: the multiplier, `1 << left
/// shift` (a wrapping multiply, as TFLM's `x * (1 << left)`), and for the
/// right shift `e` the factor `2^(31-e)` (0 where `e` = 0) and a mask of
/// the channels where `e` = 0 (see [`Gen::requant4`]).
struct Requant {
    mult: Value,
    /// Absent when no channel shifts left.
    lmul: Option<Value>,
    pow: Value,
    /// Present when some channel has `e` = 0.
    e0: Option<Value>,
}

struct Gen<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    config: TargetFrontendConfig,
    consts: &'a mut Vec<Box<dyn Any + Send + Sync>>,
    mem: Value,
}

impl Gen<'_, '_> {
    /// `base + off`.
    fn at(&mut self, base: Value, off: i64) -> Value {
        if off == 0 {
            base
        } else {
            self.b.ins().iadd_imm_s(base, off)
        }
    }

    /// `base + i * stride` for a runtime `i`.
    fn index(&mut self, base: Value, i: Value, stride: i64) -> Value {
        let o = if stride == 1 {
            i
        } else {
            self.b.ins().imul_imm_s(i, stride)
        };
        self.b.ins().iadd(base, o)
    }

    /// A constant array the code reads: its address.
    fn konst<T: Copy + Send + Sync + 'static>(&mut self, v: Vec<T>) -> Value {
        let boxed: Box<[T]> = v.into_boxed_slice();
        let addr = boxed.as_ptr() as i64;
        self.consts.push(Box::new(boxed));
        self.b.ins().iconst(I64, addr)
    }

    fn load_i8(&mut self, base: Value, i: Value) -> Value {
        let a = self.b.ins().iadd(base, i);
        self.b.ins().sload8(I32, flags(), a, 0)
    }

    fn load_i8_strided(&mut self, base: Value, i: Value, stride: i64) -> Value {
        let a = self.index(base, i, stride);
        self.b.ins().sload8(I32, flags(), a, 0)
    }

    fn store_i8(&mut self, v: Value, base: Value, i: Value) {
        let a = self.b.ins().iadd(base, i);
        self.b.ins().istore8(flags(), v, a, 0);
    }

    fn clamp(&mut self, v: Value, lo: i32, hi: i32) -> Value {
        let lo = self.b.ins().iconst(I32, lo as i64);
        let hi = self.b.ins().iconst(I32, hi as i64);
        let v = self.b.ins().smax(v, lo);
        self.b.ins().smin(v, hi)
    }

    fn store_clamped(&mut self, v: Value, base: Value, i: Value, lo: i32, hi: i32) {
        let v = self.clamp(v, lo, hi);
        self.store_i8(v, base, i);
    }

    /// `n` bytes from `src` to `dst` (different buffers).
    fn copy(&mut self, dst: Value, src: Value, n: u64) {
        if n > 0 {
            self.b
                .emit_small_memory_copy(self.config, dst, src, n, 1, 1, true, flags());
        }
    }

    /// A loop `for i in 0..n` (i64); `body` emits one iteration.
    fn for_range(&mut self, n: u64, body: impl FnOnce(&mut Self, Value)) {
        match n {
            0 => {}
            1 => {
                let z = self.b.ins().iconst(I64, 0);
                body(self, z);
            }
            _ => {
                let head = self.b.create_block();
                let exit = self.b.create_block();
                self.b.append_block_param(head, I64);
                let z = self.b.ins().iconst(I64, 0);
                self.b.ins().jump(head, &[BlockArg::Value(z)]);
                self.b.switch_to_block(head);
                let i = self.b.block_params(head)[0];
                body(self, i);
                let next = self.b.ins().iadd_imm_s(i, 1);
                let more = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::SignedLessThan, next, n as i64);
                self.b
                    .ins()
                    .brif(more, head, &[BlockArg::Value(next)], exit, &[]);
                self.b.switch_to_block(exit);
            }
        }
    }

    /// `x` (an `[h, w, c]` tensor) copied into `dst` of `out` rows and
    /// columns, `before` rows above and columns left, the rest `fill`.
    fn pad(
        &mut self,
        x: Value,
        dst: Value,
        s: [u32; 3],
        before: [u32; 2],
        out: [u32; 2],
        fill: i32,
    ) {
        let c = s[2] as i64;
        let total = (out[0] as u64) * (out[1] as u64) * c as u64;
        let byte = self.b.ins().iconst(I8, (fill as i8 as u8) as i64);
        let n = self.b.ins().iconst(I64, total as i64);
        self.b.call_memset(self.config, dst, byte, n);
        let row = s[1] as i64 * c;
        let first = dst;
        let first = self.at(
            first,
            (before[0] as i64 * out[1] as i64 + before[1] as i64) * c,
        );
        let out_row = out[1] as i64 * c;
        self.for_range(s[0] as u64, |g, yy| {
            let d = g.index(first, yy, out_row);
            let src = g.index(x, yy, row);
            g.copy(d, src, row as u64);
        });
    }

    /// The window's input as the kernel reads it: `x` itself when the
    /// window never leaves it, else a copy padded with `fill` in scratch.
    fn padded(&mut self, x: Value, scratch: Value, p: &Placement, c: u32, fill: i32) -> Value {
        let [ph, pw] = p.padded();
        if [ph, pw] == p.input {
            return x;
        }
        self.pad(
            x,
            scratch,
            [p.input[0], p.input[1], c],
            p.pad,
            [ph, pw],
            fill,
        );
        scratch
    }

    /// Per-channel requantization tables (channels past the layer's
    /// padded with zeros to `len`).
    fn requant_tables(&mut self, prep: &Prepared, len: usize) -> Requant {
        let (mult, shift, _, _) = prep.weighted();
        let right = |s: i32| (-s).max(0);
        let mut m = mult.to_vec();
        let mut lmul: Vec<i32> = shift.iter().map(|&s| 1i32 << s.max(0)).collect();
        let mut pow: Vec<i32> = shift
            .iter()
            .map(|&s| match right(s) {
                0 => 0,
                e => 1i32 << (31 - e),
            })
            .collect();
        let mut e0: Vec<i32> = shift.iter().map(|&s| -i32::from(right(s) == 0)).collect();
        m.resize(len, 0);
        lmul.resize(len, 1);
        pow.resize(len, 0);
        e0.resize(len, 0);
        let any_e0 = e0.iter().any(|&v| v != 0);
        Requant {
            mult: self.konst(m),
            lmul: lmul.iter().any(|&v| v != 1).then(|| self.konst(lmul)),
            pow: self.konst(pow),
            e0: any_e0.then(|| self.konst(e0)),
        }
    }

    fn splat(&mut self, ty: cranelift_codegen::ir::Type, v: i64) -> Value {
        let lane = ty.lane_type();
        let c = self.b.ins().iconst(lane, v);
        self.b.ins().splat(ty, c)
    }

    fn vbitcast(&mut self, ty: cranelift_codegen::ir::Type, v: Value) -> Value {
        let f = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(ty, f, v)
    }

    /// Four accumulators of channels `ch0..ch0 + 4` requantized as TFLM's
    /// MultiplyByQuantizedMultiplier (each lane its channel's multiplier
    /// and shifts), plus the output zero point, clamped: the int8 results
    /// in the low four bytes of an i8x16.
    ///
    /// Both steps are one rounding of a 64-bit product, exact in 32×32-bit
    /// signed multiplies (`pmuldq`) and logical shifts:
    /// SaturatingRoundingDoublingHighMul(x, m) (never saturating: m ≥ 0)
    /// is `floor((x·m + 2^30) / 2^31)` — for x·m < 0 TFLM's
    /// `(x·m + 1 − 2^30) / 2^31` towards zero is the same number — and
    /// RoundingDivideByPOT(q, e), `(q >> e) + [q & (2^e−1) > ((2^e−1) >> 1)
    /// plus [q < 0]]`, is `floor((q + 2^(e−1) − [q < 0]) / 2^e)` =
    /// `floor((q·2^(31−e) + 2^30 − [q < 0]·2^(31−e)) / 2^31)` for e ≥ 1
    /// (and `q` for e = 0). Every result fits in int32, so the low 32 bits
    /// of a logical shift are those of the arithmetic one.
    fn requant4(
        &mut self,
        acc: Value,
        t: &Requant,
        ch0: Value,
        out_zp: i32,
        clamp: (i32, i32),
    ) -> Value {
        let o4 = self.b.ins().imul_imm_s(ch0, 4);
        let ld = |g: &mut Self, base: Value| {
            let a = g.b.ins().iadd(base, o4);
            g.b.ins().load(I32X4, flags(), a, 0)
        };
        let x = match t.lmul {
            Some(lmul) => {
                let lm = ld(self, lmul);
                self.b.ins().imul(acc, lm)
            }
            None => acc,
        };
        let m = ld(self, t.mult);
        let pow = ld(self, t.pow);
        let k30 = self.splat(I64X2, 1i64 << 30);
        // The low 32 bits of each 64-bit lane of `lo` then `hi`, in order.
        let mask: Vec<u8> = [0u8, 8, 16, 24].iter().flat_map(|&s| s..s + 4).collect();
        let mask = self.b.func.dfg.immediates.push(mask.into());
        let pack = |g: &mut Self, halves: [Value; 2]| {
            let lo = g.vbitcast(I8X16, halves[0]);
            let hi = g.vbitcast(I8X16, halves[1]);
            let r = g.b.ins().shuffle(lo, hi, mask);
            g.vbitcast(I32X4, r)
        };
        let widen = |g: &mut Self, v: Value, k: usize| {
            if k == 0 {
                g.b.ins().swiden_low(v)
            } else {
                g.b.ins().swiden_high(v)
            }
        };
        // srdhm.
        let mut halves = [x; 2];
        for (k, out) in halves.iter_mut().enumerate() {
            let (xw, mw) = (widen(self, x, k), widen(self, m, k));
            let ab = self.b.ins().imul(xw, mw);
            let v = self.b.ins().iadd(ab, k30);
            *out = self.b.ins().ushr_imm_u(v, 31);
        }
        let q = pack(self, halves);
        // rdbpot.
        let zero = self.splat(I64X2, 0);
        for (k, out) in halves.iter_mut().enumerate() {
            let (qw, pw) = (widen(self, q, k), widen(self, pow, k));
            let prod = self.b.ins().imul(qw, pw);
            let neg = self.b.ins().icmp(IntCC::SignedLessThan, prod, zero);
            let corr = self.b.ins().band(pw, neg);
            let v = self.b.ins().iadd(prod, k30);
            let v = self.b.ins().isub(v, corr);
            *out = self.b.ins().ushr_imm_u(v, 31);
        }
        let mut r = pack(self, halves);
        if let Some(e0) = t.e0 {
            let e0 = ld(self, e0);
            r = self.b.ins().bitselect(e0, q, r);
        }
        let zp = self.splat(I32X4, out_zp as i64);
        let r = self.b.ins().iadd(r, zp);
        let lo = self.splat(I32X4, clamp.0 as i64);
        let hi = self.splat(I32X4, clamp.1 as i64);
        let r = self.b.ins().smax(r, lo);
        let r = self.b.ins().smin(r, hi);
        let r = self.b.ins().snarrow(r, r);
        self.b.ins().snarrow(r, r)
    }

    /// The first `n` (at most 4) bytes of `v` (an i8x16) to `y + ch0`.
    fn store_bytes(&mut self, v: Value, y: Value, ch0: Value, n: usize) {
        let a = self.b.ins().iadd(y, ch0);
        if n == 4 {
            let w = self.vbitcast(I32X4, v);
            let w = self.b.ins().extractlane(w, 0);
            self.b.ins().store(flags(), w, a, 0);
        } else {
            for j in 0..n {
                let e = self.b.ins().extractlane(v, j as u8);
                self.b.ins().store(flags(), e, a, j as i32);
            }
        }
    }

    /// SaturatingRoundingDoublingHighMul of `a` by a multiplier that is
    /// never `i32::MIN` (QuantizeMultiplier's are in `[2^30, 2^31)`).
    fn srdhm(&mut self, a: Value, m: Value) -> Value {
        let a = self.b.ins().sextend(I64, a);
        let m = self.b.ins().sextend(I64, m);
        let ab = self.b.ins().imul(a, m);
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, ab, 0);
        let pos_nudge = self.b.ins().iconst(I64, 1 << 30);
        let neg_nudge = self.b.ins().iconst(I64, 1 - (1 << 30));
        let nudge = self.b.ins().select(neg, neg_nudge, pos_nudge);
        let t = self.b.ins().iadd(ab, nudge);
        // Division by 2^31 rounding towards zero.
        let sign = self.b.ins().sshr_imm_u(t, 63);
        let bias = self.b.ins().band_imm_s(sign, (1i64 << 31) - 1);
        let t = self.b.ins().iadd(t, bias);
        let t = self.b.ins().sshr_imm_u(t, 31);
        self.b.ins().ireduce(I32, t)
    }

    fn srdhm_const(&mut self, a: Value, m: i32) -> Value {
        if m == i32::MIN {
            // Never from QuantizeMultiplier; the exact special case anyway.
            let r = self.b.ins().ineg(a);
            let is_min = self.b.ins().icmp_imm_s(IntCC::Equal, a, i32::MIN as i64);
            let max = self.b.ins().iconst(I32, i32::MAX as i64);
            // srdhm(a, MIN) = -a rounded; for a = MIN it saturates.
            return self.b.ins().select(is_min, max, r);
        }
        let m = self.b.ins().iconst(I32, m as i64);
        self.srdhm(a, m)
    }

    fn rdbpot_masked(&mut self, x: Value, e: Value, mask: Value) -> Value {
        let rem = self.b.ins().band(x, mask);
        let half = self.b.ins().sshr_imm_u(mask, 1);
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
        let neg = self.b.ins().uextend(I32, neg);
        let thr = self.b.ins().iadd(half, neg);
        let q = self.b.ins().sshr(x, e);
        let up = self.b.ins().icmp(IntCC::SignedGreaterThan, rem, thr);
        let up = self.b.ins().uextend(I32, up);
        self.b.ins().iadd(q, up)
    }

    fn rdbpot_const(&mut self, x: Value, e: i32) -> Value {
        if e == 0 {
            return x;
        }
        let mask = ((1i64 << e) - 1) as i32;
        let mask = self.b.ins().iconst(I32, mask as i64);
        let e = self.b.ins().iconst(I32, e as i64);
        self.rdbpot_masked(x, e, mask)
    }

    /// MultiplyByQuantizedMultiplier with a constant multiplier and shift.
    fn mbqm_const(&mut self, x: Value, m: i32, shift: i32) -> Value {
        let x = if shift > 0 {
            self.b.ins().imul_imm_s(x, 1i64 << shift)
        } else {
            x
        };
        let v = self.srdhm_const(x, m);
        self.rdbpot_const(v, (-shift).max(0))
    }

    /// Two nested loops over the output pixels: `body(oy, ox)`.
    fn for_pixels(&mut self, p: &Placement, body: impl FnOnce(&mut Self, Value, Value)) {
        let (oh, ow) = (p.out[0] as u64, p.out[1] as u64);
        self.for_range(oh, |g, oy| g.for_range(ow, |g, ox| body(g, oy, ox)));
    }

    /// The output pixels in pairs along each row: `body(oy, ox, 2)` for
    /// pixels `ox` and `ox + 1`, and `body(oy, ow - 1, 1)` for the last of
    /// an odd row.
    fn for_pixel_pairs(&mut self, p: &Placement, body: impl Fn(&mut Self, Value, Value, usize)) {
        let (oh, ow) = (p.out[0] as u64, p.out[1] as u64);
        self.for_range(oh, |g, oy| {
            g.for_range(ow / 2, |g, pair| {
                let ox = g.b.ins().imul_imm_s(pair, 2);
                body(g, oy, ox, 2);
            });
            if ow % 2 == 1 {
                let ox = g.b.ins().iconst(I64, ow as i64 - 1);
                body(g, oy, ox, 1);
            }
        });
    }

    /// The first input byte of output pixel (oy, ox)'s window, and the
    /// output pixel's first byte.
    fn window_start(
        &mut self,
        k: &Kernel,
        x: Value,
        y: Value,
        oy: Value,
        ox: Value,
        cout: usize,
    ) -> (Value, Value) {
        let p = &k.p;
        let xr = self.index(x, oy, (p.stride[0] as usize * k.pw * k.c) as i64);
        let xp = self.index(xr, ox, (p.stride[1] as usize * k.c) as i64);
        let yr = self.index(y, oy, (p.out[1] as usize * cout) as i64);
        let yp = self.index(yr, ox, cout as i64);
        (xp, yp)
    }

    /// CONV_2D (and fully connected as a 1x1 conv): four output channels
    /// at a time over rows of the window (kernel columns times input
    /// channels, contiguous in the padded input), or over a patch of the
    /// whole window copied together where that takes fewer vector steps.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        k: &Kernel,
        x: Value,
        y: Value,
        patch: Value,
        cout: usize,
        w: &crate::lower::QWeights,
        prep: &Prepared,
        vnni: bool,
    ) {
        let (kh, kw) = (k.p.kernel[0] as usize, k.p.kernel[1] as usize);
        let cin = k.c;
        let row = kw * cin;
        let lanes = if vnni { 16 } else { 8 };
        let patched = uses_patch(kh, row, lanes);
        let (rows, len) = if patched { (1, kh * row) } else { (kh, row) };
        let lenp = round_up(len, lanes);
        let cout4 = round_up(cout, 4);
        // Weights [oc][row][lenp], zero past each row; the kernel row of
        // `r` starts at tap `r * kw`, and a patch is the window in order.
        let mut wq = vec![0i8; cout4 * rows * lenp];
        let mut bias = vec![0i32; cout4];
        // The u8 form reads x + 128: Σ w·(x − zp) = Σ w·(x + 128) − (zp + 128)·Σ w.
        let offset = k.in_zp + if vnni { 128 } else { 0 };
        for oc in 0..cout {
            let first = oc * kh * kw * cin;
            for r in 0..rows {
                let src = &w.weight[first + r * len..first + (r + 1) * len];
                wq[(oc * rows + r) * lenp..][..len].copy_from_slice(src);
            }
            let sum = w.weight[first..first + kh * row]
                .iter()
                .fold(0i32, |a, &v| a.wrapping_add(v as i32));
            bias[oc] = w.bias[oc].wrapping_sub(offset.wrapping_mul(sum));
        }
        let elem = if vnni { 1 } else { 2 };
        let wp = if vnni {
            self.konst(wq)
        } else {
            self.konst(wq.iter().map(|&v| v as i16).collect::<Vec<_>>())
        };
        let bp = self.konst(bias);
        let t = self.requant_tables(prep, cout4);
        let (_, _, lo, hi) = prep.weighted();
        let in_row = (k.pw * cin) as i64;
        let steps = lenp / lanes;
        let row_bytes = (lenp * elem) as i64;
        let oc_stride = rows as i64 * row_bytes;
        let patch_stride = align16(len) as i64;
        // Two output pixels at a time (each weight load feeds both), the
        // last of an odd row alone.
        self.for_pixel_pairs(&k.p, |g, oy, ox, np| {
            let mut srcs = Vec::with_capacity(np);
            let mut yps = Vec::with_capacity(np);
            for p in 0..np {
                let oxp = g.b.ins().iadd_imm_s(ox, p as i64);
                let (xp, yp) = g.window_start(k, x, y, oy, oxp, cout);
                if patched {
                    let base = g.at(patch, p as i64 * patch_stride);
                    for ky in 0..kh {
                        let d = g.at(base, (ky * row) as i64);
                        let s = g.at(xp, ky as i64 * in_row);
                        g.copy(d, s, row as u64);
                    }
                    srcs.push(base);
                } else {
                    srcs.push(xp);
                }
                yps.push(yp);
            }
            let src_row = if patched { len as i64 } else { in_row };
            let block = |g: &mut Self, nj: usize, oc0: Value| {
                let zero = g.splat(I32X4, 0);
                // accs[j][p]: output channel oc0 + j of pixel p.
                let accs: Vec<Vec<Variable>> = (0..nj)
                    .map(|_| {
                        (0..np)
                            .map(|_| {
                                let v = g.b.declare_var(I32X4);
                                g.b.def_var(v, zero);
                                v
                            })
                            .collect()
                    })
                    .collect();
                let w0 = g.index(wp, oc0, oc_stride);
                let bias128 = if vnni {
                    Some(g.splat(I8X16, -128))
                } else {
                    None
                };
                g.for_range(rows as u64, |g, r| {
                    let xrs: Vec<Value> = srcs.iter().map(|&s| g.index(s, r, src_row)).collect();
                    let wr = g.index(w0, r, row_bytes);
                    // The offset of a step's inputs in each row: a constant
                    // (unrolled) or a value (in a loop).
                    let step = |g: &mut Self, at: Result<i32, Value>, ws: Value| {
                        // A row's inputs of this step: base and offset.
                        let addr = |g: &mut Self, xr: Value| match at {
                            Ok(o) => (xr, o),
                            Err(v) => (g.b.ins().iadd(xr, v), 0),
                        };
                        if let Some(flip) = bias128 {
                            // u8 × i8 in fours (`vpdpbusd` where the host has VNNI).
                            let xs: Vec<(Value, Value)> = xrs
                                .iter()
                                .map(|&xr| {
                                    let (xa, off) = addr(g, xr);
                                    let xv = g.b.ins().load(I8X16, flags(), xa, off);
                                    let xu = g.b.ins().bxor(xv, flip);
                                    (g.b.ins().uwiden_low(xu), g.b.ins().uwiden_high(xu))
                                })
                                .collect();
                            for (j, accj) in accs.iter().enumerate() {
                                let wv = g.b.ins().load(
                                    I8X16,
                                    flags(),
                                    ws,
                                    (j as i64 * oc_stride) as i32,
                                );
                                let (wl, wh) =
                                    (g.b.ins().swiden_low(wv), g.b.ins().swiden_high(wv));
                                for (&(xl, xh), &acc) in xs.iter().zip(accj) {
                                    let pl = g.b.ins().imul(wl, xl);
                                    let ph = g.b.ins().imul(wh, xh);
                                    let (pl0, pl1) =
                                        (g.b.ins().swiden_low(pl), g.b.ins().swiden_high(pl));
                                    let (ph0, ph1) =
                                        (g.b.ins().swiden_low(ph), g.b.ins().swiden_high(ph));
                                    let sl = g.b.ins().iadd_pairwise(pl0, pl1);
                                    let sh = g.b.ins().iadd_pairwise(ph0, ph1);
                                    let d = g.b.ins().iadd_pairwise(sl, sh);
                                    let a = g.b.use_var(acc);
                                    let a = g.b.ins().iadd(d, a);
                                    g.b.def_var(acc, a);
                                }
                            }
                        } else {
                            // i16 pairs (`pmaddwd`).
                            let xs: Vec<(Value, Value)> = xrs
                                .iter()
                                .map(|&xr| {
                                    let (xa, off) = addr(g, xr);
                                    let xv = g.b.ins().sload8x8(flags(), xa, off);
                                    (g.b.ins().swiden_low(xv), g.b.ins().swiden_high(xv))
                                })
                                .collect();
                            for (j, accj) in accs.iter().enumerate() {
                                let wv = g.b.ins().load(
                                    I16X8,
                                    flags(),
                                    ws,
                                    (j as i64 * oc_stride) as i32,
                                );
                                let (wl, wh) =
                                    (g.b.ins().swiden_low(wv), g.b.ins().swiden_high(wv));
                                for (&(xl, xh), &acc) in xs.iter().zip(accj) {
                                    let pl = g.b.ins().imul(xl, wl);
                                    let ph = g.b.ins().imul(xh, wh);
                                    let d = g.b.ins().iadd_pairwise(pl, ph);
                                    let a = g.b.use_var(acc);
                                    let a = g.b.ins().iadd(a, d);
                                    g.b.def_var(acc, a);
                                }
                            }
                        }
                    };
                    if steps <= 8 {
                        for s in 0..steps {
                            let ws = g.at(wr, (s * lanes * elem) as i64);
                            step(g, Ok((s * lanes) as i32), ws);
                        }
                    } else {
                        g.for_range(steps as u64, |g, s| {
                            let at = g.b.ins().imul_imm_s(s, lanes as i64);
                            let ws = g.index(wr, s, (lanes * elem) as i64);
                            step(g, Err(at), ws);
                        });
                    }
                });
                let boff = g.b.ins().imul_imm_s(oc0, 4);
                let ba = g.b.ins().iadd(bp, boff);
                let bv = g.b.ins().load(I32X4, flags(), ba, 0);
                for (p, &yp) in yps.iter().enumerate() {
                    // Lane j of the pairwise tree: the sum of accumulator j.
                    let mut v: Vec<Value> = accs.iter().map(|a| g.b.use_var(a[p])).collect();
                    v.resize(4, zero);
                    let s01 = g.b.ins().iadd_pairwise(v[0], v[1]);
                    let s23 = g.b.ins().iadd_pairwise(v[2], v[3]);
                    let sums = g.b.ins().iadd_pairwise(s01, s23);
                    let sums = g.b.ins().iadd(sums, bv);
                    let r = g.requant4(sums, &t, oc0, k.out_zp, (lo, hi));
                    g.store_bytes(r, yp, oc0, nj);
                }
            };
            g.for_range((cout / 4) as u64, |g, ob| {
                let oc0 = g.b.ins().imul_imm_s(ob, 4);
                block(g, 4, oc0);
            });
            if !cout.is_multiple_of(4) {
                let oc0 = g.b.ins().iconst(I64, (cout / 4 * 4) as i64);
                block(g, cout % 4, oc0);
            }
        });
    }

    /// DEPTHWISE_CONV_2D (multiplier 1): eight channels at a time, one
    /// i16x8 product per tap.
    fn depthwise(
        &mut self,
        k: &Kernel,
        x: Value,
        y: Value,
        w: &crate::lower::QWeights,
        prep: &Prepared,
    ) {
        let (kh, kw) = (k.p.kernel[0] as usize, k.p.kernel[1] as usize);
        let c = k.c;
        let c8 = round_up(c, 8);
        let taps = kh * kw;
        let mut w16 = vec![0i16; taps * c8];
        let mut bias = vec![0i32; c8];
        for ch in 0..c {
            let mut sum = 0i32;
            for t in 0..taps {
                let v = w.weight[t * c + ch];
                w16[t * c8 + ch] = v as i16;
                sum = sum.wrapping_add(v as i32);
            }
            bias[ch] = w.bias[ch].wrapping_sub(k.in_zp.wrapping_mul(sum));
        }
        let wp = self.konst(w16);
        let bp = self.konst(bias);
        let t = self.requant_tables(prep, c8);
        let (_, _, lo, hi) = prep.weighted();
        let in_row = (k.pw * c) as i64;
        self.for_pixels(&k.p, |g, oy, ox| {
            let (xp, yp) = g.window_start(k, x, y, oy, ox, c);
            let block = |g: &mut Self, nl: usize, ch0: Value| {
                let boff = g.b.ins().imul_imm_s(ch0, 4);
                let ba = g.b.ins().iadd(bp, boff);
                let acc0 = g.b.declare_var(I32X4);
                let acc1 = g.b.declare_var(I32X4);
                let b0 = g.b.ins().load(I32X4, flags(), ba, 0);
                let b1 = g.b.ins().load(I32X4, flags(), ba, 16);
                g.b.def_var(acc0, b0);
                g.b.def_var(acc1, b1);
                let xc = g.b.ins().iadd(xp, ch0);
                let woff = g.b.ins().imul_imm_s(ch0, 2);
                let wc = g.b.ins().iadd(wp, woff);
                let tap_row = |g: &mut Self, xr: Value, wr: Value| {
                    for kx in 0..kw {
                        let xv = g.b.ins().sload8x8(flags(), xr, (kx * c) as i32);
                        let wv = g.b.ins().load(I16X8, flags(), wr, (kx * c8 * 2) as i32);
                        let prod = g.b.ins().imul(xv, wv);
                        let (pl, ph) = (g.b.ins().swiden_low(prod), g.b.ins().swiden_high(prod));
                        let a = g.b.use_var(acc0);
                        let a = g.b.ins().iadd(a, pl);
                        g.b.def_var(acc0, a);
                        let a = g.b.use_var(acc1);
                        let a = g.b.ins().iadd(a, ph);
                        g.b.def_var(acc1, a);
                    }
                };
                if taps <= 25 {
                    for ky in 0..kh {
                        let xr = g.at(xc, ky as i64 * in_row);
                        let wr = g.at(wc, (ky * kw * c8 * 2) as i64);
                        tap_row(g, xr, wr);
                    }
                } else {
                    g.for_range(kh as u64, |g, ky| {
                        let xr = g.index(xc, ky, in_row);
                        let wr = g.index(wc, ky, (kw * c8 * 2) as i64);
                        tap_row(g, xr, wr);
                    });
                }
                let (a0, a1) = (g.b.use_var(acc0), g.b.use_var(acc1));
                let r0 = g.requant4(a0, &t, ch0, k.out_zp, (lo, hi));
                g.store_bytes(r0, yp, ch0, nl.min(4));
                if nl > 4 {
                    let ch4 = g.b.ins().iadd_imm_s(ch0, 4);
                    let r1 = g.requant4(a1, &t, ch4, k.out_zp, (lo, hi));
                    g.store_bytes(r1, yp, ch4, nl - 4);
                }
            };
            g.for_range((c / 8) as u64, |g, cb| {
                let ch0 = g.b.ins().imul_imm_s(cb, 8);
                block(g, 8, ch0);
            });
            if !c.is_multiple_of(8) {
                let ch0 = g.b.ins().iconst(I64, (c / 8 * 8) as i64);
                block(g, c % 8, ch0);
            }
        });
    }

    /// AVERAGE_POOL_2D and MAX_POOL_2D over a window padded with 0 (average:
    /// the count is of the in-image taps) or -128 (max).
    fn pool(&mut self, k: &Kernel, x: Value, y: Value, kind: PoolKind, clamp: (i32, i32)) {
        let p = k.p;
        let (kh, kw) = (p.kernel[0] as usize, p.kernel[1] as usize);
        let c = k.c;
        let in_row = (k.pw * c) as i64;
        self.for_pixels(&p, |g, oy, ox| {
            let (xp, yp) = g.window_start(k, x, y, oy, ox, c);
            // The in-image taps of the window (average only).
            let count = match kind {
                PoolKind::Max => None,
                PoolKind::Avg => {
                    let span = |g: &mut Self, o: Value, axis: usize| {
                        let start = g.b.ins().imul_imm_s(o, p.stride[axis] as i64);
                        let start = g.b.ins().iadd_imm_s(start, -(p.pad[axis] as i64));
                        let end = g.b.ins().iadd_imm_s(start, p.kernel[axis] as i64);
                        let zero = g.b.ins().iconst(I64, 0);
                        let size = g.b.ins().iconst(I64, p.input[axis] as i64);
                        let lo = g.b.ins().smax(start, zero);
                        let hi = g.b.ins().smin(end, size);
                        g.b.ins().isub(hi, lo)
                    };
                    let rows = span(g, oy, 0);
                    let cols = span(g, ox, 1);
                    let n = g.b.ins().imul(rows, cols);
                    let n = g.b.ins().ireduce(I32, n);
                    let one = g.b.ins().iconst(I32, 1);
                    Some(g.b.ins().smax(n, one))
                }
            };
            g.for_range(c as u64, |g, ch| {
                let acc = g.b.declare_var(I32);
                let init = g.b.ins().iconst(
                    I32,
                    match kind {
                        PoolKind::Max => -128,
                        PoolKind::Avg => 0,
                    },
                );
                g.b.def_var(acc, init);
                let xc = g.b.ins().iadd(xp, ch);
                let tap = |g: &mut Self, a: Value, off: i64| {
                    let v = g.b.ins().sload8(I32, flags(), a, off as i32);
                    let s = g.b.use_var(acc);
                    let s = match kind {
                        PoolKind::Max => g.b.ins().smax(s, v),
                        PoolKind::Avg => g.b.ins().iadd(s, v),
                    };
                    g.b.def_var(acc, s);
                };
                g.for_range(kh as u64, |g, ky| {
                    let xr = g.index(xc, ky, in_row);
                    if kw <= 16 {
                        for kx in 0..kw {
                            tap(g, xr, (kx * c) as i64);
                        }
                    } else {
                        g.for_range(kw as u64, |g, kx| {
                            let a = g.index(xr, kx, c as i64);
                            tap(g, a, 0);
                        });
                    }
                });
                let s = g.b.use_var(acc);
                let v = match count {
                    None => s,
                    Some(n) => {
                        // (s ± n/2) / n, rounding half away from zero.
                        let half = g.b.ins().sshr_imm_u(n, 1);
                        let up = g.b.ins().iadd(s, half);
                        let down = g.b.ins().isub(s, half);
                        let pos = g.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, s, 0);
                        let num = g.b.ins().select(pos, up, down);
                        g.b.ins().sdiv(num, n)
                    }
                };
                g.store_clamped(v, yp, ch, clamp.0, clamp.1);
            });
        });
    }

    /// SOFTMAX: a call to the interpreter's row function.
    #[allow(clippy::too_many_arguments)]
    fn softmax(
        &mut self,
        x: Value,
        y: Value,
        rows: u64,
        depth: u64,
        mult: i32,
        shift: i32,
        diff_min: i32,
    ) {
        let mut sig = Signature::new(self.config.default_call_conv);
        for t in [I64, I64, I64, I64, I32, I32, I32] {
            sig.params.push(AbiParam::new(t));
        }
        let sig = self.b.import_signature(sig);
        let f = self
            .b
            .ins()
            .iconst(I64, softmax_rows as *const () as usize as i64);
        let args = [
            x,
            y,
            self.b.ins().iconst(I64, rows as i64),
            self.b.ins().iconst(I64, depth as i64),
            self.b.ins().iconst(I32, mult as i64),
            self.b.ins().iconst(I32, shift as i64),
            self.b.ins().iconst(I32, diff_min as i64),
        ];
        self.b.ins().call_indirect(sig, f, &args);
    }
}

/// The softmax rows the JIT calls.
extern "C" fn softmax_rows(
    x: *const i8,
    y: *mut i8,
    rows: u64,
    depth: u64,
    mult: i32,
    shift: i32,
    diff_min: i32,
) {
    let n = (rows * depth) as usize;
    // SAFETY: the JIT passes two distinct tensors of `rows * depth` bytes
    // in its memory block.
    let (x, y) = unsafe {
        (
            std::slice::from_raw_parts(x, n),
            std::slice::from_raw_parts_mut(y, n),
        )
    };
    for (row, out) in x.chunks(depth as usize).zip(y.chunks_mut(depth as usize)) {
        softmax_row(row, out, mult, shift, diff_min);
    }
}
