//! The lab's plots: one metric against connections (a log scale: 1 to 100,000), or against the
//! seconds of a window, one line per server, drawn by plotters to SVG (for the page) and PNG
//! (for anywhere else).

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One line of a plot: a server's name and its (connections, value) points.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// What a plot shows.
pub(crate) struct Plot<'a> {
    pub(crate) title: &'a str,
    pub(crate) y_label: &'a str,
    /// A log scale for values that span orders of magnitude (latency).
    pub(crate) log_y: bool,
    /// The x axis: connections (a log scale), or seconds (`None`: linear, from 0).
    pub(crate) x_label: Option<&'a str>,
    pub(crate) series: &'a [Series],
}

const SIZE: (u32, u32) = (900, 520);

/// Colours that stay apart on white (Tableau 10, then black and teal): one per model and the
/// Python reference, none repeated.
const TABLEAU: [(u8, u8, u8); 12] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 0),
    (0, 110, 110),
];

/// Draws `plot` as SVG, returned as text. Plots need a TrueType font for their text: the
/// first of the usual system fonts (Debian's `fonts-dejavu-core`), or `SWITCHBOARD_FONT`.
pub(crate) fn svg(plot: &Plot<'_>) -> Result<String, String> {
    font()?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        chart(plot, &root)?;
        root.present().map_err(|e| format!("an SVG plot: {e}"))?;
    }
    Ok(text)
}

/// Draws `plot` into `png`.
pub(crate) fn png(plot: &Plot<'_>, png: &Path) -> Result<(), String> {
    font()?;
    let root = BitMapBackend::new(png, SIZE).into_drawing_area();
    chart(plot, &root)?;
    root.present()
        .map_err(|e| format!("{}: {e}", png.display()))
}

/// Registers a system font once for every plot.
fn font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let wanted = std::env::var("SWITCHBOARD_FONT").ok();
        let candidates = wanted.iter().map(String::as_str).chain([
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        ]);
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // Fonts live for the whole process in plotters' registry.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("no TrueType font for the plots' text (install Debian's fonts-dejavu-core, or set SWITCHBOARD_FONT to a .ttf file)".to_string())
    })
    .clone()
}

fn chart<DB: DrawingBackend>(plot: &Plot<'_>, root: &DrawingArea<DB, Shift>) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing {}: {e}", plot.title);
    root.fill(&WHITE).map_err(err)?;
    let points = plot.series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if x_min > x_max {
        (x_min, x_max, y_min, y_max) = (1.0, 10.0, 0.0, 1.0);
    }
    let mut chart = ChartBuilder::on(root);
    chart
        .caption(plot.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80);
    let low = if y_min >= 0.0 { 0.0 } else { y_min * 1.1 };
    let y_linear = low..(y_max.max(low + 1e-9) * 1.1);
    if plot.x_label.is_some() {
        // Seconds: a linear axis from the window's start, one past its last second.
        let mut c = chart
            .build_cartesian_2d(0f64..(x_max + 1.0), y_linear)
            .map_err(err)?;
        return lines(&mut c, plot, |y| y).map_err(err);
    }
    // Room around the points; a log axis needs a span above zero.
    let x_range = (x_min / 1.5).max(0.5)..(x_max * 1.5);
    if plot.log_y {
        // A log axis cannot show zero: values are held just above it.
        let y_range = (y_min.max(1e-3) / 1.5)..(y_max.max(1e-3) * 1.5);
        let mut c = chart
            .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())
            .map_err(err)?;
        lines(&mut c, plot, |y| y.max(1e-3)).map_err(err)
    } else {
        let mut c = chart
            .build_cartesian_2d(x_range.log_scale(), y_linear)
            .map_err(err)?;
        lines(&mut c, plot, |y| y).map_err(err)
    }
}

/// The mesh, one line with its points per series, and the legend, on either y axis.
fn lines<'a, DB, X, Y>(
    c: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    plot: &Plot<'_>,
    shown: fn(f64) -> f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut mesh = c.configure_mesh();
    mesh.x_desc(plot.x_label.unwrap_or("connections"))
        .y_desc(plot.y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| figure(*y));
    if plot.x_label.is_some() {
        // Seconds: a label on each whole one (up to 20), never a fraction rounded twice.
        let last = plot
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(0.0, f64::max);
        mesh.x_labels((last as usize + 2).min(20));
    }
    mesh.draw()?;
    for (i, s) in plot.series.iter().enumerate() {
        let (r, g, b) = TABLEAU[i % TABLEAU.len()];
        let color = RGBColor(r, g, b).to_rgba();
        let points = s.points.iter().map(move |&(x, y)| (x, shown(y)));
        c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        c.draw_series(points.map(|p| Circle::new(p, 3, color.filled())))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()
}

/// An axis figure: 1,200 as 1.2k, 3,400,000 as 3.4M.
fn figure(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_figures_are_short() {
        assert_eq!(figure(1200.0), "1.2k");
        assert_eq!(figure(3_400_000.0), "3.4M");
        assert_eq!(figure(42.0), "42");
        assert_eq!(figure(3.456), "3.46");
        assert_eq!(figure(0.0), "0");
    }
}
