//! Seeded mutations of test inputs: text (`.mnet` sources, with the
//! language's own tokens spliced in) and bytes (`.tflite`, safetensors,
//! `.npy`, with values that sit on the edges of their fields).

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Fragments of the language that make a mutation reach past the parser.
pub const TOKENS: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "|>",
    "..=",
    "..",
    "%",
    "skippable ",
    "repeat ",
    "return ",
    "width(",
    "choice(",
    "x",
    "0",
    "1",
    "99999999999999999999999",
    "4..=0",
    "KiB",
    "M",
    "\n",
    " ",
    "//",
    "use ",
    "block ",
    "network ",
    "target ",
    "budget ",
    "add(",
    "concat(",
    "reshape(",
    "é",
    "\u{0}",
];

/// One to three edits of a source: cut, delete, splice a token, set a byte,
/// or duplicate a slice (repeats blocks, nesting, statements).
pub fn text(rng: &mut ChaCha8Rng, text: &str) -> String {
    let tokens: Vec<&[u8]> = TOKENS.iter().map(|t| t.as_bytes()).collect();
    String::from_utf8_lossy(&bytes(rng, text.as_bytes(), &tokens)).into_owned()
}

/// Values on the edges of integer and float fields, little-endian.
const EDGES: &[&[u8]] = &[
    &[0, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0, 0, 0, 0x80],
    &[1, 0, 0, 0],
    &[0, 0, 0x80, 0x7f],       // f32 inf
    &[0, 0, 0xc0, 0x7f],       // f32 NaN
    &[0xff, 0xff, 0x7f, 0x7f], // f32 max
    &[0, 0, 0, 1],
];

/// One to three edits of a file: the text edits, plus overwriting four
/// bytes with an edge value and flipping a bit. `tokens` are spliced in as
/// they are (the format's own keywords, e.g. a header's field names).
pub fn bytes(rng: &mut ChaCha8Rng, data: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
    let mut bytes = data.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..7) {
            0 => bytes.truncate(at),
            1 => {
                let end = (at + rng.random_range(1..20)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 if !tokens.is_empty() => {
                let tok = tokens[rng.random_range(0..tokens.len())];
                bytes.splice(at..at, tok.iter().copied());
            }
            3 => bytes[at] = rng.random(),
            4 => {
                let edge = EDGES[rng.random_range(0..EDGES.len())];
                let at = at & !3;
                for (i, b) in edge.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            5 => bytes[at] ^= 1 << rng.random_range(0..8),
            _ => {
                let end = (at + rng.random_range(1..80)).min(bytes.len());
                let slice = bytes[at..end].to_vec();
                bytes.splice(at..at, slice);
            }
        }
    }
    bytes
}

/// One to four edits of the values of a file's data (from byte `from`
/// on), keeping its size: a float32 set to an edge value or a random one,
/// or one bit flipped. Such files parse, so they reach the numerics.
pub fn values(rng: &mut ChaCha8Rng, data: &[u8], from: usize) -> Vec<u8> {
    let mut bytes = data.to_vec();
    let slots = bytes.len().saturating_sub(from) / 4;
    if slots == 0 {
        return bytes;
    }
    for _ in 0..rng.random_range(1..5) {
        let at = from + 4 * rng.random_range(0..slots);
        match rng.random_range(0..3) {
            0 => {
                let edge = EDGES[rng.random_range(0..EDGES.len())];
                bytes[at..at + 4].copy_from_slice(edge);
            }
            1 => {
                let v = rng.random_range(-1e3f32..1e3) * 10f32.powi(rng.random_range(-30..30));
                bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => bytes[at + rng.random_range(0..4)] ^= 1 << rng.random_range(0..8),
        }
    }
    bytes
}
