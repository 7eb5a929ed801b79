//! The 2-D sliding window of convolutions and pools, defined once.
//!
//! A [`Window`] is what the source says: kernel (or pool size), stride and
//! padding. Placed over an input of a given height and width it becomes a
//! [`Placement`]: the output size and the padding before each axis as
//! TFLite computes them (`reference/tflite-int8.md` §2: SAME gives
//! `ceil(in / stride)`, VALID `ceil((in - k + 1) / stride)`, the odd padded
//! row or column after), and the in-image taps of every output pixel. Every
//! executor walks windows through a `Placement`: the f32 calibration pass,
//! the int8 reference interpreter, the training engine and the C emitter.

use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Padding {
    Same,
    Valid,
}

impl Padding {
    pub fn as_str(self) -> &'static str {
        match self {
            Padding::Same => "same",
            Padding::Valid => "valid",
        }
    }
}

/// Kernel (or pool size), stride and padding over height and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub kernel: [u32; 2],
    pub stride: [u32; 2],
    pub padding: Padding,
}

impl Window {
    /// A window whose stride is its size (pools), VALID.
    pub fn tiling(size: [u32; 2]) -> Window {
        Window {
            kernel: size,
            stride: size,
            padding: Padding::Valid,
        }
    }

    /// Output size over an input of `input` rows and columns, or why the
    /// window does not fit.
    pub fn out_size(&self, input: [u32; 2]) -> Result<[u32; 2], String> {
        let axis = |i: usize| match self.padding {
            Padding::Same => Ok(input[i].div_ceil(self.stride[i])),
            Padding::Valid if input[i] < self.kernel[i] => Err(format!(
                "window of {} does not fit in an input of {} with `padding: valid`",
                self.kernel[i], input[i]
            )),
            Padding::Valid => Ok((input[i] - self.kernel[i] + 1).div_ceil(self.stride[i])),
        };
        Ok([axis(0)?, axis(1)?])
    }

    /// The window placed over an input of `input` rows and columns (which
    /// it must fit, see [`Window::out_size`]).
    pub fn over(&self, input: [u32; 2]) -> Placement {
        let out = self
            .out_size(input)
            .expect("the window fits its input (checked by shape inference)");
        let pad = |i: usize| {
            let total = (out[i] as i64 - 1) * self.stride[i] as i64 + self.kernel[i] as i64
                - input[i] as i64;
            (total.max(0) / 2) as u32
        };
        Placement {
            input,
            out,
            pad: [pad(0), pad(1)],
            kernel: self.kernel,
            stride: self.stride,
        }
    }
}

/// A window over a concrete input: sizes and the padding before each axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Placement {
    /// Input rows and columns.
    pub input: [u32; 2],
    /// Output rows and columns.
    pub out: [u32; 2],
    /// Padding rows above and columns left of the input.
    pub pad: [u32; 2],
    pub kernel: [u32; 2],
    pub stride: [u32; 2],
}

impl Placement {
    /// Input row of kernel row 0 for output row `oy` (negative in the
    /// padding).
    pub fn row_start(&self, oy: usize) -> i64 {
        oy as i64 * self.stride[0] as i64 - self.pad[0] as i64
    }

    /// Input column of kernel column 0 for output column `ox`.
    pub fn col_start(&self, ox: usize) -> i64 {
        ox as i64 * self.stride[1] as i64 - self.pad[1] as i64
    }

    /// Rows and columns of the input padded all round so that every
    /// window lies inside it: the padding before, the input, and what the
    /// last window reaches past it.
    pub fn padded(&self) -> [u32; 2] {
        [0, 1].map(|i| {
            (self.pad[i] + self.input[i])
                .max((self.out[i].max(1) - 1) * self.stride[i] + self.kernel[i])
        })
    }

    /// The in-image input rows under the window of output row `oy`.
    pub fn rows(&self, oy: usize) -> Range<usize> {
        clip(self.row_start(oy), self.kernel[0], self.input[0])
    }

    /// The in-image input columns under the window of output column `ox`.
    pub fn cols(&self, ox: usize) -> Range<usize> {
        clip(self.col_start(ox), self.kernel[1], self.input[1])
    }

    /// The in-image taps of output pixel (oy, ox), row by row, as (tap
    /// index `ky * kw + kx`, input pixel `iy * w + ix`).
    pub fn taps(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (y0, x0) = (self.row_start(oy), self.col_start(ox));
        let (kw, w) = (self.kernel[1] as usize, self.input[1] as usize);
        self.rows(oy).flat_map(move |iy| {
            let ky = (iy as i64 - y0) as usize;
            self.cols(ox).map(move |ix| {
                let kx = (ix as i64 - x0) as usize;
                (ky * kw + kx, iy * w + ix)
            })
        })
    }

    /// Output pixels (rows times columns).
    pub fn out_pixels(&self) -> usize {
        self.out[0] as usize * self.out[1] as usize
    }
}

/// The part of `[start, start + len)` inside `0..size`.
fn clip(start: i64, len: u32, size: u32) -> Range<usize> {
    let lo = start.clamp(0, size as i64) as usize;
    let hi = (start + len as i64).clamp(0, size as i64) as usize;
    lo..hi.max(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(k: [u32; 2], s: [u32; 2], p: Padding) -> Window {
        Window {
            kernel: k,
            stride: s,
            padding: p,
        }
    }

    #[test]
    fn tflite_padding_split() {
        // 49 rows, kernel 10, stride 1, SAME: total 9, before 4 (the odd row after).
        let p = w([10, 4], [1, 2], Padding::Same).over([49, 10]);
        assert_eq!((p.pad, p.out), ([4, 1], [49, 5]));
        // VALID pads nothing.
        let p = w([10, 4], [1, 2], Padding::Valid).over([49, 10]);
        assert_eq!((p.pad, p.out), ([0, 0], [40, 4]));
        // SAME with stride 2 on odd sizes: 7 -> 4.
        assert_eq!(
            w([3, 3], [2, 2], Padding::Same).out_size([7, 7]),
            Ok([4, 4])
        );
        assert!(w([5, 5], [1, 1], Padding::Valid).out_size([4, 4]).is_err());
    }

    #[test]
    fn taps_are_the_in_image_part_of_the_window() {
        // 3x3 SAME over 4x4: the corner pixel has 4 taps, the centre 9.
        let p = w([3, 3], [1, 1], Padding::Same).over([4, 4]);
        let corner: Vec<_> = p.taps(0, 0).collect();
        assert_eq!(corner, vec![(4, 0), (5, 1), (7, 4), (8, 5)]);
        assert_eq!(p.taps(1, 1).count(), 9);
        assert_eq!(p.rows(0), 0..2);
        assert_eq!(p.cols(3), 2..4);
    }
}
