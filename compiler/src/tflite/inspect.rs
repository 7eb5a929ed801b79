//! `mnet inspect`: a readable dump of any `.tflite` file.
//!
//! A small bounds-checked flatbuffer reader (every offset is verified before
//! it is followed), so a truncated or corrupt file is a clear error, never a
//! panic. It reads the schema subset in `reference/tflite-int8.md` section 1
//! and prints the model, operator codes, tensors with their quantization,
//! operators with their options, and buffers with their file offsets (so
//! payload alignment is visible). Large payloads are shown by length and hash.

use std::cell::Cell;
use std::fmt::Write;

/// A corrupt or unsupported file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectError(pub String);

type R<T> = Result<T, InspectError>;

fn err<T>(m: impl Into<String>) -> R<T> {
    Err(InspectError(m.into()))
}

/// What one dump may read from vectors: the file's size several times over
/// (a converter's model reads each vector once or twice) plus a fixed
/// allowance. A file whose tables all point at the same long vector would
/// otherwise make a dump quadratic in its size.
fn read_budget(file_len: usize) -> usize {
    file_len.saturating_mul(8).saturating_add(1 << 20)
}

#[derive(Clone, Copy)]
struct Table<'a> {
    buf: &'a [u8],
    /// Vector bytes still to be read in this dump.
    budget: &'a Cell<usize>,
    pos: usize,
    vt: usize,
    vt_len: usize,
}

fn read<const N: usize>(buf: &[u8], at: usize) -> R<[u8; N]> {
    match buf.get(at..at.saturating_add(N)) {
        Some(s) => Ok(s.try_into().expect("length checked")),
        None => err(format!(
            "offset {at} is past the end of the file ({} bytes)",
            buf.len()
        )),
    }
}

fn u16_at(buf: &[u8], at: usize) -> R<u16> {
    Ok(u16::from_le_bytes(read(buf, at)?))
}

fn u32_at(buf: &[u8], at: usize) -> R<u32> {
    Ok(u32::from_le_bytes(read(buf, at)?))
}

impl<'a> Table<'a> {
    fn at(buf: &'a [u8], budget: &'a Cell<usize>, pos: usize) -> R<Table<'a>> {
        let soff = u32_at(buf, pos)? as i32 as i64;
        let vt = pos as i64 - soff;
        if vt < 0 || vt as usize >= buf.len() {
            return err(format!("table at {pos} has a vtable outside the file"));
        }
        let vt = vt as usize;
        let vt_len = u16_at(buf, vt)? as usize;
        if vt_len < 4 || vt + vt_len > buf.len() {
            return err(format!("vtable at {vt} is malformed"));
        }
        Ok(Table {
            buf,
            budget,
            pos,
            vt,
            vt_len,
        })
    }

    fn field(&self, id: usize) -> R<Option<usize>> {
        let slot = 4 + 2 * id;
        if slot + 2 > self.vt_len {
            return Ok(None);
        }
        let off = u16_at(self.buf, self.vt + slot)? as usize;
        Ok((off != 0).then_some(self.pos + off))
    }

    fn u8(&self, id: usize, default: u8) -> R<u8> {
        Ok(match self.field(id)? {
            Some(at) => read::<1>(self.buf, at)?[0],
            None => default,
        })
    }

    fn i32(&self, id: usize, default: i32) -> R<i32> {
        Ok(match self.field(id)? {
            Some(at) => u32_at(self.buf, at)? as i32,
            None => default,
        })
    }

    fn f32(&self, id: usize, default: f32) -> R<f32> {
        Ok(match self.field(id)? {
            Some(at) => f32::from_bits(u32_at(self.buf, at)?),
            None => default,
        })
    }

    fn indirect(&self, id: usize) -> R<Option<usize>> {
        match self.field(id)? {
            Some(at) => {
                let target = at + u32_at(self.buf, at)? as usize;
                if target >= self.buf.len() {
                    return err(format!("offset at {at} points outside the file"));
                }
                Ok(Some(target))
            }
            None => Ok(None),
        }
    }

    fn table(&self, id: usize) -> R<Option<Table<'a>>> {
        match self.indirect(id)? {
            Some(t) => Ok(Some(Table::at(self.buf, self.budget, t)?)),
            None => Ok(None),
        }
    }

    /// (start of elements, count) of a vector with `elem` byte elements.
    fn vector(&self, id: usize, elem: usize) -> R<Option<(usize, usize)>> {
        match self.indirect(id)? {
            Some(v) => {
                let len = u32_at(self.buf, v)? as usize;
                let start = v + 4;
                if len
                    .checked_mul(elem)
                    .and_then(|b| b.checked_add(start))
                    .is_none_or(|end| end > self.buf.len())
                {
                    return err(format!(
                        "vector at {v} ({len} elements) runs past the end of the file"
                    ));
                }
                let bytes = len * elem;
                match self.budget.get().checked_sub(bytes) {
                    Some(left) => self.budget.set(left),
                    None => {
                        return err(format!(
                            "the file's tables read the same data over and over (more than {} \
                             bytes of vectors from a {}-byte file): not a model a converter \
                             writes",
                            read_budget(self.buf.len()),
                            self.buf.len()
                        ))
                    }
                }
                Ok(Some((start, len)))
            }
            None => Ok(None),
        }
    }

    fn tables(&self, id: usize) -> R<Vec<Table<'a>>> {
        let Some((start, len)) = self.vector(id, 4)? else {
            return Ok(vec![]);
        };
        (0..len)
            .map(|k| {
                let at = start + 4 * k;
                Table::at(self.buf, self.budget, at + u32_at(self.buf, at)? as usize)
            })
            .collect()
    }

    fn ints(&self, id: usize) -> R<Vec<i32>> {
        let Some((start, len)) = self.vector(id, 4)? else {
            return Ok(vec![]);
        };
        (0..len)
            .map(|k| Ok(u32_at(self.buf, start + 4 * k)? as i32))
            .collect()
    }

    fn floats(&self, id: usize) -> R<Vec<f32>> {
        Ok(self
            .ints(id)?
            .into_iter()
            .map(|v| f32::from_bits(v as u32))
            .collect())
    }

    fn longs(&self, id: usize) -> R<Vec<i64>> {
        let Some((start, len)) = self.vector(id, 8)? else {
            return Ok(vec![]);
        };
        (0..len)
            .map(|k| Ok(i64::from_le_bytes(read(self.buf, start + 8 * k)?)))
            .collect()
    }

    fn string(&self, id: usize) -> R<String> {
        match self.vector(id, 1)? {
            Some((start, len)) => {
                Ok(String::from_utf8_lossy(&self.buf[start..start + len]).into_owned())
            }
            None => Ok(String::new()),
        }
    }
}

