//! The one reader of `.tflite` files: the root model checked (identifier
//! `TFL3`, schema version 3) and read through the accessors planus
//! generates from TensorFlow's `schema.fbs` (`mnet-tflite-schema`), whose
//! every access is bounds-checked; planus errors become messages naming the
//! table and field. What a reading copies out of the file is charged to a
//! [`Budget`], so a file whose tables all share one long vector cannot make
//! a reading quadratic in its size.

use mnet_tflite_schema as fb;
use mnet_tflite_schema::planus::{self, errors::ErrorKind, ReadAsRoot};
use std::cell::Cell;

/// A corrupt file, or one no TFLite runtime reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

pub type Result<T> = std::result::Result<T, ReadError>;

/// A planus error as a sentence.
fn describe(e: &planus::Error) -> String {
    let what = match e.error_kind {
        ErrorKind::InvalidOffset => "an offset points outside the file".to_string(),
        ErrorKind::InvalidLength => "a length runs past the end of the file".to_string(),
        ErrorKind::UnknownEnumTag { source } => format!("unknown value {}", source.tag),
        ErrorKind::UnknownUnionTag { tag } => format!("unknown union tag {tag}"),
        ErrorKind::InvalidVtableLength { length } => format!("invalid vtable length {length}"),
        ErrorKind::InvalidUtf8 { .. } => "a string is not UTF-8".to_string(),
        ErrorKind::MissingRequired => "a required field is missing".to_string(),
        ErrorKind::MissingNullTerminator => "a string is not terminated".to_string(),
        other => other.to_string(),
    };
    format!(
        "{}.{}: {what}",
        e.source_location.type_, e.source_location.method
    )
}

/// Context for a planus result: what was being read.
pub trait Context<T> {
    fn at(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for planus::Result<T> {
    fn at(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ReadError(format!("{}: {}", what(), describe(&e))))
    }
}

/// The raw value behind an unknown enum value, if that is the error.
pub fn unknown_tag(e: &planus::Error) -> Option<i128> {
    match e.error_kind {
        ErrorKind::UnknownEnumTag { source } => Some(source.tag),
        _ => None,
    }
}

/// The root of a `.tflite` file, its identifier checked.
pub fn model(bytes: &[u8]) -> Result<fb::ModelRef<'_>> {
    if bytes.len() < 8 {
        return Err(ReadError(format!(
            "the file is {} bytes, too short for a flatbuffer",
            bytes.len()
        )));
    }
    if bytes.len() > i32::MAX as usize {
        return Err(ReadError(format!(
            "the file is {} bytes: a flatbuffer holds at most 2 GiB (mnet does not read the external buffers of larger models)",
            bytes.len()
        )));
    }
    if &bytes[4..8] != b"TFL3" {
        return Err(ReadError(format!(
            "not a TFLite flatbuffer: the file identifier is {:?}, not \"TFL3\"",
            String::from_utf8_lossy(&bytes[4..8])
        )));
    }
    fb::ModelRef::read_as_root(bytes).at(|| "the root table".into())
}

/// [`model`], of schema version 3 (what TFLite runtimes read).
pub fn model_v3(bytes: &[u8]) -> Result<fb::ModelRef<'_>> {
    let m = model(bytes)?;
    let version = m.version().at(|| "the model".into())?;
    if version != 3 {
        return Err(ReadError(format!(
            "schema version {version}: TFLite runtimes read version 3"
        )));
    }
    Ok(m)
}

/// Bytes a reading may still copy out of a file: several times the file's
/// size (a converter's model is read once or twice) plus a fixed allowance.
pub struct Budget(Cell<usize>);

impl Budget {
    pub fn for_file(len: usize) -> Budget {
        Budget(Cell::new(len.saturating_mul(8).saturating_add(1 << 20)))
    }

    /// Charge `n` bytes.
    pub fn take(&self, n: usize) -> Result<()> {
        let left = self.0.get();
        if n > left {
            return Err(ReadError(
                "the file's tables read the same data over and over (more than 8 times the file's size): not a model a converter writes".into(),
            ));
        }
        self.0.set(left - n);
        Ok(())
    }
}

