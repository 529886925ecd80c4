//! The stress table as printed: one row a level, columns aligned, in Markdown table syntax so
//! that it can be pasted into a document as it is.

use super::stats::LevelFigures;

const HEADERS: [&str; 10] = [
    "Concurrency",
    "Requests",
    "Success %",
    "Throughput req/s",
    "Avg ms",
    "p95 ms",
    "p99 ms",
    "TTFB avg ms",
    "TTFB p99 ms",
    "RSS MiB",
];

/// The table of `levels`, a header, a rule and one line a level, each line ending in `\n`.
pub fn render(levels: &[LevelFigures]) -> String {
    let rows: Vec<[String; 10]> = levels.iter().map(cells).collect();
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let joined: Vec<String> = cells.collect();
        format!("| {} |\n", joined.join(" | "))
    };
    let mut out = line(&mut HEADERS.iter().zip(&widths).map(|(h, w)| format!("{h:>w$}")));
    out += &line(&mut widths.iter().map(|w| format!("{}:", "-".repeat(w - 1))));
    for row in &rows {
        out += &line(&mut row.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")));
    }
    out
}

fn cells(f: &LevelFigures) -> [String; 10] {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    [
        f.concurrency.to_string(),
        f.requests.to_string(),
        format!("{:.1}", f.success_rate * 100.0),
        format!("{:.1}", f.throughput_rps),
        opt(f.avg_ms),
        opt(f.p95_ms),
        opt(f.p99_ms),
        opt(f.ttfb_avg_ms),
        opt(f.ttfb_p99_ms),
        opt(f.rss_mib),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::load::Outcome;
    use std::time::Duration;

    #[test]
    fn columns_line_up_and_missing_figures_are_dashes() {
        let ok = Outcome {
            latency: Duration::from_millis(1234),
            first_byte: Some(Duration::from_millis(300)),
            error: None,
        };
        let failed = Outcome {
            error: Some("HTTP 401".into()),
            ..ok.clone()
        };
        let levels = [
            LevelFigures::new(
                1,
                &[ok.clone(), ok],
                Duration::from_secs(2),
                Some(30 * 1024),
            ),
            LevelFigures::new(200, &[failed], Duration::from_secs(1), None),
        ];
        let table = render(&levels);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
        assert!(lines[0].starts_with("| Concurrency | Requests | Success % |"));
        let first: Vec<&str> = lines[2].split('|').map(str::trim).collect();
        assert_eq!(
            first[1..11],
            [
                "1", "2", "100.0", "1.0", "1234.0", "1234.0", "1234.0", "300.0", "300.0", "30.0"
            ]
        );
        let second: Vec<&str> = lines[3].split('|').map(str::trim).collect();
        assert_eq!(second[3], "0.0");
        assert_eq!(second[5..11], ["-"; 6]);
    }
}
