//! Audio front-ends: 16-bit PCM WAV reading (`hound`) and the short-time
//! spectra computed from it, as TensorFlow's `tf.signal` computes them —
//! the MFCCs of keyword spotting (49×10 from 1 s at 16 kHz) and the log-mel
//! spectrograms of machine sounds. One mel filter bank (the triangular
//! filters of `tf.signal.linear_to_mel_weight_matrix`, HTK mel scale) under
//! both.

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::path::Path;
use std::sync::Arc;

/// Read a WAV file that must be `rate` Hz, mono, 16-bit integer PCM (its
/// samples; `x / 32768` is the signal `tf.audio.decode_wav` gives). The
/// error says what the file is instead.
pub fn read_wav(path: &Path, rate: u32) -> Result<Vec<i16>, String> {
    let reader = hound::WavReader::open(path).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    if spec.sample_rate != rate
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(format!(
            "{} Hz, {} channel(s), {}-bit {}; expected {rate} Hz mono 16-bit PCM",
            spec.sample_rate,
            spec.channels,
            spec.bits_per_sample,
            match spec.sample_format {
                hound::SampleFormat::Int => "integer",
                hound::SampleFormat::Float => "float",
            }
        ));
    }
    // A header may claim more samples than the file holds: read what is
    // there, never more than the claimed length (bounded by the file).
    let mut out = Vec::with_capacity((reader.len() as usize).min(1 << 24));
    for s in reader.into_samples::<i16>() {
        out.push(s.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A short-time spectral front-end: frames of `frame` samples every
/// `stride`, a periodic Hann window, an `fft`-point real FFT, magnitude
/// (`power` 1) or power (2), `mels` triangular mel filters from `low` to
/// `high` Hz, and the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spectral {
    pub rate: u32,
    pub frame: usize,
    pub stride: usize,
    pub fft: usize,
    pub mels: usize,
    pub low: f64,
    pub high: f64,
    pub power: u32,
}

impl Spectral {
    /// The KWS MFCC front-end's spectrum: 40 ms frames, 20 ms stride,
    /// 1024-point FFT, magnitude, 40 mel bins 20–7600 Hz.
    pub const KWS: Spectral = Spectral {
        rate: 16_000,
        frame: 640,
        stride: 320,
        fft: 1024,
        mels: 40,
        low: 20.0,
        high: 7600.0,
        power: 1,
    };

    /// Frames of a clip of `samples` samples (no padding at the end, as
    /// `tf.signal.stft(pad_end=False)`).
    pub fn frames(&self, samples: usize) -> usize {
        if samples < self.frame {
            0
        } else {
            1 + (samples - self.frame) / self.stride
        }
    }
}

/// HTK's mel scale, as `tf.signal`.
fn hz_to_mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// The precomputed parts of a [`Spectral`] front-end: window, FFT plan and
/// the mel filters as (first bin, weights) runs.
pub struct Frontend {
    spec: Spectral,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    filters: Vec<(usize, Vec<f32>)>,
}

/// Per-thread buffers of a [`Frontend`].
pub struct Scratch {
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft: Vec<Complex<f32>>,
    magnitude: Vec<f32>,
}

impl Frontend {
    pub fn new(spec: Spectral) -> Frontend {
        let window = (0..spec.frame)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / spec.frame as f64).cos())
                    as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(spec.fft);
        Frontend {
            spec,
            window,
            fft,
            filters: mel_filters(&spec),
        }
    }

    pub fn spec(&self) -> &Spectral {
        &self.spec
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            input: vec![0.0; self.spec.fft],
            spectrum: vec![Complex::default(); self.spec.fft / 2 + 1],
            fft: self.fft.make_scratch_vec(),
            magnitude: vec![0.0; self.spec.fft / 2 + 1],
        }
    }

    /// The mel spectrum of one frame starting at `samples[0]` (which holds
    /// at least a frame) into `mel` (`mels` values, before the log).
    pub fn mel_frame(&self, samples: &[f32], s: &mut Scratch, mel: &mut [f32]) {
        let n = self.spec.frame;
        for ((d, &x), &w) in s.input.iter_mut().zip(&samples[..n]).zip(&self.window) {
            *d = x * w;
        }
        s.input[n..].fill(0.0);
        self.fft
            .process_with_scratch(&mut s.input, &mut s.spectrum, &mut s.fft)
            .expect("buffers sized by the plan");
        for (m, c) in s.magnitude.iter_mut().zip(&s.spectrum) {
            let p = c.re * c.re + c.im * c.im;
            *m = if self.spec.power == 2 { p } else { p.sqrt() };
        }
        for (out, (first, w)) in mel.iter_mut().zip(&self.filters) {
            *out = w
                .iter()
                .zip(&s.magnitude[*first..])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
}

/// `tf.signal.linear_to_mel_weight_matrix(mels, fft/2+1, rate, low, high)`
/// as runs of non-zero weights per mel bin (the DC bin has none).
fn mel_filters(spec: &Spectral) -> Vec<(usize, Vec<f32>)> {
    let bins = spec.fft / 2 + 1;
    let nyquist = spec.rate as f64 / 2.0;
    let (lo, hi) = (hz_to_mel(spec.low), hz_to_mel(spec.high));
    let edge = |i: usize| lo + (hi - lo) * i as f64 / (spec.mels + 1) as f64;
    (0..spec.mels)
        .map(|m| {
            let (left, centre, right) = (edge(m), edge(m + 1), edge(m + 2));
            let weights: Vec<(usize, f32)> = (1..bins)
                .filter_map(|k| {
                    let mel = hz_to_mel(nyquist * k as f64 / (bins - 1) as f64);
                    let w = ((mel - left) / (centre - left))
                        .min((right - mel) / (right - centre))
                        .max(0.0);
                    (w > 0.0).then_some((k, w as f32))
                })
                .collect();
            match (weights.first(), weights.last()) {
                (Some(&(first, _)), Some(&(last, _))) => {
                    let mut run = vec![0.0; last - first + 1];
                    for (k, w) in weights {
                        run[k - first] = w;
                    }
                    (first, run)
                }
                _ => (0, Vec::new()),
            }
        })
        .collect()
}

/// MFCCs: the log mel spectrum (`ln(mel + 1e-6)`) of every frame through a
/// DCT-II scaled as `tf.signal.mfccs_from_log_mel_spectrograms`, the first
/// `coefficients` kept. Output `[frames, coefficients]`, row-major.
pub struct Mfcc {
    pub frontend: Frontend,
    pub coefficients: usize,
    dct: Vec<f32>,
}

impl Mfcc {
    /// The KWS front-end: 49×10 from 1 s at 16 kHz.
    pub fn kws() -> Mfcc {
        Mfcc::new(Spectral::KWS, 10)
    }

    pub fn new(spec: Spectral, coefficients: usize) -> Mfcc {
        let n = spec.mels;
        let scale = (2.0 / n as f64).sqrt();
        let dct = (0..coefficients)
            .flat_map(|k| {
                (0..n).map(move |i| {
                    (scale
                        * (std::f64::consts::PI * k as f64 * (2 * i + 1) as f64 / (2 * n) as f64)
                            .cos()) as f32
                })
            })
            .collect();
        Mfcc {
            frontend: Frontend::new(spec),
            coefficients,
            dct,
        }
    }

    /// The shape of the features of a clip of `samples` samples.
    pub fn shape(&self, samples: usize) -> (usize, usize) {
        (self.frontend.spec.frames(samples), self.coefficients)
    }

    /// The features of `samples` into `out` (`frames × coefficients`).
    pub fn compute(&self, samples: &[f32], s: &mut Scratch, out: &mut [f32]) {
        let spec = self.frontend.spec;
        let mut mel = vec![0f32; spec.mels];
        for (f, row) in out
            .chunks_exact_mut(self.coefficients)
            .take(spec.frames(samples.len()))
            .enumerate()
        {
            self.frontend
                .mel_frame(&samples[f * spec.stride..], s, &mut mel);
            for m in mel.iter_mut() {
                *m = (*m + 1e-6).ln();
            }
            for (k, o) in row.iter_mut().enumerate() {
                *o = self.dct[k * spec.mels..(k + 1) * spec.mels]
                    .iter()
                    .zip(&mel)
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filters of tf.signal for the KWS front-end: every filter is a
    /// triangle peaking near 1, the bank starts above 20 Hz and ends below
    /// 7600 Hz.
    #[test]
    fn mel_filters_are_triangles_in_range() {
        let f = mel_filters(&Spectral::KWS);
        assert_eq!(f.len(), 40);
        let hz = |k: usize| 8000.0 * k as f64 / 512.0;
        assert!(hz(f[0].0) > 20.0);
        let last = f.last().unwrap();
        assert!(hz(last.0 + last.1.len() - 1) < 7600.0);
        for (first, w) in &f {
            assert!(!w.is_empty() && *first >= 1);
            let peak = w.iter().cloned().fold(0.0, f32::max);
            assert!(peak > 0.3 && peak <= 1.0, "{peak}");
        }
    }

    /// The MFCCs of a tone in faint noise through the front-end equal a
    /// direct, slow evaluation of the same formulas in f64 (DFT, filters,
    /// log, DCT) to f32 precision.
    #[test]
    fn mfcc_matches_direct_formula() {
        let mfcc = Mfcc::kws();
        let x: Vec<f32> = (0..16_000)
            .map(|n| {
                let noise = ((n as u32).wrapping_mul(2_654_435_761) >> 16) as f32 / 65536.0 - 0.5;
                0.3 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 16_000.0).sin()
                    + 0.01 * noise
            })
            .collect();
        let mut out = vec![0f32; 49 * 10];
        mfcc.compute(&x, &mut mfcc.frontend.scratch(), &mut out);
        let filters = mel_filters(&Spectral::KWS);
        for f in [0usize, 24, 48] {
            let frame: Vec<f64> = (0..640)
                .map(|n| {
                    let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / 640.0).cos();
                    x[f * 320 + n] as f64 * w
                })
                .collect();
            let mag: Vec<f64> = (0..513)
                .map(|k| {
                    let (mut re, mut im) = (0.0, 0.0);
                    for (n, v) in frame.iter().enumerate() {
                        let a = -2.0 * std::f64::consts::PI * (k * n) as f64 / 1024.0;
                        re += v * a.cos();
                        im += v * a.sin();
                    }
                    (re * re + im * im).sqrt()
                })
                .collect();
            let logmel: Vec<f64> = filters
                .iter()
                .map(|(first, w)| {
                    let s: f64 = w
                        .iter()
                        .enumerate()
                        .map(|(i, w)| *w as f64 * mag[first + i])
                        .sum();
                    (s + 1e-6).ln()
                })
                .collect();
            for k in 0..10 {
                let c: f64 = (0..40)
                    .map(|i| {
                        logmel[i]
                            * (std::f64::consts::PI * k as f64 * (2 * i + 1) as f64 / 80.0).cos()
                    })
                    .sum::<f64>()
                    * (2.0f64 / 40.0).sqrt();
                let got = out[f * 10 + k] as f64;
                assert!(
                    (got - c).abs() < 1e-4 * c.abs().max(1.0),
                    "frame {f} coefficient {k}: {got} vs {c}"
                );
            }
        }
    }
}
