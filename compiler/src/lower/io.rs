//! Float weights in safetensors files, read and written.
//!
//! Weights are a safetensors file of f32 tensors named after the layers of
//! the elaborated network (the names `mnet stats` prints): for a conv,
//! depthwise conv or dense layer `L`, `L.weight` (conv `[out, kh, kw, in]`,
//! depthwise `[1, kh, kw, channels]`, dense `[out, in]`) and `L.bias`
//! (`[out]`); for a batch norm `B` after it, `B.gamma`, `B.beta`, `B.mean`
//! and `B.var` (`[channels]`, epsilon 1e-3); quantization-aware training
//! adds `L.range` (`[min, max]`) for the tensors it quantized.

use super::{FloatWeights, LayerWeights, Lowered};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use thiserror::Error;

/// What is wrong with a weights file, by tensor name.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WeightsError {
    #[error("not a safetensors file: {0}")]
    NotSafetensors(String),
    #[error("the weights have no tensor `{name}` (expected f32 {shape:?})")]
    Missing { name: String, shape: Vec<usize> },
    #[error("tensor `{name}` is {dtype}, expected F32")]
    Dtype { name: String, dtype: String },
    #[error("tensor `{name}` has shape {got:?}, expected {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("tensor `{name}` has a non-finite value at index {index}")]
    NonFinite { name: String, index: usize },
    #[error("tensor `{name}` has a negative variance at index {index}")]
    NegativeVariance { name: String, index: usize },
    #[error("tensor `{name}` is {dtype} {shape:?}, expected F32 [2] (min, max)")]
    RangeShape {
        name: String,
        dtype: String,
        shape: Vec<usize>,
    },
    #[error("tensor `{name}` is not a range: [{min}, {max}]")]
    NotARange { name: String, min: f32, max: f32 },
}

fn deserialize(bytes: &[u8]) -> Result<SafeTensors<'_>, WeightsError> {
    SafeTensors::deserialize(bytes).map_err(|e| WeightsError::NotSafetensors(e.to_string()))
}

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
pub fn read_weights(l: &Lowered, bytes: &[u8]) -> Result<FloatWeights, WeightsError> {
    let st = deserialize(bytes)?;
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, WeightsError> {
        let name_ = || name.to_string();
        let t = st.tensor(name).map_err(|_| WeightsError::Missing {
            name: name_(),
            shape: shape.to_vec(),
        })?;
        if t.dtype() != Dtype::F32 {
            return Err(WeightsError::Dtype {
                name: name_(),
                dtype: format!("{:?}", t.dtype()),
            });
        }
        if t.shape() != shape {
            return Err(WeightsError::Shape {
                name: name_(),
                got: t.shape().to_vec(),
                want: shape.to_vec(),
            });
        }
        let v = f32_values(&t);
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(WeightsError::NonFinite {
                name: name_(),
                index,
            });
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
                if let Some(index) = var.iter().position(|v| *v < 0.0) {
                    return Err(WeightsError::NegativeVariance {
                        name: p.tensors[5].0.clone(),
                        index,
                    });
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
pub fn read_ranges(l: &Lowered, bytes: &[u8]) -> Result<Vec<Option<(f32, f32)>>, WeightsError> {
    let st = deserialize(bytes)?;
    let mut ranges = Vec::with_capacity(l.nodes.len());
    for n in &l.nodes {
        let mut found = None;
        for layer in n.fused.iter().rev().chain([&n.name]) {
            let name = format!("{layer}.range");
            let Ok(t) = st.tensor(&name) else { continue };
            if t.dtype() != Dtype::F32 || t.shape() != [2] {
                return Err(WeightsError::RangeShape {
                    name,
                    dtype: format!("{:?}", t.dtype()),
                    shape: t.shape().to_vec(),
                });
            }
            let v = f32_values(&t);
            if !(v[0].is_finite() && v[1].is_finite() && v[0] <= v[1]) {
                return Err(WeightsError::NotARange {
                    name,
                    min: v[0],
                    max: v[1],
                });
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
