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
    fn softmax_of_equal_logits_is_uniform() {
        let (m, s, d) = softmax_params(0.1);
        let mut out = [0i8; 4];
        softmax_row(&[10, 10, 10, 10], &mut out, m, s, d);
        // 1/4 in steps of 1/256 with zero point -128: 64 - 128 = -64.
        assert_eq!(out, [-64; 4]);
    }
}
