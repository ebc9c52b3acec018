//! The comparison's SVG charts (plotters, SVG backend only: no fonts or
//! system libraries needed).

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use crate::BoxError;

/// One system at one client count: throughput and latency percentiles.
#[derive(Clone, Debug)]
pub struct Point {
    /// The system's name, as the tables print it.
    pub system: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per second.
    pub rate: f64,
    /// Median request latency.
    pub p50: Duration,
    /// 99th-percentile request latency.
    pub p99: Duration,
}

impl Point {
    /// A point from a run's request count, wall time and sorted latencies
    /// (nanoseconds).
    pub fn of_samples(
        system: &'static str,
        clients: usize,
        requests: u64,
        elapsed: Duration,
        sorted_ns: &[u64],
    ) -> Point {
        Point {
            system,
            clients,
            rate: requests as f64 / elapsed.as_secs_f64(),
            p50: crate::percentile(sorted_ns, 0.5),
            p99: crate::percentile(sorted_ns, 0.99),
        }
    }
}

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    COLORS[i % COLORS.len()]
}

/// The client counts in `points`, smallest first.
fn client_range(points: &[Point]) -> (f64, f64) {
    let clients = points.iter().map(|p| p.clients as f64);
    let low = clients.clone().fold(f64::INFINITY, f64::min);
    let high = clients.fold(0.0, f64::max);
    (low.max(1.0) / 1.5, high.max(1.0) * 1.5)
}

/// A chart with both axes logarithmic: clients across, `y_desc` up, one
/// legend entry per system; `series` draws system `i`'s lines in `colour`.
type LogChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

fn log_chart(
    path: &Path,
    caption: &str,
    y_desc: &str,
    (y_low, y_high): (f64, f64),
    points: &[Point],
    systems: &[&str],
    mut series: impl FnMut(&mut LogChart<'_, '_>, &str, RGBColor) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x_low, x_high) = client_range(points);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x_low..x_high).log_scale(), (y_low..y_high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, system) in systems.iter().enumerate() {
        let c = color(i);
        series(&mut chart, system, c)?;
        // An empty series, for the legend entry only.
        chart
            .draw_series(LineSeries::new(Vec::<(f64, f64)>::new(), c.stroke_width(2)))?
            .label(*system)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One system's points, as (clients, `value`).
fn line_of(points: &[Point], system: &str, value: impl Fn(&Point) -> f64) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|p| p.system == system)
        .map(|p| (p.clients as f64, value(p)))
        .collect()
}

/// Requests per second against clients, one line per system.
pub fn throughput(path: &Path, systems: &[&str], points: &[Point]) -> Result<(), BoxError> {
    let y_high = points.iter().map(|p| p.rate).fold(1.0, f64::max) * 2.0;
    let y_low = points
        .iter()
        .map(|p| p.rate)
        .fold(y_high, f64::min)
        .max(1.0)
        / 2.0;
    log_chart(
        path,
        "Fresh keys: requests/s against clients",
        "requests/s",
        (y_low, y_high),
        points,
        systems,
        |chart, system, c| {
            let line = line_of(points, system, |p| p.rate);
            chart.draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?;
            chart.draw_series(line.into_iter().map(|xy| Circle::new(xy, 3, c.filled())))?;
            Ok(())
        },
    )
}

/// p50 (solid) and p99 (dashed) latency against clients, one colour per
/// system.
pub fn latency(path: &Path, systems: &[&str], points: &[Point]) -> Result<(), BoxError> {
    let micros = |d: Duration| (d.as_secs_f64() * 1e6).max(1.0);
    let y_high = points.iter().map(|p| micros(p.p99)).fold(10.0, f64::max) * 2.0;
    let y_low = points.iter().map(|p| micros(p.p50)).fold(y_high, f64::min) / 2.0;
    log_chart(
        path,
        "Fresh keys: latency against clients (p50 solid, p99 dashed)",
        "latency (µs)",
        (y_low, y_high),
        points,
        systems,
        |chart, system, c| {
            let p50 = line_of(points, system, |p| micros(p.p50));
            let p99 = line_of(points, system, |p| micros(p.p99));
            chart.draw_series(LineSeries::new(p50, c.stroke_width(2)))?;
            chart.draw_series(DashedLineSeries::new(p99, 6, 4, c.stroke_width(1)))?;
            Ok(())
        },
    )
}
