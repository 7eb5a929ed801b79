//! `mnet inspect`: a readable dump of any `.tflite` file.
//!
//! It reads the file through the one reader ([`super::read`]: the accessors
//! generated from `schema.fbs`, every access bounds-checked, copies
//! charged to a budget), so a truncated or corrupt file is a clear error,
//! never a panic. It prints the model, operator codes, tensors with their
//! quantization, operators with their options, and buffers with their file
//! offsets (so payload alignment is visible). Large payloads are shown by
//! length and hash.

use super::read::{self, Budget, Context};
use mnet_tflite_schema as fb;
use std::fmt::Write;

/// A corrupt or unsupported file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectError(pub String);

impl From<read::ReadError> for InspectError {
    fn from(e: read::ReadError) -> InspectError {
        InspectError(e.0)
    }
}

type R<T> = Result<T, InspectError>;

fn op_name(code: i32) -> String {
    match super::operator_name(code) {
        Some(n) => n.to_string(),
        None => format!("BUILTIN_{code}"),
    }
}

fn type_name(t: &Result<fb::TensorType, i128>) -> String {
    match t {
        Ok(t) => format!("{t:?}").to_uppercase(),
        Err(v) => format!("TYPE_{v}"),
    }
}

fn act_name(a: fb::ActivationFunctionType) -> &'static str {
    use fb::ActivationFunctionType as A;
    match a {
        A::None => "NONE",
        A::Relu => "RELU",
        A::ReluN1To1 => "RELU_N1_TO_1",
        A::Relu6 => "RELU6",
        A::Tanh => "TANH",
        A::SignBit => "SIGN_BIT",
    }
}

fn pad_name(p: fb::Padding) -> &'static str {
    match p {
        fb::Padding::Same => "SAME",
        fb::Padding::Valid => "VALID",
    }
}

fn short_floats(v: &[f32]) -> String {
    if v.len() <= 4 {
        let s: Vec<String> = v.iter().map(|x| format!("{x:e}")).collect();
        return format!("[{}]", s.join(", "));
    }
    let (mn, mx) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    format!("{} values in [{mn:e}, {mx:e}]", v.len())
}

/// The options of an operator, as text (empty for none or options the dump
/// does not show).
fn options_text(o: fb::BuiltinOptionsRef<'_>, budget: &Budget) -> R<String> {
    use fb::BuiltinOptionsRef as O;
    let at = || "operator options".to_string();
    Ok(match o {
        O::Conv2DOptions(o) => format!(
            "padding {} stride {}x{} act {}",
            pad_name(o.padding().at(at)?),
            o.stride_h().at(at)?,
            o.stride_w().at(at)?,
            act_name(o.fused_activation_function().at(at)?)
        ),
        O::DepthwiseConv2DOptions(o) => format!(
            "padding {} stride {}x{} depth_multiplier {} act {}",
            pad_name(o.padding().at(at)?),
            o.stride_h().at(at)?,
            o.stride_w().at(at)?,
            o.depth_multiplier().at(at)?,
            act_name(o.fused_activation_function().at(at)?)
        ),
        O::Pool2DOptions(o) => format!(
            "padding {} stride {}x{} filter {}x{} act {}",
            pad_name(o.padding().at(at)?),
            o.stride_h().at(at)?,
            o.stride_w().at(at)?,
            o.filter_height().at(at)?,
            o.filter_width().at(at)?,
            act_name(o.fused_activation_function().at(at)?)
        ),
        O::FullyConnectedOptions(o) => {
            format!("act {}", act_name(o.fused_activation_function().at(at)?))
        }
        O::AddOptions(o) => format!("act {}", act_name(o.fused_activation_function().at(at)?)),
        O::SoftmaxOptions(o) => format!("beta {}", o.beta().at(at)?),
        O::ConcatenationOptions(o) => format!(
            "axis {} act {}",
            o.axis().at(at)?,
            act_name(o.fused_activation_function().at(at)?)
        ),
        O::ReshapeOptions(o) => {
            format!(
                "new_shape {:?}",
                read::values(o.new_shape().at(at)?, budget)?
            )
        }
        O::LeakyReluOptions(o) => format!("alpha {}", o.alpha().at(at)?),
        O::ReducerOptions(o) => format!("keep_dims {}", o.keep_dims().at(at)?),
        _ => String::new(),
    })
}

