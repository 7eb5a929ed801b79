//! The real-data readers as a user meets them through `mnet features`,
//! `mnet train` and `mnet eval`: Speech Commands splits built as
//! TensorFlow's input_data.py builds them, seeded augmentation, IDX files
//! (generated and Debian's Fashion-MNIST), image folders, and every bad
//! input named with its file.

mod common;

use common::datasets::{idx_files, image_tree, speech_commands, write_wav};
use common::{mnet, stderr, stdout};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

const KEYWORDS: [&str; 10] = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnet-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "mnet failed:\n{}{}",
        stdout(o),
        stderr(o)
    );
}

/// Exit 1 and a message holding every one of `wants`.
fn fails_with(o: &Output, wants: &[&str]) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout {}\nstderr {}",
        stdout(o),
        stderr(o)
    );
    let e = stderr(o);
    for w in wants {
        assert!(e.contains(w), "`{w}` not in: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

/// A `.npy` file's shape and f32 data or labels.
fn npy_shape(path: &Path) -> Vec<usize> {
    common::read_npy_f32(path).0
}

fn npy_f32(path: &Path) -> Vec<f32> {
    common::read_npy_f32(path).1
}

fn npy_labels(path: &Path) -> Vec<usize> {
    let b = std::fs::read(path).unwrap();
    mnet_compiler::npy::parse(&b).unwrap().labels().unwrap()
}

fn words_with_unknown() -> Vec<&'static str> {
    let mut w = KEYWORDS.to_vec();
    w.extend(["bed", "cat", "dog"]);
    w
}

/// `mnet features` of a split: (labels, list rows as (source, label)).
fn features(
    data: &str,
    split: &str,
    dir: &Path,
    extra: &[&str],
) -> (Vec<usize>, Vec<(String, usize)>) {
    let (x, y, l) = (
        dir.join(format!("{split}-x.npy")),
        dir.join(format!("{split}-y.npy")),
        dir.join(format!("{split}.tsv")),
    );
    let mut args = vec!["features", "--data", data, "--split", split, "-o"];
    let (xs, ys, ls) = (s(&x), s(&y), s(&l));
    args.extend([xs.as_str(), "--labels", &ys, "--list", &ls, "--force"]);
    args.extend(extra);
    ok(&mnet(&args));
    let labels = npy_labels(&y);
    let rows: Vec<(String, usize)> = std::fs::read_to_string(&l)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f[1].to_string(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), labels.len());
    assert_eq!(npy_shape(&x)[0], labels.len());
    (labels, rows)
}

