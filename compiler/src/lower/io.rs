//! Float weights and calibration data from files.
//!
//! Weights are a safetensors file of f32 tensors named after the layers of
//! the elaborated network (the names `mnet stats` prints): for a conv,
//! depthwise conv or dense layer `L`, `L.weight` (conv `[out, kh, kw, in]`,
//! depthwise `[1, kh, kw, channels]`, dense `[out, in]`) and `L.bias`
//! (`[out]`); for a batch norm `B` after it, `B.gamma`, `B.beta`, `B.mean`
//! and `B.var` (`[channels]`, epsilon 1e-3). Calibration data is a `.npy`
//! array of float32 shaped `[N, ...input shape]`.

use super::{FloatWeights, LayerWeights, Lowered};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;

/// The tensors a network's weights file must hold: (name, shape).
pub fn expected_tensors(l: &Lowered) -> Vec<(String, Vec<usize>)> {
    l.nodes
        .iter()
        .filter_map(|n| n.params.as_ref())
        .flat_map(|p| p.tensors.iter().cloned())
        .collect()
}

/// The values of an F32 tensor (little-endian in the file).
fn f32_values(t: &safetensors::tensor::TensorView) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Read weights for a network; every problem is reported by tensor name.
pub fn read_weights(l: &Lowered, bytes: &[u8]) -> Result<FloatWeights, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
        let t = st
            .tensor(name)
            .map_err(|_| format!("the weights have no tensor `{name}` (expected f32 {shape:?})"))?;
        if t.dtype() != Dtype::F32 {
            return Err(format!("tensor `{name}` is {:?}, expected F32", t.dtype()));
        }
        if t.shape() != shape {
            return Err(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.shape()
            ));
        }
        let v = f32_values(&t);
        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "tensor `{name}` has a non-finite value at index {bad}"
            ));
        }
        Ok(v)
    };
    let mut layers = BTreeMap::new();
    for n in &l.nodes {
        let Some(p) = &n.params else { continue };
        let mut values = Vec::with_capacity(p.tensors.len());
        for (name, shape) in &p.tensors {
            values.push(get(name, shape)?);
        }
        let mut values = values.into_iter();
        let (weight, bias) = (values.next(), values.next());
        let batch_norm = match (values.next(), values.next(), values.next(), values.next()) {
            (Some(gamma), Some(beta), Some(mean), Some(var)) => {
                if let Some(i) = var.iter().position(|v| *v < 0.0) {
                    return Err(format!(
                        "tensor `{}` has a negative variance at index {i}",
                        p.tensors[5].0
                    ));
                }
                Some([gamma, beta, mean, var])
            }
            _ => None,
        };
        layers.insert(
            n.name.clone(),
            LayerWeights {
                weight: weight.expect("a weight tensor"),
                bias: bias.expect("a bias tensor"),
                batch_norm,
            },
        );
    }
    Ok(FloatWeights { layers })
}

/// Activation ranges learned by quantization-aware training (`mnet train
/// --qat` writes a tensor `LAYER.range` = `[min, max]` per quantized
/// tensor), one per lowered node: the range of the last layer whose output
/// the node's output is (its fused activation or batch norm, else itself).
pub fn read_ranges(l: &Lowered, bytes: &[u8]) -> Result<Vec<Option<(f32, f32)>>, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut ranges = Vec::with_capacity(l.nodes.len());
    for n in &l.nodes {
        let mut found = None;
        for layer in n.fused.iter().rev().chain([&n.name]) {
            let name = format!("{layer}.range");
            let Ok(t) = st.tensor(&name) else { continue };
            if t.dtype() != Dtype::F32 || t.shape() != [2] {
                return Err(format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 [2] (min, max)",
                    t.dtype(),
                    t.shape()
                ));
            }
            let v = f32_values(&t);
            if !(v[0].is_finite() && v[1].is_finite() && v[0] <= v[1]) {
                return Err(format!(
                    "tensor `{name}` is not a range: [{}, {}]",
                    v[0], v[1]
                ));
            }
            found = Some((v[0], v[1]));
            break;
        }
        ranges.push(found);
    }
    Ok(ranges)
}

/// Serialise weights (the format [`read_weights`] reads).
pub fn write_weights(l: &Lowered, w: &FloatWeights) -> Vec<u8> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for n in &l.nodes {
        let (Some(p), Some(lw)) = (&n.params, w.layers.get(&n.name)) else {
            continue;
        };
        let mut values = vec![&lw.weight, &lw.bias];
        values.extend(lw.batch_norm.iter().flatten());
        for ((name, shape), v) in p.tensors.iter().zip(values) {
            tensors.push((name.clone(), shape.clone(), bytes(v)));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                    .expect("consistent view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialise weights")
}

/// Read float32 calibration inputs from a `.npy` file shaped
/// `[N, ...input_shape]`.
pub fn read_npy_inputs(bytes: &[u8], input_shape: &[u32]) -> Result<Vec<Vec<f32>>, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .ok_or("the .npy header is truncated")?;
    if !header.contains("'descr': '<f4'") {
        return Err(format!(
            "calibration data must be float32 ('<f4'), header: {}",
            header.trim()
        ));
    }
    if header.contains("'fortran_order': True") {
        return Err("calibration data must be C-ordered".into());
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or("the .npy header has no shape")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension `{s}` in the .npy shape"))
        })
        .collect::<Result<_, _>>()?;
    let want: Vec<usize> = input_shape.iter().map(|&d| d as usize).collect();
    if shape.len() != want.len() + 1 || shape[1..] != want[..] || shape[0] == 0 {
        return Err(format!(
            "calibration data has shape {shape:?}, expected [N, {}]",
            want.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let data = &bytes[start + header_len..];
    let per: usize = want.iter().product();
    if data.len() != shape[0] * per * 4 {
        return Err(format!(
            "calibration data holds {} bytes, expected {}",
            data.len(),
            shape[0] * per * 4
        ));
    }
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err("calibration data has non-finite values".into());
    }
    Ok(values.chunks(per).map(|c| c.to_vec()).collect())
}
