//! A small hand-written SVG writer for log-log line charts, and the bench report's
//! chart: tokens/s and bytes kept against context length. No dependencies; the
//! output is plain SVG 1.1 that browsers and GitHub render.

use std::fmt::Write;

use ltm_engine::bench::report::{fmt_bytes, fmt_count};
use ltm_engine::bench::{BenchReport, Cell, Clock, Point};

use super::table::clock_note;

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// `(x, y)`; points with a coordinate that is not positive and finite are left out.
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    pub markers: bool,
}

/// A vertical line at `x` with a label.
#[derive(Clone, Debug)]
pub struct Mark {
    pub x: f64,
    pub label: String,
}

/// A horizontal line at `y` with a label.
#[derive(Clone, Debug)]
pub struct Level {
    pub y: f64,
    pub label: String,
}

/// How tick labels of the y axis read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
}

/// One log-log chart.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub y_unit: Unit,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
    pub levels: Vec<Level>,
}

/// Panels side by side over one x range, with notes below.
#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub x_range: (f64, f64),
    pub panels: Vec<Panel>,
    pub notes: Vec<String>,
}

const PANEL_W: f64 = 500.0;
const PLOT_LEFT: f64 = 80.0;
const PLOT_W: f64 = 390.0;
const PLOT_TOP: f64 = 70.0;
const PLOT_H: f64 = 300.0;
const LEGEND_LINE: f64 = 18.0;

/// Writes `figure` as an SVG document.
pub fn render(figure: &Figure) -> String {
    let legend_rows = figure
        .panels
        .iter()
        .map(|p| p.series.len() + p.levels.len() + p.marks.len())
        .max()
        .unwrap_or(0);
    let width = PANEL_W * figure.panels.len().max(1) as f64 + 20.0;
    let notes_top = PLOT_TOP + PLOT_H + 60.0 + legend_rows as f64 * LEGEND_LINE;
    let height = notes_top + 10.0 + figure.notes.len() as f64 * LEGEND_LINE;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="26" font-size="16" text-anchor="middle" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(&figure.title)
    );
    let xr = Decades::covering(figure.x_range.0, figure.x_range.1);
    for (i, panel) in figure.panels.iter().enumerate() {
        render_panel(
            &mut s,
            panel,
            10.0 + i as f64 * PANEL_W,
            &xr,
            &figure.x_label,
        );
    }
    for (i, note) in figure.notes.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="20" y="{:.0}" fill="#444">{}</text>"##,
            notes_top + i as f64 * LEGEND_LINE,
            escape(note)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A log10 range rounded out to whole decades.
struct Decades {
    lo: i32,
    hi: i32,
}

impl Decades {
    fn covering(min: f64, max: f64) -> Decades {
        let (min, max) = if min.is_finite() && max.is_finite() && min > 0.0 && max >= min {
            (min, max)
        } else {
            (1.0, 10.0)
        };
        let lo = min.log10().floor() as i32;
        let hi = (max.log10().ceil() as i32).max(lo + 1);
        Decades { lo, hi }
    }

    /// Position in `[0, 1]` of `v` within the range.
    fn frac(&self, v: f64) -> f64 {
        (v.log10() - self.lo as f64) / (self.hi - self.lo) as f64
    }

    /// Every decade, or every other one when there are many.
    fn ticks(&self) -> impl Iterator<Item = i32> + '_ {
        let step = if self.hi - self.lo > 10 { 2 } else { 1 };
        (self.lo..=self.hi).filter(move |k| (k - self.lo) % step == 0)
    }
}

fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

