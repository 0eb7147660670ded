//! Small SVG charts for the status pages, drawn on the server: no script, no CDN, so
//! the pages work offline and behind firewalls.

use std::fmt::Write;

/// One series of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Joined by a line (else drawn as dots).
    pub line: bool,
    /// A step line (holds its value until the next point).
    pub step: bool,
}

pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A short tick label.
fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.1e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A chart of `series` with axes, ticks and a legend; `x_label`/`y_label` name them.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (W, H);
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| finite(&s.points)).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><title>{t}</title><text x="{LEFT}" y="18" class="ct">{t}</text>"#,
        t = esc(title)
    );
    if all.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" class="empty">no data yet</text></svg>"#,
            w / 2.0 - 40.0,
            h / 2.0
        );
        return out;
    }
    let frame = Frame::around(&all);
    frame.axes(&mut out, x_label, y_label);
    for (i, s) in series.iter().enumerate() {
        frame.series(&mut out, s);
        // Legend.
        let lx = LEFT + 8.0 + 130.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            TOP - 2.0,
            s.color,
            lx + 14.0,
            TOP + 7.0,
            esc(s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// The chart's size and margins.
const W: f64 = 560.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

/// The points that can be drawn.
fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// The data's ranges on the chart's plotting area.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    /// Ranges that hold every point (with 5 % room above and below).
    fn around(all: &[(f64, f64)]) -> Frame {
        let bounds = |f: fn(&(f64, f64)) -> f64| {
            let lo = all.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = all.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
            if hi > lo {
                (lo, hi)
            } else {
                (lo - 1.0, hi + 1.0)
            }
        };
        let (y0, y1) = bounds(|p| p.1);
        let pad = (y1 - y0) * 0.05;
        Frame {
            x: bounds(|p| p.0),
            y: (y0 - pad, y1 + pad),
        }
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * (W - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        TOP + (1.0 - (y - self.y.0) / (self.y.1 - self.y.0)) * (H - TOP - BOTTOM)
    }

    /// The axes, five ticks on each, a grid line per y tick, and the labels.
    fn axes(&self, out: &mut String, x_label: &str, y_label: &str) {
        let (w, h) = (W, H);
        let _ = write!(
            out,
            r##"<g class="axis"><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/>"##,
            b = h - BOTTOM,
            r = w - RIGHT
        );
        for i in 0..=4 {
            let fx = self.x.0 + (self.x.1 - self.x.0) * i as f64 / 4.0;
            let fy = self.y.0 + (self.y.1 - self.y.0) * i as f64 / 4.0;
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><line class="grid" x1="{LEFT}" y1="{gy:.1}" x2="{r}" y2="{gy:.1}"/>"#,
                self.px(fx),
                h - BOTTOM + 16.0,
                label(fx),
                LEFT - 6.0,
                self.py(fy) + 4.0,
                label(fy),
                gy = self.py(fy),
                r = w - RIGHT
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text></g>"#,
            (LEFT + w - RIGHT) / 2.0,
            h - 6.0,
            esc(x_label),
            (TOP + h - BOTTOM) / 2.0,
            esc(y_label)
        );
    }

    /// One series: a (step) line, or dots with their values on hover.
    fn series(&self, out: &mut String, s: &Series) {
        let pts = finite(&s.points);
        if s.line && pts.len() > 1 {
            let mut d = String::new();
            for (k, (x, y)) in pts.iter().enumerate() {
                let (x, y) = (self.px(*x), self.py(*y));
                let _ = match (k, s.step) {
                    (0, _) => write!(d, "M{x:.1},{y:.1}"),
                    (_, true) => write!(d, " H{x:.1} V{y:.1}"),
                    (_, false) => write!(d, " L{x:.1},{y:.1}"),
                };
            }
            let _ = write!(
                out,
                r#"<path class="series" data-series="{}" d="{d}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                esc(s.name),
                s.color
            );
            return;
        }
        let _ = write!(
            out,
            r#"<g class="series" data-series="{}" fill="{}">"#,
            esc(s.name),
            s.color
        );
        for (x, y) in &pts {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3"><title>{}, {}</title></circle>"#,
                self.px(*x),
                self.py(*y),
                label(*x),
                label(*y)
            );
        }
        out.push_str("</g>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_draw_points_lines_and_escape_text() {
        let svg = chart(
            "loss <by> trial",
            "trial",
            "loss",
            &[
                Series {
                    name: "trials",
                    color: PALETTE[0],
                    points: vec![(1.0, 3.0), (2.0, 1.0), (3.0, f64::NAN)],
                    line: false,
                    step: false,
                },
                Series {
                    name: "best so far",
                    color: PALETTE[1],
                    points: vec![(1.0, 3.0), (2.0, 1.0)],
                    line: true,
                    step: true,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2, "NaN is skipped");
        assert!(svg.contains(" H") && svg.contains(" V"), "a step line");
        assert!(svg.contains("loss &lt;by&gt; trial"));
        assert!(chart("t", "x", "y", &[]).contains("no data yet"));
    }
}