/// Dump a `.tflite` file as text.
pub fn dump(buf: &[u8]) -> Result<String, InspectError> {
    let model = read::model(buf)?;
    let budget = Budget::for_file(buf.len());
    let m = || "the model".to_string();
    let mut out = String::new();
    let codes: Vec<_> = match model.operator_codes().at(m)? {
        Some(v) => v.iter().collect::<Result<_, _>>().at(m)?,
        None => vec![],
    };
    let subgraphs: Vec<_> = match model.subgraphs().at(m)? {
        Some(v) => v.iter().collect::<Result<_, _>>().at(m)?,
        None => vec![],
    };
    let buffers = model.buffers().at(m)?.map_or(0, |b| b.len());
    let description = model.description().at(m)?.unwrap_or("");
    budget.take(description.len())?;
    let _ = writeln!(
        out,
        "model: {} bytes, schema version {}, description {description:?}, {} subgraph(s), {} operator code(s), {buffers} buffer(s)",
        buf.len(),
        model.version().at(m)?,
        subgraphs.len(),
        codes.len(),
    );
    let _ = writeln!(out, "operator codes:");
    let mut code_names = Vec::new();
    for (i, c) in codes.iter().enumerate() {
        let (code, version) = read::builtin_code(*c, i)?;
        let _ = writeln!(out, "  {i}: {} version {version}", op_name(code));
        code_names.push(op_name(code));
    }
    for (si, sg) in subgraphs.iter().enumerate() {
        let at = || format!("subgraph {si}");
        let name = sg.name().at(at)?.unwrap_or("");
        budget.take(name.len())?;
        let _ = writeln!(
            out,
            "subgraph {si} {name:?}: inputs {:?}, outputs {:?}",
            read::values(sg.inputs().at(at)?, &budget)?,
            read::values(sg.outputs().at(at)?, &budget)?
        );
        let _ = writeln!(out, "  tensors:");
        for (ti, t) in sg.tensors().at(at)?.into_iter().flatten().enumerate() {
            let t = read::tensor(t.at(|| format!("tensor {ti}"))?, ti, &budget)?;
            let mut line = format!("    {ti}: {} {} {:?}", t.name, type_name(&t.dtype), t.shape);
            if !t.signature.is_empty() && t.signature != t.shape {
                // Dimensions known only at run time (-1): a dynamic batch.
                let _ = write!(line, " signature {:?}", t.signature);
            }
            if t.buffer != 0 {
                let _ = write!(line, " buffer {}", t.buffer);
            }
            if let Some(q) = &t.quant {
                let (scales, zps) = (&q.scales, &q.zero_points);
                if !scales.is_empty() {
                    let zp = if zps.iter().all(|z| *z == zps[0]) {
                        zps.first().map(|z| z.to_string()).unwrap_or_default()
                    } else {
                        format!("{zps:?}")
                    };
                    let _ = write!(line, " scale {} zero_point {zp}", short_floats(scales));
                    if scales.len() > 1 {
                        let _ = write!(line, " axis {}", q.dimension);
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "  operators:");
        for (oi, op) in sg.operators().at(at)?.into_iter().flatten().enumerate() {
            let at = || format!("operator {oi}");
            let op = op.at(at)?;
            let idx = op.opcode_index().at(at)? as usize;
            let Some(name) = code_names.get(idx) else {
                return Err(InspectError(format!(
                    "operator {oi} names operator code {idx}, which does not exist"
                )));
            };
            let mut line = format!(
                "    {oi}: {name} inputs {:?} outputs {:?}",
                read::values(op.inputs().at(at)?, &budget)?,
                read::values(op.outputs().at(at)?, &budget)?
            );
            if let Some(o) = op.builtin_options().at(at)? {
                let opts = options_text(o, &budget)?;
                if !opts.is_empty() {
                    let _ = write!(line, " ({opts})");
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let metadata: Vec<_> = match model.metadata().at(m)? {
        Some(v) => v.iter().collect::<Result<_, _>>().at(m)?,
        None => vec![],
    };
    if !metadata.is_empty() {
        let _ = writeln!(out, "metadata:");
    }
    for (k, entry) in metadata.iter().enumerate() {
        let at = || format!("metadata {k}");
        let name = entry.name().at(at)?.unwrap_or("");
        budget.take(name.len())?;
        let index = entry.buffer().at(at)?;
        let mut line = format!("  {name:?}: buffer {index}");
        if name == "OfflineMemoryAllocation" {
            let data = read::buffer_data(model, index)?;
            let words: Vec<i32> = data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            if let [version, subgraph, count, offsets @ ..] = &words[..] {
                let _ = write!(
                    line,
                    " (version {version}, subgraph {subgraph}, {count} tensors, offsets {offsets:?})"
                );
            }
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "buffers:");
    for bi in 0..buffers {
        let data = read::buffer_data(model, bi as u32)?;
        budget.take(data.len())?;
        if data.is_empty() {
            let _ = writeln!(out, "  {bi}: empty");
            continue;
        }
        let start = data.as_ptr() as usize - buf.as_ptr() as usize;
        let _ = writeln!(
            out,
            "  {bi}: {} bytes at file offset {start}{} fnv1a64 {:016x}",
            data.len(),
            if start.is_multiple_of(16) {
                " (16-aligned)"
            } else {
                " (NOT 16-aligned)"
            },
            crate::fnv1a(data.iter().copied())
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A model whose one subgraph lists `tensors` offsets, all to one tensor
    /// with a shape of `dims` ones; the vtables at the end (where a
    /// back-to-front builder puts them), the tensor's shared with the
    /// subgraph's.
    fn one_tensor_many_times(tensors: u32, dims: u32) -> Vec<u8> {
        let t = 36 + 4 * tensors; // the tensor table
        let v = t + 12 + 4 * dims; // vtables: one-field tables, then the model's
        let neg = |x: u32| x.wrapping_neg();
        let mut b = le(&[8]); // root: the model table
        b.extend(b"TFL3");
        b.extend(le(&[neg(v + 8 - 8), 4])); // 8: model, subgraphs at 16
        b.extend(le(&[1, 4])); // 16: one subgraph, at 24
        b.extend(le(&[neg(v - 24), 4])); // 24: subgraph, tensors at 32
        b.extend(le(&[tensors])); // 32: tensors
        b.extend((0..tensors).flat_map(|k| (t - (36 + 4 * k)).to_le_bytes()));
        b.extend(le(&[neg(v - t), 4, dims])); // the tensor, its shape at t + 8
        b.extend(le(&vec![1; dims as usize]));
        b.extend(le(&[6 | 8 << 16, 4])); // v: vtable, field 0 at 4
        b.extend(le(&[10 | 8 << 16, 0, 4])); // v + 8: vtable, field 2 at 4
        b
    }

    #[test]
    fn a_small_file_that_repeats_one_tensor_is_dumped() {
        let dump = dump(&one_tensor_many_times(3, 4)).unwrap();
        assert_eq!(dump.matches("INT8").count(), 0);
        assert_eq!(dump.matches("FLOAT32 [1, 1, 1, 1]").count(), 3, "{dump}");
    }

    /// 16 000 tensor offsets at one 16 000-dimension tensor: a 128 KB file
    /// whose dump would be 4 GB. It is an error after reading a bounded
    /// amount instead.
    #[test]
    fn a_file_that_repeats_one_tensor_endlessly_is_an_error() {
        let bytes = one_tensor_many_times(16_000, 16_000);
        assert!(bytes.len() < 130_000);
        let e = dump(&bytes).unwrap_err();
        assert!(e.0.contains("read the same data over and over"), "{}", e.0);
    }
}
