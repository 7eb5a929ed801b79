//! Search checkpoints: after every epoch, the whole state of a search
//! ([`crate::dnas::State`]: every supernet parameter with its
//! optimizer moments, the architecture logits with Adam's, the epoch, the
//! penalty and the history) in one safetensors file, `checkpoint/state.safetensors`,
//! written to a temporary name and renamed, so a killed run leaves the last
//! complete epoch. The metadata holds the history as JSON and a fingerprint
//! of the space, data and settings, so `--resume` refuses a checkpoint of
//! another search.

use crate::dnas::{self, EpochRecord, Phase, SearchConfig, State};
use mnet_compiler::ir::SearchGraph;
use serde_json::{json, Value};
use std::path::Path;

const FILE: &str = "state.safetensors";

fn record_json(e: &EpochRecord) -> Value {
    json!({
        "epoch": e.epoch, "phase": e.phase.name(), "loss": e.loss, "accuracy": e.accuracy,
        "val_loss": e.val_loss, "val_accuracy": e.val_accuracy, "temperature": e.temperature,
        "probabilities": e.probabilities, "expected_ops": e.expected_ops,
        "expected_flash": e.expected_flash, "expected_working": e.expected_working,
        "expected_instructions": e.expected_instructions,
        "resource_loss": e.resource_loss, "penalty": e.penalty, "lr": e.lr,
    })
}

fn record_of(v: &Value) -> Option<EpochRecord> {
    let f32_of = |k: &str| v[k].as_f64().map(|x| x as f32);
    let opt = |k: &str| -> Option<Option<f32>> {
        match &v[k] {
            Value::Null => Some(None),
            x => x.as_f64().map(|x| Some(x as f32)),
        }
    };
    Some(EpochRecord {
        epoch: v["epoch"].as_u64()? as usize,
        phase: match v["phase"].as_str()? {
            "warmup" => Phase::Warmup,
            "search" => Phase::Search,
            "extra" => Phase::Extra,
            _ => return None,
        },
        loss: f32_of("loss")?,
        accuracy: f32_of("accuracy")?,
        val_loss: opt("val_loss")?,
        val_accuracy: opt("val_accuracy")?,
        temperature: f32_of("temperature")?,
        probabilities: v["probabilities"]
            .as_array()?
            .iter()
            .map(|c| {
                c.as_array()?
                    .iter()
                    .map(|x| x.as_f64().map(|x| x as f32))
                    .collect::<Option<Vec<f32>>>()
            })
            .collect::<Option<Vec<_>>>()?,
        expected_ops: v["expected_ops"].as_f64()?,
        expected_flash: v["expected_flash"].as_f64()?,
        expected_working: v["expected_working"].as_f64()?,
        expected_instructions: v["expected_instructions"].as_f64()?,
        resource_loss: v["resource_loss"].as_f64()?,
        penalty: f32_of("penalty")?,
        lr: f32_of("lr")?,
    })
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write the state after an epoch.
pub fn save(dir: &Path, state: &State, fingerprint: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, p) in state.supernet.net.params.iter().enumerate() {
        data.push((
            format!("p{i}.value"),
            vec![p.value.len()],
            bytes_of(&p.value),
        ));
        data.push((
            format!("p{i}.momentum"),
            vec![p.momentum.len()],
            bytes_of(&p.momentum),
        ));
        data.push((
            format!("p{i}.second"),
            vec![p.second.len()],
            bytes_of(&p.second),
        ));
    }
    let a = &state.arch.logits;
    data.push((
        "arch.logits".into(),
        vec![a.value.len()],
        bytes_of(&a.value),
    ));
    data.push((
        "arch.m".into(),
        vec![a.momentum.len()],
        bytes_of(&a.momentum),
    ));
    data.push(("arch.v".into(), vec![a.second.len()], bytes_of(&a.second)));
    let meta = json!({
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "penalty": state.penalty,
        "arch_steps": state.arch.steps,
        "params": state.supernet.net.params.len(),
        "history": state.history.iter().map(record_json).collect::<Vec<_>>(),
    });
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("state".to_string(), meta.to_string());
    let bytes = crate::train::f32_safetensors(&data, Some(metadata));
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(FILE))
        .map_err(|e| format!("cannot write {}: {e}", dir.join(FILE).display()))
}

/// Read a checkpoint of this search (same space, data and settings).
pub fn load(
    dir: &Path,
    g: &SearchGraph,
    cfg: &SearchConfig,
    fingerprint: &str,
) -> Result<State, String> {
    let path = dir.join(FILE);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("--resume: cannot read {}: {e}", path.display()))?;
    let corrupt = |why: String| {
        format!(
            "--resume: {} is not a usable checkpoint: {why}",
            path.display()
        )
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let text = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state"))
        .ok_or_else(|| corrupt("no state metadata".into()))?;
    let m: Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if m["fingerprint"].as_str() != Some(fingerprint) {
        return Err(format!(
            "--resume: {} is the checkpoint of another search (a different space, data or settings)",
            path.display()
        ));
    }
    let mut state = dnas::start(g, cfg)?;
    if m["params"].as_u64() != Some(state.supernet.net.params.len() as u64) {
        return Err(corrupt("its parameters do not match the supernet".into()));
    }
    let tensor = |name: &str, len: usize| -> Result<Vec<f32>, String> {
        let t = st
            .tensor(name)
            .map_err(|_| corrupt(format!("no tensor `{name}`")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != [len] {
            return Err(corrupt(format!("tensor `{name}` has the wrong shape")));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(corrupt(format!("tensor `{name}` has a non-finite value")));
        }
        Ok(v)
    };
    let len_of = |name: &str| {
        st.tensor(name)
            .map(|t| t.shape().first().copied().unwrap_or(0))
            .unwrap_or(0)
    };
    for (i, p) in state.supernet.net.params.iter_mut().enumerate() {
        p.value = tensor(&format!("p{i}.value"), p.value.len())?;
        p.momentum = tensor(&format!("p{i}.momentum"), p.momentum.len())?;
        let second = format!("p{i}.second");
        let n = len_of(&second);
        if n != 0 && n != p.value.len() {
            return Err(corrupt(format!("tensor `{second}` has the wrong shape")));
        }
        p.second = tensor(&second, n)?;
    }
    let a = &mut state.arch.logits;
    a.value = tensor("arch.logits", a.value.len())?;
    a.momentum = tensor("arch.m", a.momentum.len())?;
    let n = len_of("arch.v");
    if n != 0 && n != a.value.len() {
        return Err(corrupt("tensor `arch.v` has the wrong shape".into()));
    }
    a.second = tensor("arch.v", n)?;
    state.epoch = m["epoch"]
        .as_u64()
        .ok_or_else(|| corrupt("no epoch".into()))? as usize;
    state.penalty = m["penalty"]
        .as_f64()
        .ok_or_else(|| corrupt("no penalty".into()))? as f32;
    state.arch.steps = m["arch_steps"]
        .as_u64()
        .ok_or_else(|| corrupt("no step count".into()))? as usize;
    state.history = m["history"]
        .as_array()
        .ok_or_else(|| corrupt("no history".into()))?
        .iter()
        .map(record_of)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("an unreadable epoch in its history".into()))?;
    if state.history.len() != state.epoch {
        return Err(corrupt("its history does not match its epoch".into()));
    }
    Ok(state)
}
