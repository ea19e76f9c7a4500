//! The per-round figures as an SVG the harness writes itself (no external service): one row per
//! scenario, a dot per round, a line from its slowest to its fastest round and a tick at the
//! median, so spread between rounds is seen at a glance.

use std::fmt::Write as _;

/// `rows`: (scenario, transfers/s of each round). `title`: the run's conditions.
pub fn svg(title: &str, rows: &[(String, Vec<f64>)]) -> String {
    const LEFT: f64 = 330.0;
    const WIDTH: f64 = 900.0;
    const ROW: f64 = 24.0;
    const TOP: f64 = 56.0;
    let plot = WIDTH - LEFT - 30.0;
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0_f64, f64::max);
    let scale_max = nice_ceiling(max.max(1.0));
    let x = |v: f64| LEFT + v / scale_max * plot;
    let height = TOP + ROW * rows.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#555">transfers/s per round (dots), slowest to fastest (line), median (tick)</text>"##
    );
    let bottom = TOP + ROW * rows.len() as f64;
    for i in 0..=5 {
        let v = scale_max * f64::from(i) / 5.0;
        let xv = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" y1="{TOP}" x2="{xv:.1}" y2="{bottom}" stroke="#ddd"/><text x="{xv:.1}" y="{:.1}" text-anchor="middle" fill="#555">{v:.0}</text>"##,
            bottom + 16.0
        );
    }
    for (i, (name, values)) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            escape(name)
        );
        if values.is_empty() {
            continue;
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let (lo, hi, med) = (
            sorted[0],
            sorted[sorted.len() - 1],
            sorted[sorted.len() / 2],
        );
        let color = if name.starts_with("ours") {
            "#1f77b4"
        } else if name.starts_with("database limit") {
            "#2ca02c"
        } else {
            "#7f7f7f"
        };
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/>"#,
            x(lo),
            x(hi),
            x(med),
            y - 7.0,
            x(med),
            y + 7.0
        );
        for v in values {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{y:.1}" r="3.5" fill="{color}" fill-opacity="0.6"/>"#,
                x(*v)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#333">{med:.0}</text>"##,
            x(hi) + 6.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_is_a_dot_and_the_axis_covers_the_fastest() {
        let out = svg(
            "t <2 cores>",
            &[
                ("ours a".into(), vec![100.0, 300.0, 200.0]),
                ("naive b".into(), vec![50.0]),
            ],
        );
        assert_eq!(out.matches("<circle").count(), 4);
        assert!(out.contains("t &lt;2 cores&gt;"));
        // the axis ends at 500 (the nice ceiling above 300), the median of ours is 200
        assert!(out.contains(">500</text>"), "{out}");
        assert!(out.contains(">200</text>"), "{out}");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(4_300.0), 5_000.0);
        assert_eq!(nice_ceiling(12_600.0), 20_000.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
    }
}
