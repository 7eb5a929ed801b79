//! The .tflite reader on corrupt files; `mnet compile` errors, weights files
//! and calibration data through the command line. (The backends' outputs
//! are checked model by model in `tests/models.rs`.)

mod common;

use mnet_compiler::analysis::resolve::{assignment, resolve, Pick};
use mnet_compiler::pipeline;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;

/// The .tflite of a file's network (its smallest pick), random weights.
fn tflite(path: &str) -> Vec<u8> {
    let text = common::read(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")).as_ref());
    let c = mnet_compiler::check_source(path, &text).unwrap_or_else(|f| panic!("{}", f.render()));
    let net = &c.networks[0];
    let fixed = resolve(&net.graph, &assignment(&net.graph, &net.summary, Pick::Min)).unwrap();
    let opts = pipeline::Options {
        tflite: Some(Default::default()),
        c: None,
    };
    pipeline::compile(&fixed, pipeline::Weights::Random(1), None, &opts)
        .unwrap()
        .tflite
        .unwrap()
}

#[test]
fn inspect_and_import_never_panic_on_corrupt_files() {
    let good = tflite("tests/models/ops.mnet");
    let mut rng_state = 0x1234_5678u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let (mut errors, mut import_errors) = (0, 0);
    for i in 0..3000 {
        let mut bytes = good.clone();
        match i % 3 {
            0 => bytes.truncate((next() as usize) % good.len()),
            1 => {
                for _ in 0..4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            _ => {
                let at = 8 + (next() as usize) % (bytes.len() - 12);
                bytes[at..at + 4].copy_from_slice(&(next() as u32).to_le_bytes());
            }
        }
        let r = catch_unwind(AssertUnwindSafe(|| {
            mnet_compiler::tflite::inspect::dump(&bytes)
        }));
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("inspect panicked on mutation {i}"),
        }
        // The importer: an error, or a network that plans and emits.
        let r = catch_unwind(AssertUnwindSafe(|| {
            pipeline::import(&bytes, "m").and_then(|m| pipeline::emit(m.quantized, &c_only()))
        }));
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => import_errors += 1,
            Err(_) => panic!("the importer panicked on mutation {i}"),
        }
    }
    assert!(
        errors > 100 && import_errors > 100,
        "corruptions should mostly be detected ({errors}, {import_errors})"
    );
}

fn c_only() -> pipeline::Options {
    pipeline::Options {
        tflite: Some(Default::default()),
        c: Some(Default::default()),
    }
}

