//! The fixed-point arithmetic of TensorFlow Lite Micro's int8 reference
//! kernels, reproduced bit for bit (gemmlowp double rounding, as TFLM builds
//! without `TFLITE_SINGLE_ROUNDING`). The C backend emits the same formulas;
//! see `reference/tflite-int8.md` section 2 for the sources.

/// `QuantizeMultiplier`: a real multiplier as (m in [2^30, 2^31), shift),
/// a positive shift being a left shift.
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if real == 0.0 {
        return (0, 0);
    }
    let (q, mut e) = frexp(real);
    let mut m = (q * (1i64 << 31) as f64).round() as i64; // round half away from zero
    if m == 1i64 << 31 {
        m /= 2;
        e += 1;
    }
    if e < -31 {
        return (0, 0);
    }
    (m as i32, e)
}

/// `frexp`: real = q * 2^e with q in [0.5, 1).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale up first.
        let (q, e) = frexp(x * (1u64 << 54) as f64);
        return (q, e - 54);
    }
    let e = exp - 1022;
    let q = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (q, e)
}

/// SaturatingRoundingDoublingHighMul.
pub fn srdhm(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// RoundingDivideByPOT: round half away from zero.
pub fn rdbpot(x: i32, exponent: i32) -> i32 {
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// MultiplyByQuantizedMultiplier (double rounding).
pub fn mbqm(x: i32, m: i32, shift: i32) -> i32 {
    let left = shift.max(0);
    let right = (-shift).max(0);
    rdbpot(srdhm(x.wrapping_mul(1 << left), m), right)
}

/// TFLM's MEAN over height and width (`reference/tflite-int8.md` §2.8):
/// the rescale's multiplier `(m, e)` with the element count folded in,
/// `k = min(floor(log2 N), 32, 31 + e)`, `m' = (m << k) / N`, `e' = e - k`.
pub fn mean_multiplier(m: i32, e: i32, count: i64) -> (i32, i32) {
    let log2 = 63 - (count.max(1) as u64).leading_zeros() as i32;
    let k = log2.min(32).min(31 + e).max(0);
    ((((m as i64) << k) / count.max(1)) as i32, e - k)
}

/// Quantize a float to the output scale for activation clamps:
/// `zp + round_half_away(f / scale)` in float32.
pub fn quantize_f32(f: f32, scale: f32, zp: i32) -> i32 {
    zp + (f / scale).round() as i32
}

fn sat_shl(v: i32, e: i32) -> i32 {
    let limit = (1i64 << (31 - e)) - 1;
    if v as i64 > limit {
        i32::MAX
    } else if (v as i64) < -limit {
        i32::MIN
    } else {
        v << e
    }
}

/// gemmlowp `exp_on_negative_values` with 5 integer bits (Q5.26 in, Q0.31 out).
pub fn exp_on_negative(v: i32) -> i32 {
    if v == 0 {
        return i32::MAX;
    }
    let q: i32 = 1 << 24;
    let vm = (v & (q - 1)) - q;
    let rem = vm.wrapping_sub(v);
    let x = (vm << 5) + (1 << 28);
    let x2 = srdhm(x, x);
    let x3 = srdhm(x2, x);
    let x4 = srdhm(x2, x2);
    let poly = x + rdbpot(srdhm(rdbpot(x4, 2) + x3, 715827883) + x2, 1);
    let mut r = 1895147668 + srdhm(1895147668, poly);
    let consts = [
        1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242,
    ];
    for (k, c) in (24..=30).zip(consts) {
        if rem & (1 << k) != 0 {
            r = srdhm(r, c);
        }
    }
    r
}

/// gemmlowp `one_over_one_plus_x_for_x_in_0_1` (Q0.31 in and out).
pub fn one_over_one_plus_x(v: i32) -> i32 {
    let sum = v as i64 + i32::MAX as i64;
    let half = ((sum + if sum >= 0 { 1 } else { -1 }) / 2) as i32;
    let mut x = 1515870810i32.wrapping_add(srdhm(half, -1010580540));
    for _ in 0..3 {
        let hx = srdhm(half, x);
        let one_minus = (1i32 << 29).wrapping_sub(hx);
        x = x.wrapping_add(sat_shl(srdhm(x, one_minus), 2));
    }
    sat_shl(x, 1)
}

/// Softmax preparation (beta = 1): (multiplier, left shift, diff_min).
pub fn softmax_params(in_scale: f32) -> (i32, i32, i32) {
    let real = (in_scale as f64 * (1u64 << 26) as f64).min(i32::MAX as f64);
    let (m, shift) = quantize_multiplier(real);
    let diff_min = -(((31u64 << 26) as f64 / (1u64 << shift) as f64).floor() as i32);
    (m, shift, diff_min)
}

/// int8 softmax of one row, as TFLM's reference kernel.
pub fn softmax_row(row: &[i8], out: &mut [i8], mult: i32, shift: i32, diff_min: i32) {
    let mx = *row.iter().max().expect("non-empty row") as i32;
    let mut sum: i32 = 0;
    for &v in row {
        let d = v as i32 - mx;
        if d >= diff_min {
            let s = srdhm(d * (1 << shift), mult);
            sum = sum.wrapping_add(rdbpot(exp_on_negative(s), 12));
        }
    }
    let headroom = (sum as u32).leading_zeros() as i32;
    let shifted = ((sum as i64) << headroom) - (1i64 << 31);
    let scale = one_over_one_plus_x(shifted as i32);
    let bits = 12 - headroom + 23;
    for (o, &v) in out.iter_mut().zip(row) {
        let d = v as i32 - mx;
        *o = if d >= diff_min {
            let s = srdhm(d * (1 << shift), mult);
            let e = exp_on_negative(s);
            (rdbpot(srdhm(scale, e), bits) - 128).clamp(-128, 127) as i8
        } else {
            -128
        };
    }
}

/// gemmlowp's SaturatingRoundingDoublingHighMul on int16.
fn srdhm16(a: i16, b: i16) -> i16 {
    if a == i16::MIN && b == i16::MIN {
        return i16::MAX;
    }
    let ab = a as i32 * b as i32;
    let nudge = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((ab + nudge) / (1 << 15)) as i16
}

/// TFLite's `SaturatingDoublingHighMul` on int16: like [`srdhm16`] but
/// rounding toward zero.
fn sdhm16(a: i16, b: i16) -> i16 {
    if a == i16::MIN && b == i16::MIN {
        return i16::MAX;
    }
    ((a as i32 * b as i32) / (1 << 15)) as i16
}

/// TFLite's `SaturatingLeftShift` on int16.
fn sat_shl16(v: i16, amount: i32) -> i16 {
    (v as i64 * (1i64 << amount)).clamp(i16::MIN as i64, i16::MAX as i64) as i16
}

/// `DownScaleInt32ToInt16Multiplier`.
fn downscale16(m: i32) -> i16 {
    if m >= i32::MAX - (1 << 15) {
        return i16::MAX;
    }
    ((m + (1 << 15)) >> 16) as i16
}

/// The parameters TFLM's HARD_SWISH computes in Prepare (int8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardSwishParams {
    pub input_zero_point: i32,
    pub output_zero_point: i32,
    pub reluish_multiplier: i16,
    pub reluish_exponent: i32,
    pub output_multiplier: i16,
    pub output_exponent: i32,
}

/// HARD_SWISH's Prepare; `None` where TFLM refuses the quantization (an
/// output multiplier of 1 or more: an output scale below 1/128 of the
/// input's) or its kernel would shift past int range (an input scale
/// above 2^24).
pub fn hard_swish_params(
    in_scale: f32,
    in_zp: i32,
    out_scale: f32,
    out_zp: i32,
) -> Option<HardSwishParams> {
    let hires = (1.0f32 / 128.0) * in_scale;
    let reluish_scale = 3.0f32 / 32768.0;
    let (om, oe) = quantize_multiplier((hires / out_scale) as f64);
    let (rm, re) = quantize_multiplier((hires / reluish_scale) as f64);
    // TFLM's kernel shifts left by `reluish_exponent - 1` with `1 << n` in
    // int: at most 30.
    (oe <= 0 && re <= 31).then_some(HardSwishParams {
        input_zero_point: in_zp,
        output_zero_point: out_zp,
        reluish_multiplier: downscale16(rm),
        reluish_exponent: re,
        output_multiplier: downscale16(om),
        output_exponent: oe,
    })
}

/// int8 HARD_SWISH of one value, as TFLite's reference kernel.
pub fn hard_swish(x: i8, p: &HardSwishParams) -> i8 {
    let input = (x as i32 - p.input_zero_point) as i16;
    let hires = input.wrapping_mul(1 << 7);
    let preshift_output = srdhm16(hires, p.output_multiplier);
    let mut reluish = hires;
    if p.reluish_exponent > 0 {
        reluish = sat_shl16(reluish, p.reluish_exponent - 1);
    }
    reluish = srdhm16(reluish, p.reluish_multiplier);
    if p.reluish_exponent > 0 {
        reluish = sat_shl16(reluish, 1);
    }
    if p.reluish_exponent < 0 {
        reluish = rdbpot(reluish as i32, -p.reluish_exponent) as i16;
    }
    reluish = ((reluish as i32 + (1 << 15)) >> 1) as i16;
    let preshift = sdhm16(reluish, preshift_output);
    let out = rdbpot(preshift as i32, -p.output_exponent) as i16;
    // The kernel adds the zero point in int16 (wrapping), then clamps.
    let out = (out as i32 + p.output_zero_point) as i16;
    out.clamp(-128, 127) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_multiplier_examples() {
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        assert_eq!(quantize_multiplier(0.25), (1 << 30, -1));
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        // From the reference: in_scale 0.1 -> softmax mult 1717986944, shift 23, diff_min -248.
        assert_eq!(softmax_params(0.1), (1717986944, 23, -248));
    }

    #[test]
    fn rounding_primitives() {
        assert_eq!(rdbpot(5, 1), 3);
        assert_eq!(rdbpot(-5, 1), -3);
        assert_eq!(rdbpot(4, 1), 2);
        assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(srdhm(1 << 30, 1 << 30), 1 << 29);
        // 100 * 0.5 = 50.
        let (m, s) = quantize_multiplier(0.5);
        assert_eq!(mbqm(100, m, s), 50);
        // SRDHM rounds half up: -50.5 -> -50.
        assert_eq!(mbqm(-101, m, s), -50);
        assert_eq!(exp_on_negative(0), i32::MAX);
    }

    #[test]
    fn hard_swish_is_close_to_the_float_function() {
        // Input in [-4, 4] (scale 8/255, zero point 0), output in
        // [-0.375, 4] (scale 4.375/255, zero point -106).
        let (si, so, zo) = (8.0 / 255.0, 4.375 / 255.0, -106);
        let p = hard_swish_params(si, 0, so, zo).expect("a valid quantization");
        for q in -127i8..=127 {
            let x = q as f32 * si;
            let want = x * (x + 3.0).clamp(0.0, 6.0) / 6.0;
            let got = (hard_swish(q, &p) as i32 - zo) as f32 * so;
            assert!((got - want).abs() <= 2.0 * so, "{x}: {got} vs {want}");
        }
        // An output scale far below the input's is what TFLM refuses.
        assert!(hard_swish_params(1.0, 0, 1.0 / 256.0, 0).is_none());
    }

    #[test]
    fn softmax_of_equal_logits_is_uniform() {
        let (m, s, d) = softmax_params(0.1);
        let mut out = [0i8; 4];
        softmax_row(&[10, 10, 10, 10], &mut out, m, s, d);
        // 1/4 in steps of 1/256 with zero point -128: 64 - 128 = -64.
        assert_eq!(out, [-64; 4]);
    }
}
