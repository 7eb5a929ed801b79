//! The one `.npy` reader: NumPy's array format, version 1 to 3, C order,
//! little-endian float32, int32 and int64 and int8 (what calibration data,
//! training inputs, labels and int8 inputs are). Every check names what it found, so a caller
//! only adds which file it was.

use thiserror::Error;

/// Why bytes are not the array a caller needs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NpyError {
    #[error("not a .npy file (no \\x93NUMPY magic)")]
    NotNpy,
    #[error("unsupported .npy version {0}")]
    Version(u8),
    #[error("the .npy header is truncated or not text")]
    Truncated,
    #[error("the .npy header has no {0}: {1}")]
    Header(&'static str, String),
    #[error("the array is {got}, expected {want}")]
    Dtype { got: String, want: &'static str },
    #[error("the array is in Fortran order; save it C-ordered (numpy's default)")]
    FortranOrder,
    #[error("the array has shape {got:?}, expected {want}")]
    Shape { got: Vec<usize>, want: String },
    #[error("the array holds {got} bytes of data, its header says {want}")]
    Size { got: usize, want: usize },
    #[error("the array has a non-finite value at index {0}")]
    NonFinite(usize),
    /// The index and the value, as written.
    #[error("the array's value at index {0} is {1}, beyond ±{MAX_INPUT:e}: training and int8 quantization overflow past it (scale the data)")]
    TooLarge(usize, String),
    #[error("label {0} at index {1} is negative")]
    NegativeLabel(i64, usize),
}

/// Largest magnitude of an input value (calibration data, training inputs):
/// squares and sums of a batch stay far inside f32, and an int8 scale of
/// it stays a normal float with TFLM's requantization in range.
pub const MAX_INPUT: f32 = 1e9;

/// A parsed `.npy` array: its element type (`descr`), shape and raw data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Npy<'a> {
    pub descr: String,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// The value of `'key':` in the header dictionary (up to the next `,` at
/// the top level, or the closing parenthesis of a tuple).
fn field<'h>(header: &'h str, key: &'static str) -> Result<&'h str, NpyError> {
    let missing = || NpyError::Header(key, header.trim().to_string());
    let rest = header
        .split_once(&format!("'{key}':"))
        .map(|(_, r)| r.trim_start())
        .ok_or_else(missing)?;
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    };
    Ok(rest[..end.ok_or_else(missing)?].trim())
}

/// Parse the header of a `.npy` file.
pub fn parse(bytes: &[u8]) -> Result<Npy<'_>, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::NotNpy);
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        2 | 3 => return Err(NpyError::Truncated),
        v => return Err(NpyError::Version(v)),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or(NpyError::Truncated)?;
    let descr = field(header, "descr")?
        .trim_matches(['\'', '"'])
        .to_string();
    if field(header, "fortran_order")? != "False" {
        return Err(NpyError::FortranOrder);
    }
    let dims = field(header, "shape")?;
    let shape = dims
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NpyError::Header("shape", header.trim().to_string()))?;
    Ok(Npy {
        descr,
        shape,
        data: &bytes[start + len..],
    })
}

