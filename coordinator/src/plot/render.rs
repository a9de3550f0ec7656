//! Drawing one chart to both PNG and SVG: the backends, the embedded font and the byte labels.
//!
//! Text is rasterised by ab_glyph from DejaVu Sans embedded in the binary (the `dejavu` crate),
//! so a figure looks the same on every machine and needs no system font or fontconfig. PNG
//! pixels are drawn into a buffer and encoded with the `png` crate.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::PlotError;

/// A chart that can draw itself on any plotters backend.
pub trait Chart {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws on `root` (already filled white); errors are the backend's message.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Registers the embedded font as plotters' `sans-serif` once per process.
fn font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

fn draw_on<DB: DrawingBackend>(chart: &impl Chart, backend: DB) -> Result<(), String> {
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    chart.draw(&root)?;
    root.present().map_err(|e| e.to_string())
}

/// Writes `chart` as `<dir>/<stem>.png` and `<dir>/<stem>.svg`; returns both paths.
pub fn write_png_and_svg(
    chart: &impl Chart,
    dir: &Path,
    stem: &str,
) -> Result<[PathBuf; 2], PlotError> {
    font()?;
    let (w, h) = chart.size();
    let png_path = dir.join(format!("{stem}.png"));
    let svg_path = dir.join(format!("{stem}.svg"));
    let draw_err = |path: &Path| {
        let path = path.to_path_buf();
        move |message| PlotError::Draw { path, message }
    };

    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    draw_on(chart, BitMapBackend::with_buffer(&mut pixels, (w, h))).map_err(draw_err(&png_path))?;
    let file = File::create(&png_path).map_err(|e| PlotError::io("create", &png_path, e))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| {
            writer.write_image_data(&pixels)?;
            writer.finish()
        })
        .map_err(|e| PlotError::Png {
            path: png_path.clone(),
            message: e.to_string(),
        })?;

    let mut svg = String::new();
    draw_on(chart, SVGBackend::with_string(&mut svg, (w, h))).map_err(draw_err(&svg_path))?;
    std::fs::write(&svg_path, svg).map_err(|e| PlotError::io("write", &svg_path, e))?;
    Ok([png_path, svg_path])
}

/// A byte count for an axis or a label, three significant digits in powers of 1000, trailing
/// zeros dropped: `950 B`, `1 kB`, `12.3 kB`, `1.7 MB`.
pub fn fmt_bytes(bytes: f64) -> String {
    let (value, unit) = match bytes {
        b if b < 1e3 => return format!("{b:.0} B"),
        b if b < 1e6 => (b / 1e3, "kB"),
        b if b < 1e9 => (b / 1e6, "MB"),
        b => (b / 1e9, "GB"),
    };
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} {unit}")
}

/// The colour of the `i`-th series.
pub fn series_color(i: usize) -> RGBColor {
    // Colour-blind-safe (Okabe-Ito), black left for the bounds.
    const COLORS: [RGBColor; 7] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(240, 228, 66),
    ];
    COLORS[i % COLORS.len()]
}
