//! `mnet features` and `mnet eval`: the exact tensors a network sees from
//! a `--data` source, written as `.npy`; and a trained network's accuracy
//! on a split the way the field reports it — overall and per class, the
//! confusion matrix, float and int8 (on the JIT, bit-exact with the
//! reference interpreter and TFLM) and their agreement, and per layer how
//! far the int8 outputs are from the float ones.

use crate::data_args::{AugmentArgs, DataArgs};
use crate::{
    fixed_network, read_bytes, refuse_colliding, refuse_existing, write_set, NetworkArgs, Result,
    UserError,
};
use clap::Args;
use mnet_compiler::pipeline;
use mnet_search::data::{self, Dataset, Split};
use rayon::prelude::*;
use std::path::PathBuf;

#[derive(Args)]
pub struct FeaturesArgs {
    /// The network the features are for (its input shape and outputs); without it, the kind's own shape (or --shape).
    file: Option<PathBuf>,
    /// Which network, when the file defines several.
    #[arg(long)]
    network: Option<String>,
    /// The input shape without a network: H,W,C (image-folder, npy, synthetic).
    #[arg(long, value_delimiter = ',', conflicts_with = "file")]
    shape: Option<Vec<usize>>,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "train")]
    split: Split,
    /// The training split's features with augmentation (of --epoch).
    #[arg(long)]
    augment: bool,
    #[command(flatten)]
    aug: AugmentArgs,
    /// Which epoch's augmentation (1-based).
    #[arg(long, default_value_t = 1)]
    epoch: u64,
    /// Seeds held-out splits, silence cuts and augmentation (as --seed of train).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The features: float32 .npy [N, ...input].
    #[arg(short, long)]
    output: PathBuf,
    /// The labels: int64 .npy [N].
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Each row's source and label, tab-separated.
    #[arg(long)]
    list: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

