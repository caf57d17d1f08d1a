//! One SVG per scenario: admitted requests per second over time, one line per
//! strategy, against the request limit (and the share a background consumer leaves).

use std::path::Path;

use plotters::prelude::*;

/// One strategy's line: its name and `(seconds since the run's start, requests/s)`.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, in time order.
    pub points: Vec<(f64, f64)>,
}

/// Colours of the lines, in strategy order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `series` into an SVG file at `path`, with a dashed line at `limit` requests
/// per second and, when given, a dotted one at `available` (the limit minus what
/// another consumer spends).
pub fn draw(
    path: &Path,
    title: &str,
    series: &[Series],
    limit: f64,
    available: Option<f64>,
) -> Result<(), String> {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil();
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(limit, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start of the run")
        .y_desc("admitted requests per second")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|x| e(&x))?;
    let dashed = |y: f64, label: String, colour: RGBColor, step: f64| {
        let mut points = Vec::new();
        let mut x = 0.0;
        while x < x_max {
            points.push(vec![(x, y), ((x + step).min(x_max), y)]);
            x += step * 2.0;
        }
        (points, label, colour)
    };
    let mut lines = vec![dashed(
        limit,
        format!("limit ({limit:.0}/s)"),
        RGBColor(0, 0, 0),
        x_max / 80.0,
    )];
    if let Some(a) = available.filter(|a| (a - limit).abs() > 1e-9) {
        lines.push(dashed(
            a,
            format!("left by the background consumer ({a:.0}/s)"),
            RGBColor(120, 120, 120),
            x_max / 200.0,
        ));
    }
    for (segments, label, colour) in lines {
        let mut first = true;
        for seg in segments {
            let drawn = chart
                .draw_series(LineSeries::new(seg, colour.stroke_width(1)))
                .map_err(|x| e(&x))?;
            if first {
                drawn.label(label.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(1))
                });
                first = false;
            }
        }
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_an_svg_with_every_label() {
        let dir = std::env::temp_dir().join(format!("mistral-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let series = vec![Series {
            label: "ours-blocking".into(),
            points: vec![(0.0, 4.0), (1.0, 5.0), (2.0, 5.0)],
        }];
        draw(&path, "S1", &series, 5.0, Some(3.5)).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("ours-blocking") && svg.contains("limit (5/s)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
