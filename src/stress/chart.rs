//! The latency chart: p50, p95 and p99 latency (ms) against concurrency, one line each, as an
//! SVG drawn with `plotters` (its SVG backend only: text is SVG `<text>`, no font files).
//!
//! Concurrency levels usually grow by uneven factors (1, 10, 50, 200): a linear axis crowds
//! the small ones and a logarithmic one fills with minor ticks, so each level gets an equal
//! slot on the x axis, labelled with its concurrency.

use plotters::prelude::*;

use super::stats::LevelFigures;

/// The chart of the levels that have latency figures, as an SVG document.
pub fn render_svg(levels: &[LevelFigures], title: &str) -> Result<String, String> {
    let mut svg = String::new();
    draw(&mut svg, levels, title).map_err(|e| format!("cannot draw the chart: {e}"))?;
    Ok(svg)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Which figure of a level a series shows.
type Pick = fn(&LevelFigures) -> Option<f64>;

fn draw(svg: &mut String, levels: &[LevelFigures], title: &str) -> DrawResult {
    let series: [(&str, RGBColor, Pick); 3] = [
        ("p50", RGBColor(0x1f, 0x77, 0xb4), |f| f.p50_ms),
        ("p95", RGBColor(0xff, 0x7f, 0x0e), |f| f.p95_ms),
        ("p99", RGBColor(0xd6, 0x27, 0x28), |f| f.p99_ms),
    ];
    // Level i is drawn at the centre of slot i.
    let points = |pick: Pick| -> Vec<(SegmentValue<usize>, f64)> {
        levels
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((SegmentValue::CenterOf(i), pick(f)?)))
            .collect()
    };
    let concurrency_at = |slot: &SegmentValue<usize>| match slot {
        SegmentValue::CenterOf(i) => levels
            .get(*i)
            .map_or(String::new(), |f| f.concurrency.to_string()),
        _ => String::new(),
    };
    let y_max = levels
        .iter()
        .filter_map(|f| f.p99_ms.or(f.p95_ms).or(f.p50_ms))
        .fold(0.0_f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };

    let root = SVGBackend::with_string(svg, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        // An integer range is discrete with both ends in: `0..n - 1` gives n slots.
        .build_cartesian_2d((0..levels.len().max(1) - 1).into_segmented(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("Concurrency")
        .y_desc("Latency (ms)")
        .x_labels(levels.len().max(1) + 1)
        .x_label_formatter(&concurrency_at)
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for (name, color, pick) in series {
        let line = points(pick);
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::load::Outcome;
    use std::time::Duration;

    #[test]
    fn the_svg_has_the_axes_and_the_three_series() {
        let level = |concurrency, ms| {
            let ok = Outcome {
                latency: Duration::from_millis(ms),
                first_byte: None,
                error: None,
            };
            LevelFigures::new(concurrency, &[ok], Duration::from_secs(1), None)
        };
        let svg = render_svg(&[level(1, 500), level(10, 520), level(200, 900)], "t").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in [
            "Concurrency",
            "Latency (ms)",
            "p50",
            "p95",
            "p99",
            "\n200\n",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.contains("<polyline"), "no lines drawn");
    }

    #[test]
    fn levels_without_latencies_still_give_a_chart() {
        let failed = Outcome {
            latency: Duration::from_millis(1),
            first_byte: None,
            error: Some("HTTP 401".into()),
        };
        let level = LevelFigures::new(4, &[failed], Duration::from_secs(1), None);
        assert!(render_svg(&[level], "t").unwrap().starts_with("<svg"));
    }
}