pub fn features(args: &FeaturesArgs) -> Result<()> {
    let bad = |m: String| UserError(format!("error: {m}\n"));
    if args.augment && args.split != Split::Train {
        return Err(bad(
            "--augment applies to the training split (--split train)".into(),
        ));
    }
    if args.epoch == 0 {
        return Err(bad("--epoch counts from 1".into()));
    }
    let opts = args.data.options(args.seed, None);
    let (shape, classes) = match &args.file {
        Some(file) => {
            let net = NetworkArgs {
                file: file.clone(),
                pick: Some(mnet_compiler::analysis::resolve::Pick::Min),
                network: args.network.clone(),
            };
            let (_, fixed) = fixed_network(&net, "compute features for")?;
            (
                fixed.info.input_shape.iter().map(|&d| d as usize).collect(),
                fixed.node(fixed.output).shape.iter().product::<u32>() as usize,
            )
        }
        None => {
            let (own, classes) = data::native(&args.data.data, &opts);
            let shape = args.shape.clone().or(own).ok_or_else(|| {
                bad(format!(
                    "--data {}: give the input shape with --shape H,W,C or a network file",
                    args.data.data
                ))
            })?;
            if shape.is_empty() || shape.contains(&0) || shape.len() > 3 {
                return Err(bad(format!(
                    "--shape {shape:?}: one to three sizes, none 0"
                )));
            }
            // Without a network the labels decide the classes: as many as
            // the kind has, or any (npy, synthetic: 2).
            (
                shape,
                classes.unwrap_or(if args.data.data.starts_with("npy:") {
                    usize::MAX
                } else {
                    2
                }),
            )
        }
    };
    let mut outs = vec![args.output.clone()];
    outs.extend(args.labels.clone());
    outs.extend(args.list.clone());
    refuse_colliding(&outs)?;
    refuse_existing(&outs, args.force)?;
    let source = args
        .data
        .open(&shape, classes, args.seed, args.aug.augment(args.augment)?)?;
    let set = if args.augment {
        let train = source.train().map_err(|e| args.data.error(e))?;
        if !train.augments() {
            return Err(bad(format!(
                "--data {}: this kind does not augment (or the flags turn every augmentation off)",
                args.data.data
            )));
        }
        match train.epoch(args.epoch) {
            Some(d) => d,
            None => train.data.into_owned(),
        }
    } else {
        source.split(args.split).map_err(|e| args.data.error(e))?
    };
    let names = source.class_names();
    let mut files = vec![(args.output.clone(), set.inputs_npy(set.len()))];
    if let Some(l) = &args.labels {
        files.push((l.clone(), set.labels_npy()));
    }
    if let Some(l) = &args.list {
        let mut tsv = String::from("row\tsource\tlabel\tclass\n");
        for i in 0..set.len() {
            let label = set.labels[i];
            let name = names
                .as_ref()
                .and_then(|n| n.get(label))
                .cloned()
                .unwrap_or_else(|| label.to_string());
            tsv.push_str(&format!("{i}\t{}\t{label}\t{name}\n", set.source(i)));
        }
        files.push((l.clone(), tsv.into_bytes()));
    }
    write_set(&files, None)?;
    outln!(
        "{}: {} rows of {:?} ({} split{}){}",
        args.output.display(),
        set.len(),
        set.shape,
        args.split.name(),
        if args.augment {
            format!(", augmented, epoch {}", args.epoch)
        } else {
            String::new()
        },
        args.labels
            .as_ref()
            .map_or(String::new(), |l| format!("; labels in {}", l.display()))
    );
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// The network: a .mnet (a search space with --pick) with its --weights, or an int8 .tflite.
    file: PathBuf,
    #[arg(long)]
    network: Option<String>,
    #[arg(long)]
    pick: Option<mnet_compiler::analysis::resolve::Pick>,
    /// The trained float weights of a .mnet (safetensors, e.g. from mnet train or mnet search).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "test")]
    split: Split,
    /// Also evaluate the int8 network (on the JIT, bit-exact with the reference interpreter and TFLM).
    #[arg(long)]
    int8: bool,
    /// Per layer, how far the int8 outputs are from the float ones (implies --int8).
    #[arg(long)]
    per_layer: bool,
    /// How many samples the per-layer report runs.
    #[arg(long, default_value_t = 100)]
    per_layer_samples: usize,
    /// Calibration inputs for int8 (float32 .npy); default: the first 256 rows of the training split.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// The report as JSON on standard output.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

/// Accuracy, per-class accuracy (recall) and the confusion matrix (rows:
/// true class, columns: predicted).
fn scores(labels: &[usize], predicted: &[usize], classes: usize) -> serde_json::Value {
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&t, &p) in labels.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class: Vec<Option<f64>> = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let n: usize = row.iter().sum();
            (n > 0).then(|| row[c] as f64 / n as f64)
        })
        .collect();
    serde_json::json!({
        "accuracy": correct as f64 / labels.len().max(1) as f64,
        "correct": correct,
        "per_class": per_class,
        "confusion": confusion,
    })
}