fn render_panel(s: &mut String, panel: &Panel, left: f64, xr: &Decades, x_label: &str) {
    let ys = panel
        .series
        .iter()
        .flat_map(|se| se.points.iter().map(|p| p.1))
        .chain(panel.levels.iter().map(|l| l.y))
        .filter(|v| positive(*v));
    let (ymin, ymax) = ys.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let yr = Decades::covering(ymin, ymax);
    let (x0, y0) = (left + PLOT_LEFT, PLOT_TOP);
    let px = |x: f64| x0 + xr.frac(x) * PLOT_W;
    let py = |y: f64| y0 + PLOT_H - yr.frac(y) * PLOT_H;
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" text-anchor="middle">{}</text>"#,
        x0 + PLOT_W / 2.0,
        y0 - 16.0,
        escape(&panel.title)
    );
    // Grid and ticks.
    for k in xr.ticks() {
        let x = px(10f64.powi(k));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y0 + PLOT_H,
            y0 + PLOT_H + 16.0,
            escape(&tick_label(k, Unit::Count))
        );
    }
    for k in yr.ticks() {
        let y = py(10f64.powi(k));
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PLOT_W,
            x0 - 6.0,
            y + 4.0,
            escape(&tick_label(k, panel.y_unit))
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{x0:.1}" y="{y0:.1}" width="{PLOT_W:.1}" height="{PLOT_H:.1}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        x0 + PLOT_W / 2.0,
        y0 + PLOT_H + 34.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        left + 18.0,
        y0 + PLOT_H / 2.0,
        escape(&panel.y_label)
    );
    for level in panel.levels.iter().filter(|l| positive(l.y)) {
        let y = py(level.y);
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888" stroke-width="1.5" stroke-dasharray="2,3"/>"##,
            x0 + PLOT_W
        );
    }
    for mark in panel.marks.iter().filter(|m| positive(m.x)) {
        let x = px(mark.x);
        if (x0..=x0 + PLOT_W).contains(&x) {
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#000" stroke-width="1" stroke-dasharray="6,3"/>"##,
                y0 + PLOT_H
            );
        }
    }
    for se in &panel.series {
        let pts: Vec<(f64, f64)> = se
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| positive(x) && positive(y))
            .map(|(x, y)| (px(x), py(y)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="7,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
            se.color,
            coords.join(" "),
            escape(&se.label)
        );
        if se.markers {
            for (x, y) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                    se.color
                );
            }
        }
    }
    // Legend under the plot.
    let mut ly = y0 + PLOT_H + 56.0;
    for se in &panel.series {
        let dash = if se.dashed {
            r#" stroke-dasharray="7,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            x0 + 28.0,
            ly - 4.0,
            se.color,
            x0 + 36.0,
            escape(&se.label)
        );
        ly += LEGEND_LINE;
    }
    for level in &panel.levels {
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888" stroke-width="1.5" stroke-dasharray="2,3"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
            ly - 4.0,
            x0 + 28.0,
            ly - 4.0,
            x0 + 36.0,
            escape(&level.label)
        );
        ly += LEGEND_LINE;
    }
    for mark in &panel.marks {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000" stroke-dasharray="6,3"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
            x0 + 14.0,
            ly - 12.0,
            x0 + 14.0,
            ly + 2.0,
            x0 + 36.0,
            escape(&mark.label)
        );
        ly += LEGEND_LINE;
    }
}

/// `10^k` as a tick label: `1K`, `100M`; bytes in decimal units (`1 GB`) since the
/// ticks sit at powers of ten.
fn tick_label(k: i32, unit: Unit) -> String {
    let v = 10f64.powi(k);
    match unit {
        Unit::Count if (0..4).contains(&k) => format!("{v}"),
        Unit::Count if k >= 4 => fmt_count(v).replace(".00", "").replace(".0", ""),
        Unit::Count if k >= -3 => format!("{v}"),
        Unit::Count => format!("1e{k}"),
        Unit::Bytes => {
            let names = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
            if k < 0 {
                return format!("1e{k} B");
            }
            let (i, rest) = ((k / 3) as usize, k % 3);
            match names.get(i) {
                Some(name) => format!("{} {name}", 10u64.pow(rest as u32)),
                None => format!("1e{k} B"),
            }
        }
    }
}

/// Escapes text for XML content and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

const MEMORY: &str = "#1f77b4";
const MEMORY_DECODE: &str = "#2ca02c";
const ATTENTION: &str = "#d62728";
const ATTENTION_DECODE: &str = "#ff7f0e";

