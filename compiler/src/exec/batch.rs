//! Many int8 inputs through one quantized network, in parallel: the one
//! place `mnet run`, `mnet eval --int8` and the search's int8 evaluation
//! get their outputs from. The engine is the Cranelift JIT
//! ([`crate::back::jit`]) or the reference interpreter ([`super::interp`]);
//! the two are bit-exact, the JIT 17–30× faster (BENCHMARKS.md).

use rayon::prelude::*;

use crate::back::jit;
use crate::lower::QuantGraph;

use super::interp::{self, Prepared};

/// Which engine runs the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Jit,
    Interp,
}

/// A network ready to run: compiled by the JIT, or the interpreter's
/// inputs.
pub struct Runner<'a> {
    graph: &'a QuantGraph,
    prepared: &'a [Prepared],
    jit: Option<jit::Compiled>,
}

impl<'a> Runner<'a> {
    /// The network on `engine`; the JIT's error when it cannot compile it.
    pub fn new(
        graph: &'a QuantGraph,
        prepared: &'a [Prepared],
        engine: Engine,
    ) -> Result<Self, jit::Error> {
        let jit = match engine {
            Engine::Jit => Some(jit::compile(graph, prepared, &jit::Options::default())?),
            Engine::Interp => None,
        };
        Ok(Runner {
            graph,
            prepared,
            jit,
        })
    }

    /// The JIT where it compiles the network, else the interpreter (the
    /// results are the same; the reason is returned beside it).
    pub fn fastest(graph: &'a QuantGraph, prepared: &'a [Prepared]) -> (Self, Option<jit::Error>) {
        match Self::new(graph, prepared, Engine::Jit) {
            Ok(r) => (r, None),
            Err(e) => (
                Runner {
                    graph,
                    prepared,
                    jit: None,
                },
                Some(e),
            ),
        }
    }

    /// The engine it runs on.
    pub fn engine(&self) -> Engine {
        if self.jit.is_some() {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }

    /// Elements of one output.
    pub fn output_len(&self) -> usize {
        let l = &self.graph.lowered;
        l.nodes[l.output]
            .shape
            .iter()
            .map(|&d| d as usize)
            .product()
    }

    /// The outputs of `n` inputs, concatenated (`[n, output_len]`); input
    /// `i` is written by `input(i, buffer)` into a buffer of the input's
    /// size. In parallel over the inputs.
    pub fn run_many<F>(&self, n: usize, input: F) -> Vec<i8>
    where
        F: Fn(usize, &mut [i8]) + Sync,
    {
        let l = &self.graph.lowered;
        let in_len: usize = l.nodes[0].shape.iter().map(|&d| d as usize).product();
        let out_len = self.output_len();
        let mut out = vec![0i8; n * out_len];
        if out_len == 0 {
            return out;
        }
        match &self.jit {
            Some(f) => out.par_chunks_mut(out_len).enumerate().for_each_init(
                || (f.memory(), vec![0i8; in_len]),
                |(mem, x), (i, y)| {
                    input(i, x);
                    f.run(mem, x, y);
                },
            ),
            None => out.par_chunks_mut(out_len).enumerate().for_each_init(
                || vec![0i8; in_len],
                |x, (i, y)| {
                    input(i, x);
                    let v = interp::run(self.graph, self.prepared, x);
                    y.copy_from_slice(&v[l.output]);
                },
            ),
        }
        out
    }
}
