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
    let (w, h) = (560.0, 300.0);
    let (left, right, top, bottom) = (64.0, 16.0, 28.0, 44.0);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><title>{t}</title><text x="{left}" y="18" class="ct">{t}</text>"#,
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
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        let lo = all.iter().map(f).fold(f64::INFINITY, f64::min);
        let hi = all.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 1.0, hi + 1.0)
        }
    };
    let (x0, x1) = bounds(|p| p.0);
    let (y0, y1) = bounds(|p| p.1);
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * (h - top - bottom);
    // Axes and ticks.
    let _ = write!(
        out,
        r##"<g class="axis"><line x1="{left}" y1="{b}" x2="{r}" y2="{b}"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}"/>"##,
        b = h - bottom,
        r = w - right
    );
    for i in 0..=4 {
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><line class="grid" x1="{left}" y1="{gy:.1}" x2="{r}" y2="{gy:.1}"/>"#,
            px(fx),
            h - bottom + 16.0,
            label(fx),
            left - 6.0,
            py(fy) + 4.0,
            label(fy),
            gy = py(fy),
            r = w - right
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text></g>"#,
        (left + w - right) / 2.0,
        h - 6.0,
        esc(x_label),
        (top + h - bottom) / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if s.line && pts.len() > 1 {
            let mut d = String::new();
            for (k, (x, y)) in pts.iter().enumerate() {
                if k == 0 {
                    let _ = write!(d, "M{:.1},{:.1}", px(*x), py(*y));
                } else if s.step {
                    let _ = write!(d, " H{:.1} V{:.1}", px(*x), py(*y));
                } else {
                    let _ = write!(d, " L{:.1},{:.1}", px(*x), py(*y));
                }
            }
            let _ = write!(
                out,
                r#"<path class="series" data-series="{}" d="{d}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
                esc(s.name),
                s.color
            );
        } else {
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
                    px(*x),
                    py(*y),
                    label(*x),
                    label(*y)
                );
            }
            out.push_str("</g>");
        }
        // Legend.
        let lx = left + 8.0 + 130.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            top - 2.0,
            s.color,
            lx + 14.0,
            top + 7.0,
            esc(s.name)
        );
    }
    out.push_str("</svg>");
    out
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