/// For a set of clips with anomalies (machine sounds): each clip's
/// anomaly score, the negative softmax score of its own id averaged over
/// its patches, and the ROC AUC of anomalous against normal clips per id
/// and their mean.
fn anomaly_auc(
    set: &Dataset,
    probabilities: &[f32],
    names: &[String],
) -> Option<serde_json::Value> {
    let g = set
        .groups
        .as_ref()
        .filter(|g| g.anomalous.iter().any(|&a| a))?;
    let classes = names.len();
    let clips = g.anomalous.len();
    let (mut sum, mut count, mut label) =
        (vec![0f64; clips], vec![0usize; clips], vec![0usize; clips]);
    for (row, &clip) in g.clip_of_row.iter().enumerate() {
        let own = set.labels[row];
        sum[clip] -= probabilities[row * classes + own] as f64;
        count[clip] += 1;
        label[clip] = own;
    }
    let score: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, &n)| s / n.max(1) as f64)
        .collect();
    let mut per_id = Vec::new();
    let mut aucs = Vec::new();
    for (c, name) in names.iter().enumerate() {
        let of: Vec<usize> = (0..clips)
            .filter(|&k| label[k] == c && count[k] > 0)
            .collect();
        let s: Vec<f64> = of.iter().map(|&k| score[k]).collect();
        let a: Vec<bool> = of.iter().map(|&k| g.anomalous[k]).collect();
        let auc = data::roc_auc(&s, &a);
        aucs.extend(auc);
        per_id.push(serde_json::json!({
            "id": name,
            "auc": auc,
            "normal_clips": a.iter().filter(|&&x| !x).count(),
            "anomalous_clips": a.iter().filter(|&&x| x).count(),
        }));
    }
    Some(serde_json::json!({
        "per_id": per_id,
        "mean": (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
        "clip_scores": g.clips.iter().zip(&score).map(|(c, s)| serde_json::json!([c, s])).collect::<Vec<_>>(),
    }))
}

/// Float vs int8 output of one lowered node over some samples.
#[derive(Default)]
struct LayerError {
    n: usize,
    sq: f64,
    max: f64,
    dot: f64,
    ff: f64,
    qq: f64,
    saturated: usize,
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    let bad = |m: String| UserError(format!("error: {m}\n"));
    if args.batch == 0 {
        return Err(bad("--batch must be at least 1".into()));
    }
    if crate::is_tflite(&args.file) {
        return eval_tflite(args);
    }
    let Some(weights_path) = &args.weights else {
        return Err(bad(format!(
            "{}: evaluating a .mnet network needs its trained weights: --weights FILE.safetensors",
            args.file.display()
        )));
    };
    let net = NetworkArgs {
        file: args.file.clone(),
        pick: args.pick,
        network: args.network.clone(),
    };
    let (_, fixed) = fixed_network(&net, "evaluate")?;
    let name = fixed.info.name.clone();
    let shape: Vec<usize> = fixed.info.input_shape.iter().map(|&d| d as usize).collect();
    let classes = fixed.node(fixed.output).shape.iter().product::<u32>() as usize;
    let (source, set) = eval_split(args, &shape, classes)?;
    let weights = read_bytes(weights_path)?;
    let mut model =
        mnet_search::engine::Net::from_fixed(&fixed, args.batch.min(set.len()), args.seed);
    model
        .load_safetensors(&weights)
        .map_err(|e| bad(format!("--weights {}: {e}", weights_path.display())))?;
    let (loss, _) = mnet_search::train::evaluate(&mut model, &set);
    let logits = mnet_search::train::predict(&mut model, &set);
    let float_pred = mnet_search::train::argmax(&logits, classes);
    let names = class_names(&source, classes);
    let mut report = serde_json::json!({
        "network": name,
        "file": args.file.display().to_string(),
        "weights": weights_path.display().to_string(),
        "data": args.data.data,
        "split": args.split.name(),
        "samples": set.len(),
        "classes": names,
        "float": scores(&set.labels, &float_pred, classes),
    });
    report["float"]["loss"] = serde_json::json!(loss);
    let probabilities: Vec<f32> = logits
        .chunks_exact(classes)
        .flat_map(|row| {
            let top = row.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = row.iter().map(|v| (v - top).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.into_iter().map(move |v| v / sum)
        })
        .collect();
    if let Some(auc) = anomaly_auc(&set, &probabilities, &names) {
        report["float"]["anomaly_auc"] = auc;
    }
    let int8 = args.int8 || args.per_layer;
    let mut int8_pred = None;
    if int8 {
        let calib = match &args.calib {
            Some(c) => read_bytes(c)?,
            None => {
                let train = source.split(Split::Train).map_err(|e| args.data.error(e))?;
                train.inputs_npy(data::CALIBRATION_ROWS)
            }
        };
        let q = pipeline::quantize(&fixed, pipeline::Weights::File(&weights), Some(&calib))
            .map_err(|e| bad(format!("{name}: {e}")))?;
        let outputs = mnet_search::train::int8_predict(&q, &set);
        let pred = mnet_search::train::argmax(&outputs, classes);
        let oq = q.graph.qparams[q.graph.lowered.output];
        let probabilities: Vec<f32> = outputs.iter().map(|&v| oq.dequantize(v)).collect();
        let agree = pred.iter().zip(&float_pred).filter(|(a, b)| a == b).count();
        report["int8"] = scores(&set.labels, &pred, classes);
        report["int8"]["agreement_with_float"] = serde_json::json!(agree as f64 / set.len() as f64);
        if let Some(auc) = anomaly_auc(&set, &probabilities, &names) {
            report["int8"]["anomaly_auc"] = auc;
        }
        report["int8"]["calibration"] = serde_json::json!(args.calib.as_ref().map_or(
            format!(
                "the first {} rows of the training split",
                data::CALIBRATION_ROWS
            ),
            |c| c.display().to_string()
        ));
        if args.per_layer {
            report["per_layer"] = per_layer(&q, &set, args.per_layer_samples);
        }
        int8_pred = Some(pred);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        return Ok(());
    }
    print_report(&report, &names, int8_pred.is_some());
    Ok(())
}

/// The source's class names, or the class numbers.
fn class_names(source: &data::Source, classes: usize) -> Vec<String> {
    source
        .class_names()
        .unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect())
}