fn counts(labels: &[usize]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for &l in labels {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

/// The 12-class problem: per split the keyword clips of its speakers, 10%
/// (rounded up) unknown clips of other words of the same split, 10%
/// silence cut from the noise files; labels silence 0, unknown 1,
/// keywords 2.. in order; --words chooses other keywords.
#[test]
fn speech_commands_splits_as_tensorflow_builds_them() {
    let dir = scratch("splits");
    let tree = dir.join("sc");
    let words = words_with_unknown();
    let data = speech_commands(&tree, &words, 6, 2, 1);
    for (split, speakers, known) in [
        ("train", &["s0", "s1", "s2", "s3"][..], 8),
        ("val", &["s4"][..], 2),
        ("test", &["s5"][..], 2),
    ] {
        let (labels, rows) = features(&data, split, &dir, &[]);
        let extra = (known * 10usize).div_ceil(10);
        assert_eq!(labels.len(), known * 10 + 2 * extra, "{split}");
        let c = counts(&labels);
        assert_eq!(c[&0], extra, "{split} silence");
        assert_eq!(c[&1], extra, "{split} unknown");
        for k in 2..12 {
            assert_eq!(c[&k], known, "{split} {}", KEYWORDS[k - 2]);
        }
        assert_eq!(
            npy_shape(&dir.join(format!("{split}-x.npy"))),
            vec![labels.len(), 49, 10, 1]
        );
        for ((source, label), &l) in rows.iter().zip(&labels) {
            assert_eq!(*label, l);
            if l == 0 {
                assert!(
                    source.starts_with("_background_noise_/") && source.contains(" at "),
                    "{source}"
                );
                continue;
            }
            let (word, file) = source.split_once('/').unwrap();
            assert!(
                speakers
                    .iter()
                    .any(|sp| file.starts_with(&format!("{sp}_"))),
                "{split}: {source}"
            );
            if l == 1 {
                assert!(["bed", "cat", "dog"].contains(&word), "{source}");
            } else {
                assert_eq!(word, KEYWORDS[l - 2]);
            }
        }
    }
    // Other keywords: 4 classes.
    let (labels, rows) = features(&data, "train", &dir, &["--words", "up,bed"]);
    assert_eq!(
        counts(&labels),
        BTreeMap::from([(0, 2), (1, 2), (2, 8), (3, 8)])
    );
    assert!(rows.iter().any(|(s, l)| *l == 3 && s.starts_with("bed/")));
    assert!(rows
        .iter()
        .all(|(s, l)| *l != 1 || !(s.starts_with("up/") || s.starts_with("bed/"))));
    // The same seed gives the same rows; another seed other silence cuts.
    let (_, again) = features(&data, "train", &dir, &[]);
    let (_, first) = features(&data, "train", &dir, &[]);
    assert_eq!(again, first);
    let (_, other) = features(&data, "train", &dir, &["--seed", "5"]);
    assert_ne!(other, first);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Augmented training features are a function of seed and epoch: the same
/// twice, another epoch differs, and unaugmented features differ from
/// both; a kind or flags that do not augment are refused.
#[test]
fn speech_commands_augmentation_is_seeded_per_epoch() {
    let dir = scratch("augment");
    let tree = dir.join("sc");
    let words = words_with_unknown();
    let data = speech_commands(&tree, &words, 3, 1, 2);
    let run = |name: &str, extra: &[&str]| -> Vec<f32> {
        let x = dir.join(format!("{name}.npy"));
        let mut args = vec!["features", "--data", &data, "-o"];
        let xs = s(&x);
        args.push(&xs);
        args.extend(extra);
        ok(&mnet(&args));
        npy_f32(&x)
    };
    let plain = run("plain", &[]);
    let e2 = run(
        "e2",
        &[
            "--augment",
            "--epoch",
            "2",
            "--time-masks",
            "1",
            "--freq-masks",
            "1",
        ],
    );
    let e2b = run(
        "e2b",
        &[
            "--augment",
            "--epoch",
            "2",
            "--time-masks",
            "1",
            "--freq-masks",
            "1",
        ],
    );
    let e3 = run(
        "e3",
        &[
            "--augment",
            "--epoch",
            "3",
            "--time-masks",
            "1",
            "--freq-masks",
            "1",
        ],
    );
    assert_eq!(e2, e2b);
    assert_ne!(e2, e3);
    assert_ne!(plain, e2);
    assert_eq!(plain.len(), e2.len());
    // A SpecAugment mask zeroes whole frames or coefficients.
    assert!(e2
        .chunks(490)
        .any(|clip| clip.chunks(10).any(|f| f.iter().all(|&v| v == 0.0))));
    let x = s(&dir.join("no.npy"));
    fails_with(
        &mnet(&[
            "features",
            "--data",
            &data,
            "-o",
            &x,
            "--augment",
            "--background-frequency",
            "0",
            "--time-shift-ms",
            "0",
        ]),
        &["does not augment"],
    );
    fails_with(
        &mnet(&[
            "features",
            "--data",
            &data,
            "-o",
            &x,
            "--augment",
            "--split",
            "val",
        ]),
        &["--split train"],
    );
    fails_with(
        &mnet(&[
            "features",
            "--data",
            &data,
            "-o",
            &x,
            "--augment",
            "--background-volume",
            "2",
        ]),
        &["--background-volume"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every bad Speech Commands tree is an error naming the file or folder.
#[test]
fn speech_commands_errors_name_the_file() {
    let dir = scratch("errors");
    let words = words_with_unknown();
    let make = |name: &str| -> (PathBuf, String) {
        let tree = dir.join(name);
        let data = speech_commands(&tree, &words, 3, 1, 3);
        (tree, data)
    };
    let x = s(&dir.join("x.npy"));
    let feat = |data: &str| mnet(&["features", "--data", data, "-o", &x, "--force"]);
    let (t, d) = make("rate");
    write_wav(&t.join("yes/s0_nohash_0.wav"), 8000, 1, &[0; 8000]);
    fails_with(
        &feat(&d),
        &[
            "yes/s0_nohash_0.wav",
            "8000 Hz",
            "expected 16000 Hz mono 16-bit PCM",
        ],
    );
    let (t, d) = make("stereo");
    write_wav(&t.join("go/s0_nohash_0.wav"), 16000, 2, &[0; 32000]);
    fails_with(&feat(&d), &["go/s0_nohash_0.wav", "2 channel(s)"]);
    let (t, d) = make("list");
    std::fs::write(
        t.join("validation_list.txt"),
        "yes/s2_nohash_0.wav\nyes/gone.wav\n",
    )
    .unwrap();
    fails_with(
        &feat(&d),
        &["validation_list.txt", "line 2", "yes/gone.wav"],
    );
    let (t, d) = make("empty");
    std::fs::remove_file(t.join("no/s0_nohash_0.wav")).unwrap();
    std::fs::remove_file(t.join("no/s1_nohash_0.wav")).unwrap();
    std::fs::remove_file(t.join("no/s2_nohash_0.wav")).unwrap();
    std::fs::write(t.join("validation_list.txt"), "").unwrap();
    std::fs::write(t.join("testing_list.txt"), "").unwrap();
    fails_with(&feat(&d), &["/no", "empty class folder"]);
    let (t, d) = make("noise");
    std::fs::remove_dir_all(t.join("_background_noise_")).unwrap();
    fails_with(&feat(&d), &["_background_noise_", "_silence_"]);
    let (t, d) = make("onelist");
    std::fs::remove_file(t.join("testing_list.txt")).unwrap();
    fails_with(&feat(&d), &["testing_list.txt", "no such file"]);
    let (t, d) = make("corrupt");
    std::fs::write(t.join("up/s0_nohash_0.wav"), b"RIFF not a wav").unwrap();
    fails_with(&feat(&d), &["up/s0_nohash_0.wav"]);
    fails_with(
        &feat(&format!(
            "speech-commands:{}",
            dir.join("missing").display()
        )),
        &["missing", "no such folder"],
    );
    // The network decides the shape and classes.
    let (_, d) = make("net");
    let five = dir.join("five.mnet");
    std::fs::write(
        &five,
        "network five(x: i8[49, 10, 1]) -> [5] {\n    x = flatten(x) |> dense(5) |> softmax\n}\n",
    )
    .unwrap();
    fails_with(
        &mnet(&["features", &s(&five), "--data", &d, "-o", &x, "--force"]),
        &["12 classes", "_silence_, _unknown_, yes", "5 outputs"],
    );
    let wide = dir.join("wide.mnet");
    std::fs::write(
        &wide,
        "network wide(x: i8[40, 10, 1]) -> [12] {\n    x = flatten(x) |> dense(12) |> softmax\n}\n",
    )
    .unwrap();
    fails_with(
        &mnet(&["features", &s(&wide), "--data", &d, "-o", &x, "--force"]),
        &["[49, 10, 1] MFCC", "[40, 10, 1]"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const KWS_TINY: &str = "network kws_tiny(x: i8[49, 10, 1]) -> [12] {
    x = conv2d(x, out: 8, kernel: (10, 4), stride: 2) |> batch_norm |> relu
    x = global_avg_pool(x) |> dense(12) |> softmax
}
";

/// `mnet train --data speech-commands:DIR` (augmenting) then `mnet eval`:
/// the report's numbers agree with each other and with the split.
#[test]
fn train_and_eval_on_speech_commands() {
    let dir = scratch("train");
    let tree = dir.join("sc");
    let words = words_with_unknown();
    let data = speech_commands(&tree, &words, 6, 2, 4);
    let net = dir.join("kws_tiny.mnet");
    std::fs::write(&net, KWS_TINY).unwrap();
    let out = dir.join("out");
    ok(&mnet(&[
        "train",
        &s(&net),
        "--data",
        &data,
        "--epochs",
        "3",
        "--batch",
        "16",
        "-o",
        &s(&out),
    ]));
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("kws_tiny.metrics.json")).unwrap())
            .unwrap();
    assert_eq!(
        metrics["augment"]["background_frequency"].as_f64(),
        Some(0.8f32 as f64)
    );
    assert_eq!(metrics["train_samples"], 96);
    assert_eq!(metrics["validation_samples"], 24);
    let w = s(&out.join("kws_tiny.safetensors"));
    let o = mnet(&[
        "eval",
        &s(&net),
        "--weights",
        &w,
        "--data",
        &data,
        "--int8",
        "--per-layer",
        "--json",
    ]);
    ok(&o);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["split"], "test");
    assert_eq!(r["samples"], 24);
    assert_eq!(r["classes"][0], "_silence_");
    assert_eq!(r["classes"][11], "go");
    for kind in ["float", "int8"] {
        let m = r[kind]["confusion"].as_array().unwrap();
        assert_eq!(m.len(), 12);
        let total: u64 = m
            .iter()
            .flat_map(|row| row.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, 24);
        let diag: u64 = (0..12).map(|c| m[c][c].as_u64().unwrap()).sum();
        assert_eq!(r[kind]["correct"].as_u64(), Some(diag));
        assert!((r[kind]["accuracy"].as_f64().unwrap() - diag as f64 / 24.0).abs() < 1e-12);
    }
    let agree = r["int8"]["agreement_with_float"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agree));
    let layers = r["per_layer"]["layers"].as_array().unwrap();
    assert!(layers
        .iter()
        .any(|l| l["op"] == "conv" && l["layer"] == "conv2d_0"));
    for l in layers {
        let c = l["cosine"].as_f64().unwrap();
        assert!((-1.0..=1.0 + 1e-9).contains(&c), "{l}");
    }
    // Text report: the table and the matrix.
    let o = mnet(&[
        "eval",
        &s(&net),
        "--weights",
        &w,
        "--data",
        &data,
        "--split",
        "val",
    ]);
    ok(&o);
    let text = stdout(&o);
    assert!(text.contains("val split, 24 samples, 12 classes"), "{text}");
    assert!(text.contains("confusion matrix (float"), "{text}");
    assert!(text.contains("_unknown_"), "{text}");
    // The compiled .tflite evaluates as the .mnet's int8 network does with
    // the same calibration: the same predictions.
    let calib = s(&dir.join("calib.npy"));
    ok(&mnet(&[
        "features",
        &s(&net),
        "--data",
        &data,
        "--split",
        "train",
        "-o",
        &calib,
    ]));
    let int8_of_mnet: Value = serde_json::from_str(&stdout(&mnet(&[
        "eval",
        &s(&net),
        "--weights",
        &w,
        "--data",
        &data,
        "--int8",
        "--calib",
        &calib,
        "--json",
    ])))
    .unwrap();
    let model_dir = dir.join("model");
    ok(&mnet(&[
        "compile",
        &s(&net),
        "--weights",
        &w,
        "--calib",
        &calib,
        "--emit",
        "tflite",
        "-o",
        &s(&model_dir),
    ]));
    let tflite = s(&model_dir.join("kws_tiny.tflite"));
    let o = mnet(&["eval", &tflite, "--data", &data, "--json"]);
    ok(&o);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(r["float"].is_null(), "{r}");
    for key in ["confusion", "accuracy", "per_class", "correct"] {
        assert_eq!(r["int8"][key], int8_of_mnet["int8"][key], "{key}");
    }
    assert_eq!(r["samples"], 24);
    let text = stdout(&mnet(&["eval", &tflite, "--data", &data]));
    assert!(text.contains("int8   accuracy"), "{text}");
    assert!(text.contains("confusion matrix (int8"), "{text}");
    assert!(!text.contains("float"), "{text}");
    // A .tflite holds its weights: the float-only flags are refused.
    fails_with(
        &mnet(&["eval", &tflite, "--data", &data, "--weights", &w]),
        &["kws_tiny.tflite", "a .tflite holds its int8 weights"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// IDX files, gzipped and plain: the splits, resizing, and corrupt files
/// named.
#[test]
fn idx_files_read_split_and_resize() {
    let dir = scratch("idx");
    let f = dir.join("fm");
    std::fs::create_dir_all(&f).unwrap();
    idx_files(&f, "train", 200, (28, 28), 10, true, 1);
    idx_files(&f, "t10k", 50, (28, 28), 10, false, 2);
    let data = format!("fashion-mnist:{}", f.display());
    let (labels, rows) = features(&data, "test", &dir, &[]);
    assert_eq!(labels.len(), 50);
    assert_eq!(rows[7].0, "t10k-images-idx3-ubyte#7");
    assert_eq!(npy_shape(&dir.join("test-x.npy")), vec![50, 28, 28, 1]);
    let (train, _) = features(&data, "train", &dir, &[]);
    let (val, _) = features(&data, "val", &dir, &[]);
    assert_eq!((train.len(), val.len()), (180, 20));
    assert!(counts(&val).values().all(|&c| c == 2));
    // Resized: values stay in [0, 1]; a label's bright band stays.
    let (_, _) = features(&data, "test", &dir, &["--shape", "14,14,1"]);
    let x = npy_f32(&dir.join("test-x.npy"));
    assert_eq!(npy_shape(&dir.join("test-x.npy")), vec![50, 14, 14, 1]);
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    let labels = npy_labels(&dir.join("test-y.npy"));
    for (img, &l) in x.chunks(196).zip(&labels) {
        let row_mean = |r: usize| img[r * 14..(r + 1) * 14].iter().sum::<f32>() / 14.0;
        let bright = (0..14)
            .max_by(|&a, &b| row_mean(a).total_cmp(&row_mean(b)))
            .unwrap();
        assert_eq!(bright * 10 / 14, l, "label {l}: brightest row {bright}");
    }
    // Bad files.
    let x = s(&dir.join("bad.npy"));
    let bytes = std::fs::read(f.join("t10k-images-idx3-ubyte")).unwrap();
    std::fs::write(
        f.join("t10k-images-idx3-ubyte"),
        &bytes[..bytes.len() - 100],
    )
    .unwrap();
    fails_with(
        &mnet(&["features", "--data", &data, "--split", "test", "-o", &x]),
        &["t10k-images-idx3-ubyte", "the header says [50, 28, 28]"],
    );
    std::fs::write(f.join("t10k-images-idx3-ubyte"), b"\x00\x00\x0d\x03").unwrap();
    fails_with(
        &mnet(&["features", "--data", &data, "--split", "test", "-o", &x]),
        &["t10k-images-idx3-ubyte", "element type 0x0d"],
    );
    std::fs::remove_file(f.join("t10k-images-idx3-ubyte")).unwrap();
    fails_with(
        &mnet(&["features", "--data", &data, "--split", "test", "-o", &x]),
        &["t10k-images-idx3-ubyte", "no such file"],
    );
    idx_files(&f, "t10k", 50, (28, 28), 10, false, 2);
    let five = dir.join("five.mnet");
    std::fs::write(
        &five,
        "network five(x: i8[28, 28, 1]) -> [12] {\n    x = flatten(x) |> dense(12) |> softmax\n}\n",
    )
    .unwrap();
    fails_with(
        &mnet(&["features", &s(&five), "--data", &data, "-o", &x]),
        &["train-labels-idx1-ubyte.gz", "10 classes", "12 outputs"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's Fashion-MNIST (scripts/test.sh installs dataset-fashion-mnist
/// as root): 60000 training images as 54000 + 6000, 10000 test images,
/// 1000 of each class.
#[test]
fn fashion_mnist_from_debian() {
    let root = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        root.join("train-images-idx3-ubyte.gz").is_file(),
        "{} is missing: install Debian's dataset-fashion-mnist (scripts/test.sh does as root: apt-get install dataset-fashion-mnist)",
        root.display()
    );
    let dir = scratch("fashion");
    let data = format!("fashion-mnist:{}", root.display());
    let (test, _) = features(&data, "test", &dir, &[]);
    assert_eq!(test.len(), 10_000);
    assert!(counts(&test).values().all(|&c| c == 1000));
    let (val, _) = features(&data, "val", &dir, &[]);
    assert_eq!(val.len(), 6000);
    assert!(counts(&val).values().all(|&c| c == 600));
    let x = npy_f32(&dir.join("val-x.npy"));
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
    assert!(
        (0.2..0.4).contains(&mean),
        "mean pixel {mean} (Fashion-MNIST's is 0.286)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Image folders: sorted class names are the labels, a seeded 90/10
/// split without train/ and val/, the folders' own with them; bad images
/// and folders named.
#[test]
fn image_folders_read_split_and_fail_clearly() {
    let dir = scratch("images");
    let flat = dir.join("flat");
    image_tree(&flat, &["person", "non_person"], 10, 1);
    let data = format!("image-folder:{}", flat.display());
    let (train, rows) = features(&data, "train", &dir, &["--shape", "16,16,1"]);
    let (val, _) = features(&data, "val", &dir, &["--shape", "16,16,1"]);
    assert_eq!((train.len(), val.len()), (18, 2));
    assert_eq!(counts(&val), BTreeMap::from([(0, 1), (1, 1)]));
    assert!(rows.iter().all(|(src, l)| src.starts_with(if *l == 0 {
        "non_person/"
    } else {
        "person/"
    })));
    assert!(rows.iter().any(|(src, _)| src.ends_with(".jpg")));
    let x = npy_f32(&dir.join("train-x.npy"));
    assert_eq!(npy_shape(&dir.join("train-x.npy")), vec![18, 16, 16, 1]);
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    let (_, _) = features(&data, "train", &dir, &["--shape", "8,12,3"]);
    assert_eq!(npy_shape(&dir.join("train-x.npy")), vec![18, 8, 12, 3]);
    // Augmented: flips and crops change the features, seeded.
    let (a, _) = features(
        &data,
        "train",
        &dir,
        &["--shape", "16,16,1", "--augment", "--flip", "--crop", "0.2"],
    );
    assert_eq!(a, train);
    assert_ne!(npy_f32(&dir.join("train-x.npy")), x);
    // train/ val/ test/ layout.
    let split = dir.join("split");
    image_tree(&split.join("train"), &["a", "b", "c"], 4, 2);
    image_tree(&split.join("val"), &["a", "b", "c"], 2, 3);
    image_tree(&split.join("test"), &["a", "b", "c"], 3, 4);
    let sdata = format!("image-folder:{}", split.display());
    for (name, n) in [("train", 12), ("val", 6), ("test", 9)] {
        let (l, rows) = features(&sdata, name, &dir, &["--shape", "10,10,1"]);
        assert_eq!(l.len(), n, "{name}");
        assert!(rows
            .iter()
            .all(|(src, _)| src.starts_with(&format!("{name}/"))));
    }
    let x = s(&dir.join("bad.npy"));
    fails_with(
        &mnet(&[
            "features", "--data", &data, "--split", "test", "--shape", "16,16,1", "-o", &x,
        ]),
        &["no test split"],
    );
    let victim = rows
        .iter()
        .find(|(src, _)| src.ends_with(".png"))
        .unwrap()
        .0
        .clone();
    std::fs::write(flat.join(&victim), b"not a png").unwrap();
    fails_with(
        &mnet(&["features", "--data", &data, "--shape", "16,16,1", "-o", &x]),
        &[&victim, "not a readable image"],
    );
    std::fs::create_dir_all(flat.join("cat")).unwrap();
    fails_with(
        &mnet(&["features", "--data", &data, "--shape", "16,16,1", "-o", &x]),
        &["cat", "empty class folder"],
    );
    std::fs::remove_dir_all(split.join("val/b")).unwrap();
    fails_with(
        &mnet(&["features", "--data", &sdata, "--shape", "16,16,1", "-o", &x]),
        &["val/b", "no such folder"],
    );
    let two = dir.join("two.mnet");
    std::fs::write(
        &two,
        "network two(x: i8[16, 16, 1]) -> [2] {\n    x = flatten(x) |> dense(2) |> softmax\n}\n",
    )
    .unwrap();
    std::fs::remove_dir_all(split.join("val")).unwrap();
    fails_with(
        &mnet(&["features", &s(&two), "--data", &sdata, "-o", &x]),
        &["3 classes (a, b, c)", "2 outputs"],
    );
    fails_with(
        &mnet(&["features", "--data", &sdata, "-o", &x]),
        &["--shape"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mnet search` reads a real kind end to end: the Fashion-MNIST example
/// space on generated IDX files, quick.
#[test]
fn search_on_fashion_idx_files() {
    let dir = scratch("search");
    let f = dir.join("fm");
    std::fs::create_dir_all(&f).unwrap();
    idx_files(&f, "train", 160, (28, 28), 10, true, 5);
    idx_files(&f, "t10k", 40, (28, 28), 10, true, 6);
    let out = dir.join("out");
    let data = format!("fashion-mnist:{}", f.display());
    // Baselines to draw beside the searched network.
    let compare = dir.join("compare.json");
    std::fs::write(&compare, r#"[{"label": "width 8", "ops": 300000, "accuracy": 0.5}, {"label": "width 24", "ops": 1100000, "accuracy": 0.7}]"#).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"[{"label": "w", "ops": 3, "accuracy": 2}]"#).unwrap();
    let o = mnet(&[
        "search",
        "examples/fashion.mnet",
        "--data",
        &data,
        "--compare",
        &s(&bad),
        "-o",
        &s(&out),
    ]);
    fails_with(&o, &["bad.json", "entry 0 (w)", "\"accuracy\" 0 to 1"]);
    assert!(!out.exists());
    ok(&mnet(&[
        "search",
        "examples/fashion.mnet",
        "--data",
        &data,
        "--quick",
        "--batch",
        "16",
        "--compare",
        &s(&compare),
        "-o",
        &s(&out),
    ]));
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("Against the compared networks") && report.contains("width 24"),
        "the report lacks the comparison"
    );
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("search.json")).unwrap()).unwrap();
    assert_eq!(j["data"]["spec"], data.as_str());
    assert_eq!(j["data"]["train_samples"], 140);
    assert_eq!(j["compare"][1]["label"], "width 24");
    let ops = j["result"]["ops"].as_u64().unwrap();
    assert!(ops <= 1_200_000, "{ops} ops over the file's budget");
    let w = s(&out.join("fashion.safetensors"));
    let o = mnet(&[
        "eval",
        &s(&out.join("fashion.mnet")),
        "--weights",
        &w,
        "--data",
        &data,
        "--int8",
        "--json",
    ]);
    ok(&o);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["samples"], 40);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Machine sounds: log-mel patches of every clip labelled with its machine
/// id, `mnet eval` scores clips by the negative softmax score of their own
/// id and reports the ROC AUC per id; bad trees are named.
#[test]
fn machine_sounds_train_and_auc() {
    let dir = scratch("machines");
    let tree = dir.join("mimii");
    let ids = ["00", "02", "04", "06"];
    common::datasets::machine_tree(&tree, "slider", &ids, (10, 4, 4), 3.0, 7);
    let data = format!("machine-sounds:{}", tree.display());
    // 3 s clips: 92 frames, two 64-frame patches each.
    let (train, rows) = features(&data, "train", &dir, &[]);
    assert_eq!(train.len(), 2 * 36);
    assert_eq!(npy_shape(&dir.join("train-x.npy")), vec![72, 32, 32, 1]);
    assert!(
        rows[0].0.starts_with("slider/train/normal_id_") && rows[0].0.ends_with("#patch0"),
        "{}",
        rows[0].0
    );
    let (test, _) = features(&data, "test", &dir, &[]);
    assert_eq!(
        counts(&test),
        BTreeMap::from([(0, 16), (1, 16), (2, 16), (3, 16)])
    );
    let out = dir.join("out");
    ok(&mnet(&[
        "train",
        "examples/ad.mnet",
        "--pick",
        "min",
        "--data",
        &data,
        "--epochs",
        "30",
        "--batch",
        "8",
        "-o",
        &s(&out),
    ]));
    let w = s(&out.join("ad.safetensors"));
    let o = mnet(&[
        "eval",
        "examples/ad.mnet",
        "--pick",
        "min",
        "--weights",
        &w,
        "--data",
        &data,
        "--int8",
        "--json",
    ]);
    ok(&o);
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        r["classes"],
        serde_json::json!([
            "slider/id_00",
            "slider/id_02",
            "slider/id_04",
            "slider/id_06"
        ])
    );
    for kind in ["float", "int8"] {
        let auc = &r[kind]["anomaly_auc"];
        let per = auc["per_id"].as_array().unwrap();
        assert_eq!(per.len(), 4);
        for p in per {
            assert_eq!(
                (p["normal_clips"].as_u64(), p["anomalous_clips"].as_u64()),
                (Some(4), Some(4))
            );
        }
        assert_eq!(auc["clip_scores"].as_array().unwrap().len(), 32);
        // The AUC per id, recomputed from the clip scores: the share of
        // (anomalous, normal) pairs of an id where the anomaly scores higher.
        let scores: Vec<(String, f64)> = auc["clip_scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c[0].as_str().unwrap().to_string(), c[1].as_f64().unwrap()))
            .collect();
        let mut mean = 0.0;
        for (p, id) in per.iter().zip(ids) {
            let of = |kind: &str| -> Vec<f64> {
                let prefix = format!("slider/test/{kind}_id_{id}_");
                scores
                    .iter()
                    .filter(|(c, _)| c.starts_with(&prefix))
                    .map(|(_, s)| *s)
                    .collect()
            };
            let (a, n) = (of("anomaly"), of("normal"));
            let wins: f64 = a
                .iter()
                .flat_map(|x| {
                    n.iter().map(move |y| {
                        if x > y {
                            1.0
                        } else if x == y {
                            0.5
                        } else {
                            0.0
                        }
                    })
                })
                .sum();
            let want = wins / (a.len() * n.len()) as f64;
            assert!(
                (p["auc"].as_f64().unwrap() - want).abs() < 1e-12,
                "{kind} {id}: {p} vs {want}"
            );
            mean += want / 4.0;
        }
        assert!((auc["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
        // Every score is minus a probability.
        assert!(scores.iter().all(|(_, s)| (-1.0..=0.0).contains(s)));
        // The classifier learnt the ids (4 classes: chance is 0.25).
        let acc = r[kind]["accuracy"].as_f64().unwrap();
        assert!(acc > 0.5, "{kind}: accuracy {acc}");
    }
    let text = stdout(&mnet(&[
        "eval",
        "examples/ad.mnet",
        "--pick",
        "min",
        "--weights",
        &w,
        "--data",
        &data,
    ]));
    assert!(text.contains("anomaly ROC AUC"), "{text}");
    // Bad trees.
    let x = s(&dir.join("bad.npy"));
    std::fs::write(tree.join("slider/train/normal_id_00_x.wav"), b"junk").unwrap();
    std::fs::write(tree.join("slider/train/readme.wav"), b"junk").unwrap();
    fails_with(
        &mnet(&["features", "--data", &data, "-o", &x]),
        &["readme.wav", "normal_id_XX"],
    );
    std::fs::remove_file(tree.join("slider/train/readme.wav")).unwrap();
    fails_with(
        &mnet(&["features", "--data", &data, "-o", &x]),
        &["normal_id_00_x.wav"],
    );
    write_wav(
        &tree.join("slider/train/normal_id_00_x.wav"),
        16000,
        1,
        &[0; 16000],
    );
    fails_with(
        &mnet(&["features", "--data", &data, "-o", &x]),
        &["normal_id_00_x.wav", "shorter than one 64-frame patch"],
    );
    std::fs::remove_file(tree.join("slider/train/normal_id_00_x.wav")).unwrap();
    // One machine type's own folder.
    let one = format!("machine-sounds:{}", tree.join("slider").display());
    let (l, _) = features(&one, "val", &dir, &[]);
    assert_eq!(counts(&l), BTreeMap::from([(0, 2), (1, 2), (2, 2), (3, 2)]));
    let two = dir.join("two.mnet");
    std::fs::write(
        &two,
        "network two(x: i8[32, 32, 1]) -> [2] {\n    x = flatten(x) |> dense(2) |> softmax\n}\n",
    )
    .unwrap();
    fails_with(
        &mnet(&["features", &s(&two), "--data", &data, "-o", &x]),
        &["4 classes (slider/id_00", "2 outputs"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without list files the split is TensorFlow's `which_set`: SHA-1 of the
/// file name up to `_nohash_`, as input_data.py computes it (here by
/// Python's hashlib, the formula copied from input_data.py).
#[test]
fn speech_commands_without_lists_split_by_tensorflows_hash() {
    let dir = scratch("hash");
    let tree = dir.join("sc");
    let words = words_with_unknown();
    let data = speech_commands(&tree, &words, 20, 1, 8);
    std::fs::remove_file(tree.join("validation_list.txt")).unwrap();
    std::fs::remove_file(tree.join("testing_list.txt")).unwrap();
    let script = r#"
import hashlib, re, sys
for line in sys.stdin:
    name = line.strip()
    hash_name = re.sub(r'_nohash_.*$', '', name.split('/')[-1])
    h = int(hashlib.sha1(hash_name.encode()).hexdigest(), 16)
    p = (h % (2 ** 27)) * (100.0 / (2 ** 27 - 1))
    print('val' if p < 10 else 'test' if p < 20 else 'train')
"#;
    let mut seen = 0;
    for split in ["train", "val", "test"] {
        let (_, rows) = features(&data, split, &dir, &[]);
        let clips: Vec<&str> = rows
            .iter()
            .filter(|(_, l)| *l >= 2)
            .map(|(s, _)| s.as_str())
            .collect();
        seen += clips.len();
        let mut py = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write;
        py.stdin
            .take()
            .unwrap()
            .write_all(clips.join("\n").as_bytes())
            .unwrap();
        let out = py.wait_with_output().unwrap();
        let want = String::from_utf8(out.stdout).unwrap();
        assert!(want.lines().all(|w| w == split), "{split}: {want}");
    }
    assert_eq!(seen, 200, "every keyword clip is in one split");
    let _ = std::fs::remove_dir_all(&dir);
}