/// A mnet-written .tflite edited as the schema's owned types: operators
/// mnet cannot lower are listed all at once, with index, name, version and
/// reason, exit 1, and nothing is written.
#[test]
fn unsupported_operators_are_listed_together() {
    use mnet_tflite_schema as fb;
    use mnet_tflite_schema::planus::ReadAsRoot;
    let good = tflite("tests/models/ops.mnet");
    let mut m = fb::Model::try_from(fb::ModelRef::read_as_root(&good).unwrap()).unwrap();
    let sg = &mut m.subgraphs.as_mut().unwrap()[0];
    let ops = sg.operators.as_mut().unwrap();
    // A dilated conv.
    let conv = ops
        .iter_mut()
        .position(|o| {
            matches!(
                o.builtin_options,
                Some(fb::BuiltinOptions::Conv2DOptions(_))
            )
        })
        .unwrap();
    if let Some(fb::BuiltinOptions::Conv2DOptions(o)) = &mut ops[conv].builtin_options {
        o.dilation_h_factor = 2;
    }
    // A LOGISTIC and a TANH after the last operator (their outputs unused).
    let last_out = ops.last().unwrap().outputs.as_ref().unwrap()[0];
    let codes = m.operator_codes.as_mut().unwrap();
    for (op, version) in [
        (fb::BuiltinOperator::Logistic, 2),
        (fb::BuiltinOperator::Tanh, 2),
    ] {
        codes.push(fb::OperatorCode {
            deprecated_builtin_code: op as i8,
            custom_code: None,
            version,
            builtin_code: op,
        });
    }
    let n_codes = codes.len() as u32;
    let tensors = sg.tensors.as_mut().unwrap();
    let template = tensors[last_out as usize].clone();
    for name in ["logistic_out", "tanh_out"] {
        tensors.push(fb::Tensor {
            name: Some(name.into()),
            ..template.clone()
        });
    }
    let n = tensors.len() as i32;
    ops.push(fb::Operator {
        opcode_index: n_codes - 2,
        inputs: Some(vec![last_out]),
        outputs: Some(vec![n - 2]),
        ..Default::default()
    });
    ops.push(fb::Operator {
        opcode_index: n_codes - 1,
        inputs: Some(vec![last_out]),
        outputs: Some(vec![n - 1]),
        ..Default::default()
    });
    let n_ops = ops.len();
    let bytes = fb::serialize(&m);
    let dir = std::env::temp_dir().join(format!("mnet-unsupported-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("edited.tflite");
    std::fs::write(&file, &bytes).unwrap();
    let out = dir.join("out");
    let o = mnet(&[
        "compile",
        file.to_str().unwrap(),
        "--emit",
        "c",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for want in [
        "edited.tflite: 3 operators cannot be compiled:".to_string(),
        format!("operator {conv} (CONV_2D v3): dilation 2x1: mnet lowers dilation 1"),
        format!(
            "operator {} (LOGISTIC v2): mnet does not lower this operator",
            n_ops - 2
        ),
        format!(
            "operator {} (TANH v2): mnet does not lower this operator",
            n_ops - 1
        ),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mnet compile MODEL.tflite` writes the C that compiling its `.mnet`
/// writes, and refuses the flags of a float network.
#[test]
fn a_tflite_compiles_like_its_mnet() {
    let dir = std::env::temp_dir().join(format!("mnet-tflite-c-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let src = format!("{}/tests/models/branches.mnet", env!("CARGO_MANIFEST_DIR"));
    let o = mnet(&[
        "compile",
        &src,
        "--random-weights",
        "4",
        "--emit",
        "tflite,c",
        "--cpu",
        "cortex-m4",
        "-o",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let name = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tflite"))
        .unwrap();
    let stem = name.file_stem().unwrap().to_str().unwrap().to_string();
    let o = mnet(&[
        "compile",
        name.to_str().unwrap(),
        "--emit",
        "c,tflite",
        "-o",
        b.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["network"], stem.as_str());
    for ext in ["c", "h", "tflite"] {
        let f = format!("{stem}.{ext}");
        assert_eq!(
            std::fs::read(a.join(&f)).unwrap(),
            std::fs::read(b.join(&f)).unwrap(),
            "{f}"
        );
    }
    for flags in [
        &["--random-weights", "1"][..],
        &["--pick", "max"],
        &["--calib", "x.npy"],
    ] {
        let mut args = vec!["compile", name.to_str().unwrap(), "-o", "unused"];
        args.extend(flags);
        let o = mnet(&args);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains(".tflite"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `.tflite` carries mnet's TFLM-safe plan as `OfflineMemoryAllocation`
/// metadata, TFLM follows it (the outputs equal the reference's, as in
/// every oracle test), and it does follow it: the same model with every
/// offset zeroed (all tensors on one another) gives other outputs.
#[test]
fn tflm_follows_the_offline_plan() {
    use common::runners::{Python, Reference, Runner};
    use mnet_tflite_schema as fb;
    use mnet_tflite_schema::planus::ReadAsRoot;
    let text =
        common::read(format!("{}/tests/models/ops.mnet", env!("CARGO_MANIFEST_DIR")).as_ref());
    let c =
        mnet_compiler::check_source("ops.mnet", &text).unwrap_or_else(|f| panic!("{}", f.render()));
    let net = &c.networks[0];
    let fixed = resolve(&net.graph, &assignment(&net.graph, &net.summary, Pick::Min)).unwrap();
    let opts = pipeline::Options {
        tflite: Some(Default::default()),
        c: None,
    };
    let art = pipeline::compile(&fixed, pipeline::Weights::Random(3), None, &opts).unwrap();
    let bytes = art.tflite.clone().unwrap();
    let mut m = fb::Model::try_from(fb::ModelRef::read_as_root(&bytes).unwrap()).unwrap();
    let entry = &m.metadata.as_ref().expect("metadata")[0];
    assert_eq!(entry.name.as_deref(), Some("OfflineMemoryAllocation"));
    let index = entry.buffer as usize;
    let buffer = &mut m.buffers.as_mut().unwrap()[index];
    let words: Vec<i32> = buffer
        .data
        .as_ref()
        .unwrap()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let tensors = m.subgraphs.as_ref().unwrap()[0]
        .tensors
        .as_ref()
        .unwrap()
        .len();
    assert_eq!(words[..3], [1, 0, tensors as i32]);
    let planned = words[3..].iter().filter(|&&o| o >= 0).count();
    assert_eq!(
        planned,
        art.quantized.graph.lowered.nodes.len(),
        "one offset per activation"
    );
    let zeroed: Vec<u8> = words
        .iter()
        .enumerate()
        .flat_map(|(k, &w)| if k >= 3 && w > 0 { 0 } else { w }.to_le_bytes())
        .collect();
    buffer.data = Some(zeroed);
    let mut bad = art.clone();
    bad.tflite = Some(fb::serialize(&m));
    let in_len: usize = art.quantized.graph.lowered.nodes[0]
        .shape
        .iter()
        .map(|&d| d as usize)
        .product();
    let inputs: Vec<i8> = (0..20 * in_len)
        .map(|k| ((k * 37 + 11) % 256) as u8 as i8)
        .collect();
    let dir = std::env::temp_dir().join(format!("mnet-offline-{}", std::process::id()));
    let want = Reference.run(&art, &inputs, &dir).unwrap();
    let tflm = Python { runtime: "tflm" };
    assert_eq!(tflm.run(&art, &inputs, &dir).unwrap(), want);
    assert_ne!(
        tflm.run(&bad, &inputs, &dir).unwrap(),
        want,
        "TFLM ignored the metadata"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn mnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mnet"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn compile_errors_leave_no_files() {
    let dir = std::env::temp_dir().join(format!("mnet-compile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    // A search space needs a pick.
    let o = mnet(&[
        "compile",
        "examples/kws.mnet",
        "--random-weights",
        "1",
        "-o",
        d,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a search space"));
    assert!(!dir.exists());
    // A network compile cannot build (a batch norm that cannot fold): the
    // same caret diagnostic as `check`, and no files.
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("shared.mnet");
    std::fs::write(
        &src,
        "network r(x: i8[4, 4, 2]) {\n    y = conv2d(x, out: 2, kernel: 1)\n    x = add(y, batch_norm(y))\n}\n",
    )
    .unwrap();
    let o = mnet(&[
        "compile",
        src.to_str().unwrap(),
        "--random-weights",
        "1",
        "--emit",
        "tflite,c",
        "-o",
        d,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("shared.mnet:3:16") && err.contains("cannot fold") && err.contains("^^^"),
        "{err}"
    );
    let check = mnet(&["check", src.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&check.stderr),
        err,
        "check and compile agree"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "only the source is there"
    );
    // Success, then a second run refuses to overwrite.
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--random-weights",
        "1",
        "--emit",
        "tflite,c",
        "-o",
        d,
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("arena"), "{out}");
    for f in ["kws_s.tflite", "kws_s.h", "kws_s.c"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--random-weights",
        "2",
        "--emit",
        "c",
        "-o",
        d,
    ]);
    assert_eq!(o.status.code(), Some(1));
    // mnet inspect on the result, and on garbage.
    let o = mnet(&["inspect", dir.join("kws_s.tflite").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let o = mnet(&["inspect", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a valid .tflite"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A float32 .npy file of the given shape.
fn npy(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    mnet_compiler::npy::encode("<f4", shape, &data)
}

#[test]
fn weights_files_and_calibration_data() {
    let dir = std::env::temp_dir().join(format!("mnet-weights-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    // Random weights saved, then read back: byte-identical artefacts.
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--random-weights",
        "0",
        "--emit",
        "tflite,c",
        "--save-weights",
        &p("w.safetensors"),
        "-o",
        &p("a"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--weights",
        &p("w.safetensors"),
        "--emit",
        "tflite,c",
        "-o",
        &p("b"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for f in ["kws_s.tflite", "kws_s.c", "kws_s.h"] {
        assert_eq!(
            std::fs::read(dir.join("a").join(f)).unwrap(),
            std::fs::read(dir.join("b").join(f)).unwrap(),
            "{f}"
        );
    }
    // The wrong network's weights: a clear error naming the tensor, no files.
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_m.mnet",
        "--weights",
        &p("w.safetensors"),
        "-o",
        &p("c"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("conv_bn_0/conv2d_0.weight")
            && err.contains("has shape [84, 10, 4, 1], expected [140, 10, 4, 1]"),
        "{err}"
    );
    assert!(!dir.join("c").exists());
    // A network with a layer the file lacks.
    let o = mnet(&[
        "compile",
        "tests/models/ops.mnet",
        "--weights",
        &p("w.safetensors"),
        "-o",
        &p("c"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no tensor `conv2d_0.weight`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Not a safetensors file.
    std::fs::write(dir.join("junk.safetensors"), b"nonsense").unwrap();
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--weights",
        &p("junk.safetensors"),
        "-o",
        &p("c"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a safetensors file"));
    // Calibration data: the input range comes from the data.
    let values: Vec<f32> = (0..4 * 490)
        .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
        .collect();
    std::fs::write(dir.join("calib.npy"), npy(&[4, 49, 10, 1], &values)).unwrap();
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--weights",
        &p("w.safetensors"),
        "--calib",
        &p("calib.npy"),
        "--emit",
        "c",
        "-o",
        &p("d"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let h = std::fs::read_to_string(dir.join("d/kws_s.h")).unwrap();
    assert!(h.contains("KWS_S_INPUT_SCALE 7.843138e-3f"), "{h}");
    // Calibration data of the wrong shape.
    std::fs::write(
        dir.join("bad.npy"),
        npy(&[4, 49, 10, 2], &vec![0.0; 4 * 980]),
    )
    .unwrap();
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--weights",
        &p("w.safetensors"),
        "--calib",
        &p("bad.npy"),
        "-o",
        &p("e"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.npy") && err.contains("expected [N, 49, 10, 1]"),
        "{err}"
    );
    assert!(!dir.join("e").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of a safetensors file with `name` set to `values` (added if
/// missing, shaped `shape`).
fn with_tensor(bytes: &[u8], name: &str, shape: &[usize], values: &[f32]) -> Vec<u8> {
    use safetensors::tensor::TensorView;
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != name)
        .collect();
    views.push((
        name.to_string(),
        TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &data).unwrap(),
    ));
    safetensors::serialize(views, None).unwrap()
}

/// Issue 9 item 2: quantizations TFLM's kernels cannot apply (a
/// requantization multiplier past 2^30, an overflowed scale, a softmax
/// input scale below 2^-26) are errors naming the layer, not C that
/// differs from TFLM.
#[test]
fn quantizations_tflm_cannot_run_are_errors() {
    let dir = std::env::temp_dir().join(format!("mnet-qlimits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let o = mnet(&[
        "compile",
        "examples/micronets/kws_s.mnet",
        "--random-weights",
        "0",
        "--save-weights",
        &p("w.safetensors"),
        "-o",
        &p("a"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let good = std::fs::read(dir.join("w.safetensors")).unwrap();
    let compile = |bytes: Vec<u8>, out: &str| {
        std::fs::write(dir.join("bad.safetensors"), bytes).unwrap();
        let o = mnet(&[
            "compile",
            "examples/micronets/kws_s.mnet",
            "--weights",
            &p("bad.safetensors"),
            "--emit",
            "tflite,c",
            "-o",
            &p(out),
        ]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(!dir.join(out).exists());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // One channel's batch-norm gamma of 1e20 before a relu6: that channel
    // needs a multiplier of ~2^60.
    let mut gamma = vec![1.0f32; 84];
    gamma[3] = 1e20;
    let err = compile(
        with_tensor(&good, "conv_bn_0/batch_norm_0.gamma", &[84], &gamma),
        "b",
    );
    assert!(
        err.contains("conv_bn_0/conv2d_0")
            && err.contains("output channel 3")
            && err.contains("2^30"),
        "{err}"
    );
    // A finite weight of 3e38: the float pass overflows.
    let mut w = vec![0.01f32; 84 * 10 * 4];
    w[0] = 3e38;
    let err = compile(
        with_tensor(&good, "conv_bn_0/conv2d_0.weight", &[84, 10, 4, 1], &w),
        "c",
    );
    assert!(err.contains("conv_bn_0/conv2d_0"), "{err}");
    // A QAT range of [-3e38, 3e38] overflows its scale.
    let err = compile(
        with_tensor(&good, "conv_bn_0/relu6_0.range", &[2], &[-3e38, 3e38]),
        "d",
    );
    assert!(
        err.contains("conv_bn_0/conv2d_0") && err.contains("scale"),
        "{err}"
    );
    // A softmax right after an input calibrated on values near 1e-12.
    std::fs::write(
        dir.join("s.mnet"),
        "network s(x: i8[4]) -> [4] {\n    x = softmax(x)\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("c.npy"), npy(&[2, 4], &[1e-12; 8])).unwrap();
    let o = mnet(&[
        "compile",
        &p("s.mnet"),
        "--random-weights",
        "1",
        "--calib",
        &p("c.npy"),
        "-o",
        &p("e"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("softmax_0") && err.contains("2^-26") && err.contains("^^^"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mnet run`: a .tflite and the .mnet it was compiled from give the same
/// outputs on the same int8 inputs, a float32 input is quantized with the
/// model's input quantization, and a wrong input is an error naming the file.
#[test]
fn run_executes_tflite_and_mnet_alike() {
    let dir = std::env::temp_dir().join(format!("mnet-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = format!("{}/tests/models/ops.mnet", env!("CARGO_MANIFEST_DIR"));
    let model = dir.join("model");
    let o = mnet(&[
        "compile",
        &src,
        "--random-weights",
        "5",
        "--emit",
        "tflite",
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tflite = std::fs::read_dir(&model)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&tflite).unwrap();
    let m = pipeline::import(&bytes, "m").unwrap().quantized;
    let shape: Vec<usize> = m.graph.lowered.nodes[0]
        .shape
        .iter()
        .map(|&d| d as usize)
        .collect();
    let per: usize = shape.iter().product();
    let rows = 6;
    let x8: Vec<u8> = (0..rows * per)
        .map(|k| ((k * 29 + 7) % 256) as u8)
        .collect();
    let mut full = vec![rows];
    full.extend(&shape);
    let x8_path = dir.join("x8.npy");
    std::fs::write(&x8_path, mnet_compiler::npy::encode("|i1", &full, &x8)).unwrap();
    let run = |file: &str, input: &std::path::Path, out: &str, extra: &[&str]| {
        let out = dir.join(out);
        let mut args = vec![
            "run",
            file,
            "--input",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = mnet(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    let from_tflite = run(tflite.to_str().unwrap(), &x8_path, "a.npy", &[]);
    let from_mnet = run(&src, &x8_path, "b.npy", &["--random-weights", "5"]);
    assert_eq!(from_tflite, from_mnet);
    // The JIT (the default engine) and the interpreter agree byte for byte.
    let interp = run(
        tflite.to_str().unwrap(),
        &x8_path,
        "i.npy",
        &["--engine", "interp"],
    );
    assert_eq!(interp, from_tflite);
    let jit = run(
        tflite.to_str().unwrap(),
        &x8_path,
        "j.npy",
        &["--engine", "jit"],
    );
    assert_eq!(jit, from_tflite);
    // The reference interpreter row by row.
    let out_len: usize = m.graph.lowered.nodes[m.graph.lowered.output]
        .shape
        .iter()
        .map(|&d| d as usize)
        .product();
    let want: Vec<u8> = x8
        .chunks(per)
        .flat_map(|x| {
            let x: Vec<i8> = x.iter().map(|&b| b as i8).collect();
            let v = mnet_compiler::exec::interp::run(&m.graph, &m.prepared, &x);
            v[m.graph.lowered.output]
                .iter()
                .map(|&b| b as u8)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        &from_tflite[from_tflite.len() - rows * out_len..],
        &want[..]
    );
    // Float inputs: the dequantized int8 ones quantize back to them.
    let iq = m.graph.qparams[0];
    let xf: Vec<u8> = x8
        .iter()
        .flat_map(|&b| iq.dequantize(b as i8).to_le_bytes())
        .collect();
    let xf_path = dir.join("xf.npy");
    std::fs::write(&xf_path, mnet_compiler::npy::encode("<f4", &full, &xf)).unwrap();
    assert_eq!(
        run(tflite.to_str().unwrap(), &xf_path, "c.npy", &[]),
        from_tflite
    );
    // A wrong shape names the file.
    let bad = dir.join("bad.npy");
    std::fs::write(&bad, mnet_compiler::npy::encode("|i1", &[2, 3], &[0; 6])).unwrap();
    let o = mnet(&[
        "run",
        tflite.to_str().unwrap(),
        "--input",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.npy: the array has shape [2, 3]"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--target` names the board the memory report checks, for a .tflite
/// (which names none) and instead of a .mnet's own; an unknown board is an
/// error listing the known ones.
#[test]
fn compile_target_names_the_board() {
    let dir = std::env::temp_dir().join(format!("mnet-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tflite = format!("{}/tests/tflite/ds_cnn.tflite", env!("CARGO_MANIFEST_DIR"));
    let src = format!(
        "{}/examples/micronets/kws_s.mnet",
        env!("CARGO_MANIFEST_DIR")
    );
    for (file, extra) in [(&tflite, &[][..]), (&src, &["--random-weights", "1"][..])] {
        let out = dir.join("out");
        let mut args = vec![
            "compile",
            file.as_str(),
            "--emit",
            "c",
            "--estimate",
            "--force",
            "--target",
            "stm32f767zi",
            "-o",
        ];
        args.push(out.to_str().unwrap());
        args.extend(extra);
        let o = mnet(&args);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(text.contains("fits stm32f767zi"), "{text}");
        assert!(text.contains("memory (cortex-m7"), "{text}");
    }
    let o = mnet(&[
        "compile",
        &tflite,
        "--emit",
        "c",
        "--target",
        "nope",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown board `nope` (known: stm32f446re"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The batch runner gives each input's output in input order, the same on
/// the JIT and the interpreter, on a converter-written model.
#[test]
fn batch_runner_engines_agree_in_order() {
    use mnet_compiler::exec::batch::{Engine, Runner};
    let path = format!("{}/tests/tflite/ds_cnn.tflite", env!("CARGO_MANIFEST_DIR"));
    let q = pipeline::import(&std::fs::read(path).unwrap(), "m")
        .unwrap()
        .quantized;
    let (g, p) = (&q.graph, &q.prepared[..]);
    let fill = |i: usize, x: &mut [i8]| {
        for (k, v) in x.iter_mut().enumerate() {
            *v = ((i * 37 + k * 11) % 256) as u8 as i8;
        }
    };
    let jit = Runner::new(g, p, Engine::Jit).expect("compiles");
    assert_eq!(jit.engine(), Engine::Jit);
    let interp = Runner::new(g, p, Engine::Interp).unwrap();
    let n = 9;
    let out_len = jit.output_len();
    let a = jit.run_many(n, fill);
    assert_eq!(a.len(), n * out_len);
    assert_eq!(a, interp.run_many(n, fill));
    let mut x = vec![0i8; g.lowered.nodes[0].shape.iter().product::<u32>() as usize];
    fill(7, &mut x);
    let one = mnet_compiler::exec::interp::run(g, p, &x);
    assert_eq!(&a[7 * out_len..8 * out_len], &one[g.lowered.output][..]);
}

/// The JIT's vector requantization is exact over the whole range of
/// TFLM's multipliers and shifts, not just the ones calibration gives: one
/// weighted layer (conv, depthwise, dense) of a converter-written model at
/// a time gets random per-channel multipliers in [2^30, 2^31) (or 0) and
/// shifts from 31 right to 3 left (0 included), the other layers keep
/// theirs (so the change reaches the output), and the JIT must equal the
/// interpreter on random inputs, in both dot-product forms.
#[test]
fn jit_requantization_is_exact_for_any_multiplier_and_shift() {
    use mnet_compiler::back::jit;
    use mnet_compiler::exec::interp::{self, Prepared};
    use rand::{RngExt, SeedableRng};
    let path = format!("{}/tests/tflite/ds_cnn.tflite", env!("CARGO_MANIFEST_DIR"));
    let base = pipeline::import(&std::fs::read(path).unwrap(), "m")
        .unwrap()
        .quantized;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let len: usize = base.graph.lowered.nodes[0].shape.iter().product::<u32>() as usize;
    let weighted: Vec<usize> = (0..base.prepared.len())
        .filter(|&i| matches!(base.prepared[i], Prepared::Weighted { .. }))
        .collect();
    assert!(weighted.len() >= 5, "{weighted:?}");
    let mut differs = 0;
    for &layer in &weighted {
        let mut prepared = base.prepared.clone();
        if let Prepared::Weighted { mult, shift, .. } = &mut prepared[layer] {
            for (m, s) in mult.iter_mut().zip(shift.iter_mut()) {
                *m = if rng.random_range(0..20) == 0 {
                    0
                } else {
                    rng.random_range(1 << 30..=i32::MAX)
                };
                *s = rng.random_range(-31..=3);
            }
        }
        for no_vnni in [false, true] {
            let opts = jit::Options {
                verify: true,
                no_vnni,
            };
            let f = jit::compile(&base.graph, &prepared, &opts).unwrap();
            for _ in 0..4 {
                let x: Vec<i8> = (0..len).map(|_| rng.random::<i8>()).collect();
                let want = &interp::run(&base.graph, &prepared, &x)[base.graph.lowered.output];
                let before =
                    &interp::run(&base.graph, &base.prepared, &x)[base.graph.lowered.output];
                differs += usize::from(want != before);
                assert_eq!(&f.infer(&x), want, "layer {layer}");
            }
        }
    }
    // The changed parameters change the outputs (the test sees them).
    assert!(
        differs * 2 > weighted.len() * 8,
        "{differs} of {}",
        weighted.len() * 8
    );
}