/// The split `mnet eval` scores, not empty.
fn eval_split(args: &EvalArgs, shape: &[usize], classes: usize) -> Result<(data::Source, Dataset)> {
    let (source, set) = args.data.split(args.split, shape, classes, args.seed)?;
    if set.is_empty() {
        return Err(UserError(format!(
            "error: --data {}: the {} split is empty\n",
            args.data.data,
            args.split.name()
        )));
    }
    Ok((source, set))
}

/// `mnet eval MODEL.tflite`: the imported int8 network on the JIT
/// (bit-exact with the reference interpreter and TFLM); the data's
/// features are quantized with the model's input quantization (the
/// QUANTIZE of a float input).
fn eval_tflite(args: &EvalArgs) -> Result<()> {
    let bad = |m: String| UserError(format!("error: {m}\n"));
    let file = args.file.display();
    if args.weights.is_some() || args.calib.is_some() || args.per_layer {
        return Err(bad(format!(
            "{file}: a .tflite holds its int8 weights and quantization, and no float network: --weights, --calib and --per-layer are for .mnet networks"
        )));
    }
    let net = crate::NetworkArgs {
        file: args.file.clone(),
        pick: args.pick,
        network: args.network.clone(),
    };
    let (name, model) = crate::import_tflite(&net)?;
    let q = &model.quantized;
    let l = &q.graph.lowered;
    let shape: Vec<usize> = l.nodes[0].shape.iter().map(|&d| d as usize).collect();
    let classes: usize = l.nodes[l.output]
        .shape
        .iter()
        .map(|&d| d as usize)
        .product();
    let (source, set) = eval_split(args, &shape, classes)?;
    let outputs = mnet_search::train::int8_predict(q, &set);
    let pred = mnet_search::train::argmax(&outputs, classes);
    let oq = q.graph.qparams[l.output];
    let probabilities: Vec<f32> = outputs.iter().map(|&v| oq.dequantize(v)).collect();
    let names = class_names(&source, classes);
    let mut report = serde_json::json!({
        "network": name,
        "file": args.file.display().to_string(),
        "data": args.data.data,
        "split": args.split.name(),
        "samples": set.len(),
        "classes": names,
        "int8": scores(&set.labels, &pred, classes),
    });
    if let Some(auc) = anomaly_auc(&set, &probabilities, &names) {
        report["int8"]["anomaly_auc"] = auc;
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
        return Ok(());
    }
    print_report(&report, &names, true);
    Ok(())
}