/// The bench report's figure: throughput and bytes kept against context length.
pub fn report_figure(report: &BenchReport, command: &str) -> Figure {
    let c = &report.config;
    let first = report.points.first().map_or(1.0, |p| p.tokens as f64);
    let target = report.at_target.tokens.max(first * 10.0);
    let rate = |cell: fn(&Point) -> &Cell, per_token: bool| {
        move |p: &Point| {
            cell(p).measured_s().map(|s| {
                (
                    p.tokens as f64,
                    if per_token {
                        1.0 / s
                    } else {
                        p.tokens as f64 / s
                    },
                )
            })
        }
    };
    let mut throughput = Vec::new();
    let f = &report.fits;
    let lines = [
        (
            "memory forward",
            MEMORY,
            rate(|p| &p.memory_forward, false),
            &f.memory_forward,
            false,
        ),
        (
            "attention prefill",
            ATTENTION,
            rate(|p| &p.attention_prefill, false),
            &f.attention_prefill,
            false,
        ),
        (
            "memory decode",
            MEMORY_DECODE,
            rate(|p| &p.memory_decode, true),
            &f.memory_decode,
            true,
        ),
        (
            "attention decode",
            ATTENTION_DECODE,
            rate(|p| &p.attention_decode, true),
            &f.attention_decode,
            true,
        ),
    ];
    for (name, color, get, fit, per_token) in lines {
        let measured: Vec<(f64, f64)> = report.points.iter().filter_map(&get).collect();
        let last = measured.last().copied();
        throughput.push(Series {
            label: format!("{name} (measured)"),
            color,
            points: measured,
            dashed: false,
            markers: true,
        });
        let fit = fit
            .as_ref()
            .filter(|f| f.points >= ltm_engine::bench::report::MIN_EXTRAPOLATION_POINTS);
        if let (Some(fit), Some((n, _))) = (fit, last) {
            let at = |x: f64| {
                (
                    x,
                    if per_token {
                        1.0 / fit.predict(x)
                    } else {
                        x / fit.predict(x)
                    },
                )
            };
            throughput.push(Series {
                label: format!("{name} (extrapolated, n^{:.2})", fit.exponent),
                color,
                points: vec![at(n), at(target)],
                dashed: true,
                markers: false,
            });
        }
    }
    let mut marks = Vec::new();
    if let (Some(n), Some(ram)) = (report.attention_prefill_oom_tokens, report.machine.ram) {
        marks.push(Mark {
            x: n,
            label: format!(
                "attention prefill out of RAM ({} of {})",
                fmt_count(n),
                fmt_bytes(ram.total_bytes as f64)
            ),
        });
    }
    let (title, y_label) = match c.clock {
        Clock::Wall => ("throughput (tokens/s)", "tokens per second"),
        Clock::Cpu => (
            "throughput (tokens per CPU-second)",
            "tokens per CPU-second",
        ),
    };
    let throughput_panel = Panel {
        title: title.into(),
        y_label: y_label.into(),
        y_unit: Unit::Count,
        series: throughput,
        marks: marks.clone(),
        levels: vec![],
    };
    let mut bytes_marks = Vec::new();
    if let Some(n) = report.kv_cache_oom_tokens {
        bytes_marks.push(Mark {
            x: n,
            label: format!("KV cache out of RAM at {} tokens", fmt_count(n)),
        });
    }
    let kv = report.kv_cache_bytes_per_token as f64;
    let bytes_panel = Panel {
        title: "memory kept (bytes)".into(),
        y_label: "bytes".into(),
        y_unit: Unit::Bytes,
        series: vec![
            Series {
                label: format!(
                    "memory state, fixed ({})",
                    fmt_bytes(report.state_bytes as f64)
                ),
                color: MEMORY,
                points: vec![
                    (first, report.state_bytes as f64),
                    (target, report.state_bytes as f64),
                ],
                dashed: false,
                markers: false,
            },
            Series {
                label: format!("attention KV cache, f32 ({} per token)", fmt_bytes(kv)),
                color: ATTENTION,
                points: vec![(first, first * kv), (target, target * kv)],
                dashed: false,
                markers: false,
            },
        ],
        marks: bytes_marks,
        levels: report
            .machine
            .ram
            .map(|r| Level {
                y: r.total_bytes as f64,
                label: format!("this machine's RAM ({})", fmt_bytes(r.total_bytes as f64)),
            })
            .into_iter()
            .collect(),
    };
    Figure {
        title: format!(
            "gated-delta-rule memory vs causal softmax attention, H = {}, D = {}, batch 1, f32",
            c.heads, c.head_dim
        ),
        x_label: "context length (tokens)".into(),
        x_range: (first, target),
        panels: vec![throughput_panel, bytes_panel],
        notes: vec![
            format!("memory: {}; attention: {}", report.machine.memory_backend, report.machine.attention_backend),
            "solid: measured (median of timed runs); dashed: extrapolated from the fitted power law, not measured; bytes are computed".into(),
            clock_note(c.clock).to_string(),
            format!("made by: {command}"),
        ],
    }
}

