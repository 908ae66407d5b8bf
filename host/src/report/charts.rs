//! The report's charts, drawn by plotters as SVG: the probability curves with the alerts on
//! them, a map of each site's assets coloured by risk, and risk by age band. Their text asks for
//! `sans-serif`, which the report resolves to its own font ([`super::layout::svg_fonts`]).

use super::layout::Rgb;
use plotters::prelude::*;

/// The dashboard's risk colours (`dashboard.css`).
pub const LOW: Rgb = (22, 163, 74);
pub const ELEVATED: Rgb = (217, 119, 6);
pub const HIGH: Rgb = (220, 38, 38);
pub const UNKNOWN: Rgb = (156, 163, 175);
/// One colour per curve of the probability chart.
pub const CURVES: [Rgb; 5] = [(220, 38, 38), (37, 99, 235), (217, 119, 6), (124, 58, 237), (5, 150, 105)];

/// The colour of a probability's band, as on the dashboard: ≥ 80 % high, ≥ 50 % elevated.
pub fn risk_color(p: Option<f64>) -> Rgb {
    match p {
        None => UNKNOWN,
        Some(p) if p >= 0.8 => HIGH,
        Some(p) if p >= 0.5 => ELEVATED,
        Some(_) => LOW,
    }
}

fn color(c: Rgb) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

fn failed(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e}")
}

/// One curve of [`probability`]: a name, its points (days since the start, probability) and
/// its alerts (same units).
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub alerts: Vec<(f64, f64)>,
}

/// Failure probability over `days` days from the start (`day_label(d)` names day `d`), one
/// line per curve, its alerts as ringed dots, the high-risk `threshold` dashed.
pub fn probability(
    curves: &[Curve],
    days: f64,
    day_label: &dyn Fn(usize) -> String,
    threshold: f64,
    size: (u32, u32),
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(6)
            .x_label_area_size(20)
            .y_label_area_size(38)
            .build_cartesian_2d(0f64..days, 0f64..1.02f64)
            .map_err(failed)?;
        // Midnights are the labelled ticks; a label names the day that starts there.
        let day = |x: &f64| {
            let d = x.round();
            if (x - d).abs() < 1e-6 && d < days { day_label(d as usize) } else { String::new() }
        };
        chart
            .configure_mesh()
            .x_labels(days.ceil() as usize + 1)
            .x_label_formatter(&day)
            .y_labels(6)
            .y_label_formatter(&|p| format!("{:.0} %", p * 100.0))
            .label_style(("sans-serif", 10))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(229, 231, 235))
            .axis_style(RGBColor(156, 163, 175))
            .draw()
            .map_err(failed)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, threshold), (days, threshold)],
                6,
                4,
                color(HIGH).mix(0.6).stroke_width(1),
            ))
            .map_err(failed)?
            .label(format!("high risk {:.0} %", threshold * 100.0))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], color(HIGH).mix(0.6)));
        for (k, curve) in curves.iter().enumerate() {
            let c = color(CURVES[k % CURVES.len()]);
            // A curve of one point (a report over less than one of its buckets, such as the
            // demo's minute) is a dot: an SVG polyline needs two points, and the PDF would drop it.
            let drawn = match curve.points.as_slice() {
                [lone] => chart.draw_series(std::iter::once(Circle::new(*lone, 3, c.filled()))),
                points => chart.draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2))),
            };
            drawn
                .map_err(failed)?
                .label(curve.name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c.stroke_width(2)));
            chart
                .draw_series(curve.alerts.iter().map(|&(x, y)| {
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 4, c.filled())
                        + Circle::new((0, 0), 4, BLACK.stroke_width(1))
                }))
                .map_err(failed)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(209, 213, 219))
            .label_font(("sans-serif", 9))
            .draw()
            .map_err(failed)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// One asset on a site map.
pub struct Marker {
    pub label: String,
    pub lat: f64,
    pub lon: f64,
    pub probability: Option<f64>,
}

