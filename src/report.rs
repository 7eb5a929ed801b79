//! `report.html` of `mnet search`: one self-contained page (inline SVG
//! drawn with plotters, no JavaScript) with each choice's probabilities
//! over the epochs, the loss and accuracy curves, the expected costs
//! against the budgets, and the resolved network's per-layer ops and
//! working memory.

use mnet_compiler::analysis::stats::FixedStats;
use mnet_compiler::ir::SearchGraph;
use mnet_search::dnas::{Budgets, EpochRecord, Fit};
use plotters::prelude::*;

const W: u32 = 640;
const H: u32 = 260;

fn svg(
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        if let Err(e) = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(root))
        {
            return format!("<p>(plot failed: {e})</p>");
        }
    }
    out
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `12.3 K`, `4.56 M`, `0.95`: an axis label.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} K", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Lines over the epochs: (name, values) each, and a budget line when it
/// is within twice the largest value (else the caption gives it).
fn lines(
    title: &str,
    epochs: &[usize],
    series: &[(String, Vec<Option<f64>>)],
    hline: Option<f64>,
) -> String {
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .fold(0.0, f64::max);
    let shown = hline.filter(|&h| h <= 2.0 * top.max(1e-9));
    let caption = match (hline, shown) {
        (Some(h), None) => format!("{title} (budget {}, off the chart)", short(h)),
        _ => title.to_string(),
    };
    svg(|root| {
        let xs = (
            epochs.first().copied().unwrap_or(1) as f64,
            epochs.last().copied().unwrap_or(1).max(2) as f64,
        );
        let mut ymax = top.max(shown.unwrap_or(0.0)) * 1.1;
        if ymax <= 0.0 {
            ymax = 1.0;
        }
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(xs.0..xs.1, 0.0..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_label_formatter(&|v| short(*v))
            .light_line_style(WHITE)
            .draw()
            .map_err(err)?;
        let colors = [BLUE, GREEN, MAGENTA, CYAN];
        for (k, (name, v)) in series.iter().enumerate() {
            let color = colors[k % colors.len()];
            let pts: Vec<(f64, f64)> = epochs
                .iter()
                .zip(v)
                .filter_map(|(&e, y)| y.map(|y| (e as f64, y)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        if let Some(h) = shown {
            chart
                .draw_series(LineSeries::new(
                    vec![(xs.0, h), (xs.1, h)],
                    RED.stroke_width(1),
                ))
                .map_err(err)?
                .label(format!("budget {}", short(h)))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// Held-out accuracy against ops: the compared networks as a line in the
/// order of their ops, the searched one's float and int8 accuracy as
/// points.
fn scatter(refs: &[crate::search::Reference], ours: (f64, (f32, f32))) -> String {
    let (ops, (float, int8)) = ours;
    let mut pts: Vec<(f64, f64, &str)> = refs
        .iter()
        .map(|r| (r.ops, r.accuracy, r.label.as_str()))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let xs = pts.iter().map(|p| p.0).chain([ops]);
    let (x0, x1) = xs
        .clone()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let ys = pts.iter().map(|p| p.1).chain([float as f64, int8 as f64]);
    let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (pad_x, pad_y) = ((x1 - x0).max(1.0) * 0.16, (y1 - y0).max(0.01) * 0.15);
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("held-out accuracy against ops", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (x0 - pad_x).max(0.0)..x1 + pad_x,
                (y0 - pad_y).max(0.0)..(y1 + pad_y).min(1.0),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("ops")
            .y_desc("accuracy")
            .x_label_formatter(&|v| short(*v))
            .light_line_style(WHITE)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("compared")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart
            .draw_series(pts.iter().map(|p| {
                EmptyElement::at((p.0, p.1))
                    + Circle::new((0, 0), 3, BLUE.filled())
                    + Text::new(p.2.to_string(), (4, -12), ("sans-serif", 11))
            }))
            .map_err(err)?;
        for (acc, label, color) in [
            (float, "searched, float", RED),
            (int8, "searched, int8", MAGENTA),
        ] {
            chart
                .draw_series(std::iter::once(Circle::new(
                    (ops, acc as f64),
                    5,
                    color.filled(),
                )))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// A heat map of one choice's probabilities: epochs across, options up
/// (labels at the cells' centres).
fn heat(title: &str, epochs: &[usize], probs: &[Vec<f32>], labels: &[String]) -> String {
    use plotters::coord::ranged1d::SegmentValue;
    svg(|root| {
        let n = probs.first().map_or(1, |p| p.len()).max(1);
        let e = epochs.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d((0..e - 1).into_segmented(), (0..n - 1).into_segmented())
            .map_err(err)?;
        let centre = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(k) => Some(*k),
            _ => None,
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("epoch")
            .x_labels(e.min(20))
            .y_labels(n.min(24))
            .x_label_formatter(&|x| {
                centre(x)
                    .and_then(|k| epochs.get(k))
                    .map_or(String::new(), |e| e.to_string())
            })
            .y_label_formatter(&|y| {
                centre(y)
                    .and_then(|k| labels.get(k))
                    .cloned()
                    .unwrap_or_default()
            })
            .draw()
            .map_err(err)?;
        chart
            .draw_series(probs.iter().enumerate().flat_map(|(x, p)| {
                p.iter().enumerate().map(move |(y, &v)| {
                    let shade = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                        ],
                        RGBColor(shade, shade, 255).filled(),
                    )
                })
            }))
            .map_err(err)?;
        Ok(())
    })
}

/// Bars per layer.
fn bars(title: &str, names: &[String], values: &[f64]) -> String {
    svg(|root| {
        let n = values.len().max(1);
        let ymax = values.iter().copied().fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(0..n, 0.0..ymax * 1.05)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("layer (in execution order; names in the table)")
            .x_label_formatter(&|x| x.to_string())
            .y_label_formatter(&|v| short(*v))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Rectangle::new([(i, 0.0), (i + 1, v)], BLUE.mix(0.6).filled())),
            )
            .map_err(err)?;
        let _ = names;
        Ok(())
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The page.
#[allow(clippy::too_many_arguments)]
pub fn html(
    g: &SearchGraph,
    history: &[EpochRecord],
    assignment: &[u16],
    budgets: &Budgets,
    fit: &Fit,
    stats: &FixedStats,
    accuracy: (f32, f32),
    compare: &[crate::search::Reference],
) -> String {
    let epochs: Vec<usize> = history.iter().map(|e| e.epoch).collect();
    let mut body = String::new();
    body.push_str(&format!(
        "<h1>mnet search: {}</h1>\n<p>{} ops, {} flash bytes, SRAM {} bytes (arena {}, input {}, output {}, stack allowance {}); held-out accuracy float {:.4}, int8 {:.4}.</p>\n",
        escape(&g.info.name),
        fit.ops,
        fit.flash,
        fit.sram,
        fit.memory.arena,
        fit.memory.input,
        fit.memory.output,
        fit.memory.stack,
        accuracy.0,
        accuracy.1
    ));
    body.push_str("<h2>Training</h2>\n");
    let f = |v: &dyn Fn(&EpochRecord) -> Option<f32>| -> Vec<Option<f64>> {
        history.iter().map(|e| v(e).map(|x| x as f64)).collect()
    };
    body.push_str(&lines(
        "loss",
        &epochs,
        &[
            ("training".into(), f(&|e| Some(e.loss))),
            ("held-out".into(), f(&|e| e.val_loss)),
        ],
        None,
    ));
    body.push_str(&lines(
        "accuracy",
        &epochs,
        &[
            ("training".into(), f(&|e| Some(e.accuracy))),
            ("held-out".into(), f(&|e| e.val_accuracy)),
        ],
        None,
    ));
    if !compare.is_empty() {
        body.push_str("<h2>Against the compared networks</h2>\n");
        body.push_str(&scatter(compare, (fit.ops as f64, accuracy)));
        body.push_str("<table><tr><th>network</th><th>ops</th><th>held-out accuracy</th></tr>\n");
        for r in compare {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:.4}</td></tr>\n",
                escape(&r.label),
                r.ops,
                r.accuracy
            ));
        }
        body.push_str(&format!(
            "<tr><td><b>searched</b></td><td>{}</td><td>{:.4} (int8 {:.4})</td></tr>\n</table>\n",
            fit.ops, accuracy.0, accuracy.1
        ));
    }
    body.push_str("<h2>Expected costs against the budgets</h2>\n");
    for (name, budget, get) in [
        (
            "E[ops]",
            budgets.ops,
            (|e: &EpochRecord| e.expected_ops) as fn(&EpochRecord) -> f64,
        ),
        ("E[flash] bytes", budgets.flash, |e: &EpochRecord| {
            e.expected_flash
        }),
        (
            "E[working memory] bytes",
            budgets.working,
            |e: &EpochRecord| e.expected_working,
        ),
        (
            "E[instructions] (latency model)",
            budgets.instructions,
            |e: &EpochRecord| e.expected_instructions,
        ),
    ] {
        // No latency model for the target: no such chart.
        if budget.is_none() && history.iter().all(|e| get(e) == 0.0) {
            continue;
        }
        let v: Vec<Option<f64>> = history.iter().map(|e| Some(get(e))).collect();
        body.push_str(&lines(
            name,
            &epochs,
            &[(name.to_string(), v)],
            budget.map(|b| b as f64),
        ));
    }
    body.push_str("<h2>Choices</h2>\n<table><tr><th>choice</th><th>chosen</th></tr>\n");
    for (i, c) in g.choices.iter().enumerate() {
        body.push_str(&format!(
            "<tr><td>c{i}: {}</td><td>{}</td></tr>\n",
            escape(&c.describe()),
            escape(&c.option_label(assignment[i] as usize))
        ));
    }
    body.push_str("</table>\n");
    for (i, c) in g.choices.iter().enumerate() {
        let probs: Vec<Vec<f32>> = history
            .iter()
            .map(|e| e.probabilities.get(i).cloned().unwrap_or_default())
            .collect();
        let labels: Vec<String> = (0..c.options()).map(|o| c.option_label(o)).collect();
        body.push_str(&heat(
            &format!("c{i}: {} (darker: more probable)", c.describe()),
            &epochs,
            &probs,
            &labels,
        ));
    }
    body.push_str("<h2>The resolved network</h2>\n");
    let names: Vec<String> = stats.rows.iter().map(|r| r.name.clone()).collect();
    let ops: Vec<f64> = stats
        .rows
        .iter()
        .map(|r| 2.0 * r.cost.macs as f64)
        .collect();
    let mem: Vec<f64> = stats
        .rows
        .iter()
        .map(|r| r.cost.working_bytes as f64)
        .collect();
    body.push_str(&bars("ops per layer", &names, &ops));
    body.push_str(&bars("working bytes per layer (0: fused)", &names, &mem));
    body.push_str("<table><tr><th>#</th><th>layer</th><th>op</th><th>shape</th><th>ops</th><th>working bytes</th></tr>\n");
    for (k, r) in stats.rows.iter().enumerate() {
        body.push_str(&format!(
            "<tr><td>{k}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&r.name),
            r.op,
            r.shape,
            2 * r.cost.macs,
            r.cost.working_bytes
        ));
    }
    body.push_str("</table>\n");
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mnet search: {}</title>\n<style>body{{font-family:sans-serif;max-width:700px;margin:auto}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}</style></head><body>\n{body}</body></html>\n",
        escape(&g.info.name)
    )
}