/// A vector of plain values, copied and charged.
pub fn values<'a, T>(v: Option<planus::Vector<'a, T>>, budget: &Budget) -> Result<Vec<T>>
where
    T: planus::VectorRead<'a>,
{
    let Some(v) = v else { return Ok(Vec::new()) };
    budget.take(v.len().saturating_mul(std::mem::size_of::<T>().max(1)))?;
    Ok(v.iter().collect())
}

/// The quantization of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Quant {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub dimension: i32,
    /// A `details` union is set (block-wise or other non-affine schemes).
    pub details: bool,
}

/// What the importer and the dump need of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i32>,
    /// `shape_signature`: the shape with -1 for dimensions known only at
    /// run time (empty when the file has none).
    pub signature: Vec<i32>,
    /// The element type, or the unknown raw value.
    pub dtype: std::result::Result<fb::TensorType, i128>,
    pub buffer: u32,
    pub quant: Option<Quant>,
    pub sparse: bool,
    pub variable: bool,
}

/// Read tensor `index` of a subgraph.
pub fn tensor(t: fb::TensorRef<'_>, index: usize, budget: &Budget) -> Result<Tensor> {
    let at = || format!("tensor {index}");
    let name = t.name().at(at)?.unwrap_or("").to_string();
    budget.take(name.len())?;
    let shape = values(t.shape().at(at)?, budget)?;
    let signature = values(t.shape_signature().at(at)?, budget)?;
    let dtype = match t.type_() {
        Ok(d) => Ok(d),
        Err(e) => {
            Err(unknown_tag(&e).ok_or_else(|| ReadError(format!("{}: {}", at(), describe(&e))))?)
        }
    };
    let quant = match t.quantization().at(at)? {
        None => None,
        Some(q) => Some(Quant {
            scales: values(q.scale().at(at)?, budget)?,
            zero_points: values(q.zero_point().at(at)?, budget)?,
            dimension: q.quantized_dimension().at(at)?,
            details: q.details().map(|d| d.is_some()).unwrap_or(true),
        }),
    };
    Ok(Tensor {
        name,
        shape,
        signature,
        dtype,
        buffer: t.buffer().at(at)?,
        quant,
        sparse: t.sparsity().at(at)?.is_some(),
        variable: t.is_variable().at(at)?,
    })
}

/// The bytes of buffer `index` (empty for the sentinel and for buffers
/// without data).
pub fn buffer_data<'a>(m: fb::ModelRef<'a>, index: u32) -> Result<&'a [u8]> {
    let at = || format!("buffer {index}");
    let buffers = m.buffers().at(at)?;
    let Some(b) = buffers.and_then(|v| v.get(index as usize)) else {
        let n = buffers.map_or(0, |v| v.len());
        return Err(ReadError(format!(
            "a tensor names buffer {index}, but the model has {n} buffers"
        )));
    };
    let b = b.at(at)?;
    if b.offset().at(at)? > 1 {
        return Err(ReadError(format!(
            "buffer {index} is stored outside the flatbuffer (a model over 2 GiB): mnet reads inline buffers only"
        )));
    }
    Ok(b.data().at(at)?.unwrap_or(&[]))
}

/// (builtin code, version) of an operator code, by the schema's rule: the
/// larger of the deprecated byte and the extended field (`GetBuiltinCode`).
/// An unknown code is returned as its raw value.
pub fn builtin_code(c: fb::OperatorCodeRef<'_>, index: usize) -> Result<(i32, i32)> {
    let at = || format!("operator code {index}");
    let deprecated = c.deprecated_builtin_code().at(at)? as i32;
    let extended = match c.builtin_code() {
        Ok(op) => op as i32,
        Err(e) => match unknown_tag(&e) {
            Some(tag) => i32::try_from(tag).unwrap_or(i32::MAX),
            None => return Err(ReadError(format!("{}: {}", at(), describe(&e)))),
        },
    };
    Ok((deprecated.max(extended), c.version().at(at)?))
}

/// The schema name of a builtin code, or its number.
pub fn operator_name(code: i32) -> String {
    fb::builtin_operator_name(code)
        .map_or_else(|| format!("builtin operator {code}"), str::to_string)
}
