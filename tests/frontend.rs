//! The MFCC front-end against its oracle, TensorFlow's `tf.signal` (in the
//! pinned venv of tests/common/python.rs): the features `mnet features`
//! writes for a Speech Commands split, clip and silence rows alike, equal
//! `tests/oracle/mfcc.py`'s on every frame to 1e-3 of the features' range.

mod common;

use common::datasets::speech_commands;
use common::{mnet, stderr};

#[test]
fn mfcc_equals_tf_signal_on_every_frame() {
    let dir = std::env::temp_dir().join(format!("mnet-frontend-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tree = dir.join("sc");
    let mut words = vec![
        "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    ];
    words.extend(["bed", "cat"]);
    let data = speech_commands(&tree, &words, 6, 2, 9);
    let (x, list) = (dir.join("x.npy"), dir.join("rows.tsv"));
    let o = mnet(&[
        "features",
        "--data",
        &data,
        "-o",
        &x.display().to_string(),
        "--list",
        &list.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let oracle = dir.join("tf.npy");
    let o = std::process::Command::new(common::python::tf_python())
        .arg("tests/oracle/mfcc.py")
        .args([&tree, &list, &oracle])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "tests/oracle/mfcc.py: {}", stderr(&o));
    let (shape, ours) = common::read_npy_f32(&x);
    let (tshape, theirs) = common::read_npy_f32(&oracle);
    assert_eq!(shape, tshape);
    assert!(shape[0] >= 50, "{} clips", shape[0]);
    let silence = std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with("\t0\t_silence_"))
        .count();
    assert!(silence >= 5, "{silence} silence rows");
    let (lo, hi) = theirs
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let tol = 1e-3 * (hi - lo);
    let mut worst = 0f32;
    for (frame, (a, b)) in ours.chunks(10).zip(theirs.chunks(10)).enumerate() {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        worst = worst.max(d);
        assert!(d <= tol, "clip {} frame {}: max difference {d} > {tol} (range {lo}..{hi})\nmnet {a:?}\ntf   {b:?}", frame / 49, frame % 49);
    }
    eprintln!(
        "{} clips, features {lo}..{hi}: worst frame difference {worst} ({:.2e} of the range)",
        shape[0],
        worst / (hi - lo)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