impl Npy<'_> {
    fn elements(&self, width: usize) -> Result<usize, NpyError> {
        let count = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(NpyError::Size {
                got: self.data.len(),
                want: usize::MAX,
            })?;
        let want = count.saturating_mul(width);
        if self.data.len() != want {
            return Err(NpyError::Size {
                got: self.data.len(),
                want,
            });
        }
        Ok(count)
    }

    /// The array is `[N, ...sample]` with N at least 1.
    fn samples_of(&self, sample: &[usize]) -> Result<(), NpyError> {
        if self.shape.len() != sample.len() + 1 || self.shape[1..] != *sample || self.shape[0] == 0
        {
            let dims: Vec<String> = sample.iter().map(|d| d.to_string()).collect();
            return Err(NpyError::Shape {
                got: self.shape.clone(),
                want: format!("[N, {}]", dims.join(", ")),
            });
        }
        Ok(())
    }

    /// Float32 samples shaped `[N, ...sample]` (N at least 1), one vector a
    /// sample; every value finite and at most [`MAX_INPUT`] in magnitude.
    pub fn f32_samples(&self, sample: &[usize]) -> Result<Vec<Vec<f32>>, NpyError> {
        if self.descr != "<f4" {
            return Err(NpyError::Dtype {
                got: self.descr.clone(),
                want: "float32 ('<f4')",
            });
        }
        self.samples_of(sample)?;
        self.elements(4)?;
        let values: Vec<f32> = self
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(NpyError::NonFinite(i));
        }
        if let Some(i) = values.iter().position(|v| v.abs() > MAX_INPUT) {
            return Err(NpyError::TooLarge(i, format!("{:e}", values[i])));
        }
        let per: usize = sample.iter().product();
        Ok(values.chunks(per.max(1)).map(|c| c.to_vec()).collect())
    }

    /// The samples of a `[N, ...sample]` array (N at least 1) as int8:
    /// int8 data as it is, float32 data quantized with `q` (as TFLite's
    /// QUANTIZE does).
    pub fn i8_samples(
        &self,
        sample: &[usize],
        q: crate::lower::QParams,
    ) -> Result<Vec<Vec<i8>>, NpyError> {
        if self.descr == "<f4" {
            return Ok(self
                .f32_samples(sample)?
                .into_iter()
                .map(|row| row.into_iter().map(|v| q.quantize(v)).collect())
                .collect());
        }
        if self.descr != "|i1" {
            return Err(NpyError::Dtype {
                got: self.descr.clone(),
                want: "int8 ('|i1') or float32 ('<f4')",
            });
        }
        self.samples_of(sample)?;
        self.elements(1)?;
        let per: usize = sample.iter().product();
        Ok(self
            .data
            .chunks(per.max(1))
            .map(|c| c.iter().map(|&b| b as i8).collect())
            .collect())
    }

    /// Class labels: a one-dimensional int32 or int64 array, no negatives.
    pub fn labels(&self) -> Result<Vec<usize>, NpyError> {
        let width = match self.descr.as_str() {
            "<i4" => 4,
            "<i8" => 8,
            _ => {
                return Err(NpyError::Dtype {
                    got: self.descr.clone(),
                    want: "int32 ('<i4') or int64 ('<i8')",
                })
            }
        };
        if self.shape.len() != 1 {
            return Err(NpyError::Shape {
                got: self.shape.clone(),
                want: "[N]".into(),
            });
        }
        self.elements(width)?;
        self.data
            .chunks_exact(width)
            .enumerate()
            .map(|(i, c)| {
                let v = if width == 8 {
                    i64::from_le_bytes(c.try_into().expect("8 bytes"))
                } else {
                    i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64
                };
                usize::try_from(v).map_err(|_| NpyError::NegativeLabel(v, i))
            })
            .collect()
    }
}

/// A version-1 `.npy` file of element type `descr` (`<f4`, `<i8`, ...),
/// C order, `shape`, holding `data` as given (the header is padded to 64
/// bytes as numpy writes it).
pub fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_numpy_writes_and_names_what_is_wrong() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b = encode("<f4", &[2, 2], &data);
        let a = parse(&b).unwrap();
        assert_eq!(a.shape, vec![2, 2]);
        assert_eq!(
            a.f32_samples(&[2]).unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert_eq!(
            a.f32_samples(&[4]).unwrap_err().to_string(),
            "the array has shape [2, 2], expected [N, 4]"
        );
        assert!(matches!(a.labels(), Err(NpyError::Dtype { .. })));
        let l = encode(
            "<i8",
            &[2],
            &[3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(parse(&l).unwrap().labels().unwrap(), vec![3, 1]);
        assert_eq!(parse(b"junk").unwrap_err(), NpyError::NotNpy);
        let short = encode("<f4", &[2, 2], &data[..8]);
        assert!(matches!(
            parse(&short).unwrap().f32_samples(&[2]),
            Err(NpyError::Size { got: 8, want: 16 })
        ));
        let huge: Vec<u8> = [1.0f32, -3e38]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            parse(&encode("<f4", &[1, 2], &huge))
                .unwrap()
                .f32_samples(&[2]),
            Err(NpyError::TooLarge(1, "-3e38".into()))
        );
    }
}