fn op_name(code: i32) -> String {
    match super::operator_name(code) {
        Some(n) => n.to_string(),
        None => format!("BUILTIN_{code}"),
    }
}

fn type_name(t: u8) -> String {
    match t {
        0 => "FLOAT32",
        1 => "FLOAT16",
        2 => "INT32",
        3 => "UINT8",
        4 => "INT64",
        7 => "INT16",
        9 => "INT8",
        _ => return format!("TYPE_{t}"),
    }
    .to_string()
}

fn act_name(a: u8) -> &'static str {
    match a {
        0 => "NONE",
        1 => "RELU",
        2 => "RELU_N1_TO_1",
        3 => "RELU6",
        4 => "TANH",
        _ => "?",
    }
}

fn pad_name(p: u8) -> &'static str {
    if p == 0 {
        "SAME"
    } else {
        "VALID"
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

/// Dump a `.tflite` file as text.
pub fn dump(buf: &[u8]) -> Result<String, InspectError> {
    if buf.len() < 8 {
        return err(format!(
            "the file has {} bytes, too few for a flatbuffer",
            buf.len()
        ));
    }
    if &buf[4..8] != b"TFL3" {
        return err(format!(
            "the file identifier is {:?}, not \"TFL3\": not a TFLite model",
            String::from_utf8_lossy(&buf[4..8])
        ));
    }
    let budget = Cell::new(read_budget(buf.len()));
    let model = Table::at(buf, &budget, u32_at(buf, 0)? as usize)?;
    let mut out = String::new();
    let version = model.i32(0, 0)?;
    let codes = model.tables(1)?;
    let subgraphs = model.tables(2)?;
    let buffers = model.tables(4)?;
    let _ = writeln!(
        out,
        "model: {} bytes, schema version {version}, description {:?}, {} subgraph(s), {} operator code(s), {} buffer(s)",
        buf.len(),
        model.string(3)?,
        subgraphs.len(),
        codes.len(),
        buffers.len()
    );
    let _ = writeln!(out, "operator codes:");
    let mut code_names = Vec::new();
    for (i, c) in codes.iter().enumerate() {
        let deprecated = c.u8(0, 0)? as i8 as i32;
        let code = c.i32(3, 0)?.max(deprecated);
        let _ = writeln!(out, "  {i}: {} version {}", op_name(code), c.i32(2, 1)?);
        code_names.push((code, op_name(code)));
    }
    for (si, sg) in subgraphs.iter().enumerate() {
        let tensors = sg.tables(0)?;
        let _ = writeln!(
            out,
            "subgraph {si} {:?}: inputs {:?}, outputs {:?}",
            sg.string(4)?,
            sg.ints(1)?,
            sg.ints(2)?
        );
        let _ = writeln!(out, "  tensors:");
        for (ti, t) in tensors.iter().enumerate() {
            let mut line = format!(
                "    {ti}: {} {} {:?}",
                t.string(3)?,
                type_name(t.u8(1, 0)?),
                t.ints(0)?
            );
            let b = t.i32(2, 0)? as u32;
            if b != 0 {
                let _ = write!(line, " buffer {b}");
            }
            if let Some(q) = t.table(4)? {
                let scales = q.floats(2)?;
                let zps = q.longs(3)?;
                if !scales.is_empty() {
                    let zp = if zps.iter().all(|z| *z == zps[0]) {
                        zps.first().map(|z| z.to_string()).unwrap_or_default()
                    } else {
                        format!("{zps:?}")
                    };
                    let _ = write!(line, " scale {} zero_point {zp}", short_floats(&scales));
                    if scales.len() > 1 {
                        let _ = write!(line, " axis {}", q.i32(6, 0)?);
                    }
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "  operators:");
        for (oi, op) in sg.tables(3)?.iter().enumerate() {
            let idx = op.i32(0, 0)? as usize;
            let Some((code, name)) = code_names.get(idx) else {
                return err(format!(
                    "operator {oi} names operator code {idx}, which does not exist"
                ));
            };
            let mut line = format!(
                "    {oi}: {name} inputs {:?} outputs {:?}",
                op.ints(1)?,
                op.ints(2)?
            );
            if let Some(o) = op.table(4)? {
                use super::opcode as op;
                let opts = match *code {
                    op::CONV_2D => format!(
                        "padding {} stride {}x{} act {}",
                        pad_name(o.u8(0, 0)?),
                        o.i32(2, 0)?,
                        o.i32(1, 0)?,
                        act_name(o.u8(3, 0)?)
                    ),
                    op::DEPTHWISE_CONV_2D => format!(
                        "padding {} stride {}x{} depth_multiplier {} act {}",
                        pad_name(o.u8(0, 0)?),
                        o.i32(2, 0)?,
                        o.i32(1, 0)?,
                        o.i32(3, 0)?,
                        act_name(o.u8(4, 0)?)
                    ),
                    op::AVERAGE_POOL_2D | op::MAX_POOL_2D => format!(
                        "padding {} stride {}x{} filter {}x{} act {}",
                        pad_name(o.u8(0, 0)?),
                        o.i32(2, 0)?,
                        o.i32(1, 0)?,
                        o.i32(4, 0)?,
                        o.i32(3, 0)?,
                        act_name(o.u8(5, 0)?)
                    ),
                    op::FULLY_CONNECTED | op::ADD => format!("act {}", act_name(o.u8(0, 0)?)),
                    op::SOFTMAX => format!("beta {}", o.f32(0, 0.0)?),
                    op::CONCATENATION => {
                        format!("axis {} act {}", o.i32(0, 0)?, act_name(o.u8(1, 0)?))
                    }
                    op::RESHAPE => format!("new_shape {:?}", o.ints(0)?),
                    op::LEAKY_RELU => format!("alpha {}", o.f32(0, 0.0)?),
                    _ => String::new(),
                };
                if !opts.is_empty() {
                    let _ = write!(line, " ({opts})");
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(out, "buffers:");
    for (bi, b) in buffers.iter().enumerate() {
        match b.vector(0, 1)? {
            Some((start, len)) if len > 0 => {
                let data = &buf[start..start + len];
                let _ = writeln!(
                    out,
                    "  {bi}: {len} bytes at file offset {start}{} fnv1a64 {:016x}",
                    if start % 16 == 0 {
                        " (16-aligned)"
                    } else {
                        " (NOT 16-aligned)"
                    },
                    crate::fnv1a(data.iter().copied())
                );
            }
            _ => {
                let _ = writeln!(out, "  {bi}: empty");
            }
        }
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
    /// with a shape of `dims` ones.
    fn one_tensor_many_times(tensors: u32, dims: u32) -> Vec<u8> {
        let t = 56 + 4 * tensors;
        let mut b = le(&[28]); // root: the model table
        b.extend(b"TFL3");
        b.extend(le(&[6 | 8 << 16, 4])); // 8: vtable, field 0 at 4
        b.extend(le(&[10 | 8 << 16, 0, 4])); // 16: vtable, field 2 at 4
        b.extend(le(&[12, 4])); // 28: model, subgraphs at 36
        b.extend(le(&[1, 4])); // 36: one subgraph, at 44
        b.extend(le(&[36, 4])); // 44: subgraph, tensors at 52
        b.extend(le(&[tensors])); // 52: tensors
        b.extend((0..tensors).flat_map(|k| (t - (56 + 4 * k)).to_le_bytes()));
        b.extend(le(&[t - 8, 4, dims])); // the tensor, its shape at t + 8
        b.extend(le(&vec![1; dims as usize]));
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
