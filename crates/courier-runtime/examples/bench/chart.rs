//! SVG line charts of the benchmark curves: panels side by side, each with
//! its x axis on a log scale (guest counts, message sizes, batch sizes,
//! instances) and one line per series.

use plotters::coord::combinators::LogCoord;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One line of a panel.
pub(crate) struct Series {
    pub(crate) label: &'static str,
    pub(crate) color: RGBColor,
    pub(crate) points: Vec<(f64, f64)>,
}

/// One chart of a figure.
pub(crate) struct Panel {
    pub(crate) caption: String,
    pub(crate) x_desc: &'static str,
    pub(crate) y_desc: &'static str,
    /// How an x tick reads.
    pub(crate) x_label: fn(f64) -> String,
    /// How a y tick reads.
    pub(crate) y_label: fn(f64) -> String,
    pub(crate) series: Vec<Series>,
}

/// A dark green that reads on white.
pub(crate) const GREEN: RGBColor = RGBColor(0, 140, 0);

/// Draws `panels` side by side into the SVG file `path`.
pub(crate) fn draw(path: &str, panels: &[Panel]) -> anyhow::Result<()> {
    let width = 550 * panels.len() as u32;
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &Panel,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let points = || p.series.iter().flat_map(|s| &s.points);
    let (lo, hi) = points().fold((f64::MAX, 0.0f64), |(lo, hi), (x, _)| {
        (lo.min(*x), hi.max(*x))
    });
    let top = points().map(|(_, y)| *y).fold(0.0, f64::max) * 1.2;
    let mut c = ChartBuilder::on(area)
        .caption(&p.caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (lo * 0.7..hi * 1.5).log_scale(),
            0.0..top.max(f64::MIN_POSITIVE),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc(p.x_desc)
        .y_desc(p.y_desc)
        .x_label_formatter(&|x| (p.x_label)(*x))
        .y_label_formatter(&|y| (p.y_label)(*y))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for s in &p.series {
        line(&mut c, s)?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn line<DB: DrawingBackend>(
    c: &mut ChartContext<'_, DB, Cartesian2d<LogCoord<f64>, RangedCoordf64>>,
    s: &Series,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let color = s.color;
    c.draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label(s.label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    c.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled())))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// An x tick as a whole number.
pub(crate) fn whole(x: f64) -> String {
    format!("{}", x.round())
}

/// A y tick in thousands.
pub(crate) fn thousands(y: f64) -> String {
    format!("{:.0}", y / 1000.0)
}

/// A y tick with two decimals (ratios).
pub(crate) fn two_decimals(y: f64) -> String {
    format!("{y:.2}")
}

/// A byte count in decimal units (the log axis puts its ticks at powers
/// of ten): B, kB, MB.
pub(crate) fn bytes(x: f64) -> String {
    let x = x.round();
    if x >= 1e6 {
        format!("{} MB", x / 1e6)
    } else if x >= 1e3 {
        format!("{} kB", x / 1e3)
    } else {
        format!("{x} B")
    }
}