/// [`render`] of [`report_figure`].
pub fn render_report(report: &BenchReport, command: &str) -> String {
    render(&report_figure(report, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_chart_is_well_formed_svg_with_every_series() {
        let report = super::super::table::tests::synthetic_report();
        let svg = render_report(&report, "ltm-engine bench --plot <out>.svg & more");
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let titles: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter_map(|n| n.children().find(|c| c.has_tag_name("title")))
            .filter_map(|t| t.text())
            .collect();
        for name in [
            "memory forward",
            "attention prefill",
            "memory decode",
            "attention decode",
        ] {
            assert!(
                titles.contains(&format!("{name} (measured)").as_str()),
                "{name} missing: {titles:?}"
            );
            assert!(titles
                .iter()
                .any(|t| t.starts_with(&format!("{name} (extrapolated"))));
        }
        assert!(titles.iter().any(|t| t.starts_with("memory state")));
        assert!(titles.iter().any(|t| t.starts_with("attention KV cache")));
        // Every coordinate is a finite number inside the drawing.
        let width: f64 = root.attribute("width").unwrap().parse().unwrap();
        let height: f64 = root.attribute("height").unwrap().parse().unwrap();
        for line in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
            for pair in line.attribute("points").unwrap().split(' ') {
                let (x, y) = pair.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(
                    (0.0..=width).contains(&x) && (0.0..=height).contains(&y),
                    "{pair} outside"
                );
            }
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(
            svg.contains("&lt;out&gt;.svg &amp; more"),
            "text is escaped"
        );
    }

    #[test]
    fn measured_points_are_drawn_where_they_belong() {
        let figure = Figure {
            title: "t".into(),
            x_label: "x".into(),
            x_range: (10.0, 1000.0),
            panels: vec![Panel {
                title: "p".into(),
                y_label: "y".into(),
                y_unit: Unit::Count,
                series: vec![Series {
                    label: "line".into(),
                    color: "#000",
                    points: vec![(10.0, 1.0), (100.0, 10.0), (1000.0, 100.0), (0.0, 5.0)],
                    dashed: false,
                    markers: true,
                }],
                marks: vec![],
                levels: vec![],
            }],
            notes: vec![],
        };
        let svg = render(&figure);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let line = doc
            .descendants()
            .find(|n| n.has_tag_name("polyline"))
            .unwrap();
        let pts: Vec<(f64, f64)> = line
            .attribute("points")
            .unwrap()
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        // The non-positive x is dropped; a straight line in log-log is evenly spaced.
        assert_eq!(pts.len(), 3);
        let left = 10.0 + PLOT_LEFT;
        assert!((pts[0].0 - left).abs() < 0.1 && (pts[2].0 - (left + PLOT_W)).abs() < 0.1);
        assert!(((pts[1].0 - pts[0].0) - (pts[2].0 - pts[1].0)).abs() < 0.2);
        assert!((pts[0].1 - (PLOT_TOP + PLOT_H)).abs() < 0.1 && (pts[2].1 - PLOT_TOP).abs() < 0.1);
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("circle"))
                .count(),
            3
        );
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick_label(3, Unit::Count), "1000");
        assert_eq!(tick_label(-2, Unit::Count), "0.01");
        assert_eq!(tick_label(-5, Unit::Count), "1e-5");
        assert_eq!(tick_label(4, Unit::Count), "10K");
        assert_eq!(tick_label(8, Unit::Count), "100M");
        assert_eq!(tick_label(9, Unit::Bytes), "1 GB");
        assert_eq!(tick_label(5, Unit::Bytes), "100 kB");
    }
}