/// Per lowered layer over the first `samples` rows: RMSE, max abs error,
/// cosine similarity of the int8 output (dequantized) against the float
/// network's, and the share of float values outside what the int8 tensor
/// can hold (saturated).
fn per_layer(q: &pipeline::Quantized, set: &Dataset, samples: usize) -> serde_json::Value {
    let l = &q.graph.lowered;
    let len = set.sample_len();
    let iq = q.graph.qparams[0];
    let n = samples.min(set.len());
    let partial: Vec<Vec<LayerError>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let x = &set.inputs[i * len..(i + 1) * len];
            let f = mnet_compiler::exec::f32::forward(l, &q.float, x);
            let xq: Vec<i8> = x.iter().map(|&v| iq.quantize(v)).collect();
            let qv = mnet_compiler::exec::interp::run(&q.graph, &q.prepared, &xq);
            (0..l.nodes.len())
                .map(|k| {
                    let p = q.graph.qparams[k];
                    let (lo, hi) = (p.dequantize(-128), p.dequantize(127));
                    let half = p.scale / 2.0;
                    let mut e = LayerError::default();
                    for (&fv, &qi) in f[k].iter().zip(&qv[k]) {
                        let dq = p.dequantize(qi) as f64;
                        let fv64 = fv as f64;
                        let d = (dq - fv64).abs();
                        e.n += 1;
                        e.sq += d * d;
                        e.max = e.max.max(d);
                        e.dot += dq * fv64;
                        e.ff += fv64 * fv64;
                        e.qq += dq * dq;
                        e.saturated += usize::from(fv < lo - half || fv > hi + half);
                    }
                    e
                })
                .collect()
        })
        .collect();
    let rows: Vec<serde_json::Value> = l
        .nodes
        .iter()
        .enumerate()
        .map(|(k, node)| {
            let mut e = LayerError::default();
            for p in &partial {
                let s = &p[k];
                e.n += s.n;
                e.sq += s.sq;
                e.max = e.max.max(s.max);
                e.dot += s.dot;
                e.ff += s.ff;
                e.qq += s.qq;
                e.saturated += s.saturated;
            }
            let op = match &node.kind {
                mnet_compiler::lower::LKind::Pool { kind, .. } => format!("{kind:?}_pool"),
                kind => format!("{kind:?}")
                    .split([' ', '('])
                    .next()
                    .unwrap_or("")
                    .to_string(),
            }
            .to_lowercase();
            let cosine = if e.ff > 0.0 && e.qq > 0.0 {
                e.dot / (e.ff.sqrt() * e.qq.sqrt())
            } else if e.ff == e.qq {
                1.0
            } else {
                0.0
            };
            serde_json::json!({
                "layer": node.name,
                "op": op,
                "fused": node.fused,
                "rmse": (e.sq / e.n.max(1) as f64).sqrt(),
                "max_abs": e.max,
                "cosine": cosine,
                "saturated": e.saturated as f64 / e.n.max(1) as f64,
                "scale": q.graph.qparams[k].scale,
            })
        })
        .collect();
    serde_json::json!({ "samples": n, "layers": rows })
}