/// A site's assets by latitude and longitude, coloured by risk, named.
pub fn site_map(site: &str, markers: &[Marker], size: (u32, u32)) -> anyhow::Result<String> {
    let span = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let pad = ((hi - lo) * 0.15).max(0.0003);
        (lo - pad, hi + pad)
    };
    // Room on the right of the easternmost marker for its name.
    let (lon0, lon1) = span(&mut markers.iter().map(|m| m.lon));
    let lons = lon0..lon1 + (lon1 - lon0) * 0.6;
    let (lat0, lat1) = span(&mut markers.iter().map(|m| m.lat));
    let lats = lat0..lat1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(4)
            .caption(site, ("sans-serif", 10))
            .build_cartesian_2d(lons, lats)
            .map_err(failed)?;
        chart.configure_mesh().disable_mesh().disable_axes().draw().map_err(failed)?;
        chart
            .plotting_area()
            .draw(&Rectangle::new(
                [(chart.x_range().start, chart.y_range().start), (chart.x_range().end, chart.y_range().end)],
                RGBColor(209, 213, 219).stroke_width(1),
            ))
            .map_err(failed)?;
        chart
            .draw_series(markers.iter().map(|m| {
                EmptyElement::at((m.lon, m.lat))
                    + Circle::new((0, 0), 6, color(risk_color(m.probability)).filled())
                    + Text::new(m.label.clone(), (8, -5), ("sans-serif", 8))
            }))
            .map_err(failed)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// One age band: its name, how many assets, their mean probability (if any was scored).
pub struct Band {
    pub label: String,
    pub assets: usize,
    pub mean: Option<f64>,
}

/// Mean failure probability per age band, as horizontal bars coloured by risk, each named
/// above its bar.
pub fn age_bands(bands: &[Band], size: (u32, u32)) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let n = bands.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(6)
            .margin_right(18)
            .x_label_area_size(18)
            .build_cartesian_2d(0f64..1f64, 0f64..n)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(6)
            .x_label_formatter(&|p| format!("{:.0} %", p * 100.0))
            .label_style(("sans-serif", 9))
            .light_line_style(RGBColor(243, 244, 246))
            .bold_line_style(RGBColor(229, 231, 235))
            .axis_style(RGBColor(156, 163, 175))
            .draw()
            .map_err(failed)?;
        let (width, _) = chart.plotting_area().dim_in_pixel();
        chart
            .draw_series(bands.iter().enumerate().map(|(i, b)| {
                let y = n - 1.0 - i as f64;
                let mean = b.mean.unwrap_or(0.0).clamp(0.0, 1.0);
                let value = match b.mean {
                    Some(m) => format!("{} · {} assets, mean {:.1} %", b.label, b.assets, m * 100.0),
                    None => format!("{} · {} assets, none scored", b.label, b.assets),
                };
                EmptyElement::at((0.0, y + 0.92))
                    + Text::new(value, (2, 0), ("sans-serif", 9))
                    + Rectangle::new(
                        [(0, 13), ((width as f64 * mean) as i32, 13 + 9)],
                        color(risk_color(b.mean)).filled(),
                    )
            }))
            .map_err(failed)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polylines(svg: &str) -> Vec<usize> {
        svg.split("<polyline")
            .skip(1)
            .map(|tag| {
                let points =
                    tag.split("points=\"").nth(1).expect("points").split('"').next().expect("points");
                points.split_whitespace().count()
            })
            .collect()
    }

    #[test]
    fn a_curve_of_one_point_is_drawn_as_a_dot_not_a_one_point_line() {
        let curve = |name: &str, points: Vec<(f64, f64)>| Curve { name: name.into(), points, alerts: vec![] };
        let label = |d: usize| format!("day {d}");
        let svg =
            probability(&[curve("MTR-001", vec![(0.5, 0.9)])], 7.0, &label, 0.8, (400, 200)).expect("svg");
        assert!(polylines(&svg).iter().all(|&n| n >= 2), "{:?}", polylines(&svg));
        let dots = svg.matches("<circle").count();
        assert_eq!(dots, 1, "the lone point is a dot: {svg}");
        let svg = probability(
            &[curve("MTR-001", vec![(0.5, 0.9), (1.0, 0.2), (2.0, 0.4)])],
            7.0,
            &label,
            0.8,
            (400, 200),
        )
        .expect("svg");
        assert!(polylines(&svg).contains(&3), "the curve is a line: {:?}", polylines(&svg));
    }
}