fn print_report(r: &serde_json::Value, names: &[String], int8: bool) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    outln!(
        "{} on {} ({} split, {} samples, {} classes)",
        r["network"].as_str().unwrap_or(""),
        r["data"].as_str().unwrap_or(""),
        r["split"].as_str().unwrap_or(""),
        r["samples"],
        names.len()
    );
    // A .tflite has no float network.
    let float = r["float"].is_object();
    if float {
        outln!(
            "float  accuracy {:.4}  loss {:.4}",
            f(&r["float"]["accuracy"]),
            f(&r["float"]["loss"])
        );
    }
    if int8 && float {
        outln!(
            "int8   accuracy {:.4}  (the same top-1 as float on {:.2}% of samples)",
            f(&r["int8"]["accuracy"]),
            100.0 * f(&r["int8"]["agreement_with_float"])
        );
    } else if int8 {
        outln!("int8   accuracy {:.4}", f(&r["int8"]["accuracy"]));
    }
    for kind in ["float", "int8"] {
        if let Some(ids) = r[kind]["anomaly_auc"]["per_id"].as_array() {
            let per: Vec<String> = ids
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        i["id"].as_str().unwrap_or(""),
                        i["auc"].as_f64().map_or("-".into(), |a| format!("{a:.4}"))
                    )
                })
                .collect();
            outln!(
                "{kind:5}  anomaly ROC AUC {}  (per id: {})",
                r[kind]["anomaly_auc"]["mean"]
                    .as_f64()
                    .map_or("-".into(), |a| format!("{a:.4}")),
                per.join(", ")
            );
        }
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(1).max(5);
    outln!();
    outln!(
        "{:width$}  {}{}samples",
        "class",
        if float { "  float  " } else { "" },
        if int8 { "   int8  " } else { "" }
    );
    let confusion = if int8 {
        &r["int8"]["confusion"]
    } else {
        &r["float"]["confusion"]
    };
    for (c, name) in names.iter().enumerate() {
        let n: u64 = confusion[c]
            .as_array()
            .map_or(0, |row| row.iter().filter_map(|v| v.as_u64()).sum());
        let acc = |v: &serde_json::Value| {
            v.as_f64()
                .map_or("     -".to_string(), |a| format!("{a:7.4}"))
        };
        outln!(
            "{name:width$}  {}{}{n}",
            if float {
                format!("{}  ", acc(&r["float"]["per_class"][c]))
            } else {
                String::new()
            },
            if int8 {
                format!("{}  ", acc(&r["int8"]["per_class"][c]))
            } else {
                String::new()
            }
        );
    }
    outln!();
    outln!(
        "confusion matrix ({}; rows: true class, columns: predicted)",
        if int8 { "int8" } else { "float" }
    );
    let cell = confusion
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().into_iter().flatten())
        .filter_map(|v| v.as_u64())
        .max()
        .unwrap_or(0)
        .to_string()
        .len()
        .max(3);
    let width = names
        .iter()
        .enumerate()
        .map(|(c, n)| format!("{c} {n}").len())
        .max()
        .unwrap_or(1);
    let mut head = format!("{:width$}", "");
    for c in 0..names.len() {
        head.push_str(&format!(" {c:>cell$}"));
    }
    outln!("{head}");
    for (c, name) in names.iter().enumerate() {
        let mut line = format!("{:width$}", format!("{c} {name}"), width = width);
        for v in confusion[c].as_array().into_iter().flatten() {
            line.push_str(&format!(" {:>cell$}", v.as_u64().unwrap_or(0)));
        }
        outln!("{line}");
    }
    if let Some(layers) = r["per_layer"]["layers"].as_array() {
        outln!();
        outln!(
            "per layer, int8 against float over {} samples:",
            r["per_layer"]["samples"]
        );
        let lw = layers
            .iter()
            .filter_map(|l| l["layer"].as_str())
            .map(|s| s.len())
            .max()
            .unwrap_or(5)
            .max(5);
        outln!(
            "{:lw$}  {:10}  {:>10}  {:>10}  {:>8}  {:>9}",
            "layer",
            "op",
            "rmse",
            "max abs",
            "cosine",
            "saturated"
        );
        for l in layers {
            outln!(
                "{:lw$}  {:10}  {:>10.5}  {:>10.5}  {:>8.5}  {:>8.3}%",
                l["layer"].as_str().unwrap_or(""),
                l["op"].as_str().unwrap_or(""),
                f(&l["rmse"]),
                f(&l["max_abs"]),
                f(&l["cosine"]),
                100.0 * f(&l["saturated"])
            );
        }
    }
}
