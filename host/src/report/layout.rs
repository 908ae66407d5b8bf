//! Pages for the report: a display list of text lines, rules, boxes and SVG charts on A4, laid
//! out top to bottom with page breaks, then written by krilla in one pass.
//!
//! Text is set in DejaVu Sans (regular and bold, built into the binary; krilla embeds the glyphs
//! used, subsetted, with their Unicode mapping so the text can be searched and copied). Lines
//! are broken at spaces using the glyphs' advance widths — no kerning, no hyphenation: the
//! report is tables and short notes. Charts are SVG (drawn by [`super::charts`]) and stay vector
//! graphics in the PDF (krilla-svg); their text is set in the same font.

use krilla::Document;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
use krilla::metadata::Metadata;
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, GlyphId, KrillaGlyph};
use krilla_svg::{SurfaceExt as _, SvgSettings};
use std::sync::{Arc, OnceLock};

/// A4, in points.
pub const PAGE_W: f32 = 595.28;
pub const PAGE_H: f32 = 841.89;
pub const MARGIN: f32 = 46.0;
/// Width between the margins.
pub const WIDTH: f32 = PAGE_W - 2.0 * MARGIN;
/// Room kept at the bottom for the footer.
const FOOTER: f32 = 22.0;
const LINE: f32 = 1.3;

const REGULAR_TTF: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const BOLD_TTF: &[u8] = include_bytes!("fonts/DejaVuSans-Bold.ttf");
/// The family name the charts' SVG asks for.
pub const FONT_FAMILY: &str = "DejaVu Sans";

pub type Rgb = (u8, u8, u8);
pub const INK: Rgb = (31, 41, 55);
pub const MUTED: Rgb = (107, 114, 128);
pub const RULE: Rgb = (209, 213, 219);
pub const SHADE: Rgb = (243, 244, 246);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weight {
    Regular,
    Bold,
}

/// Widths of text in the two faces.
pub struct Metrics {
    regular: ttf_parser::Face<'static>,
    bold: ttf_parser::Face<'static>,
}

/// The faces, parsed once per process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        regular: ttf_parser::Face::parse(REGULAR_TTF, 0).expect("the built-in regular font parses"),
        bold: ttf_parser::Face::parse(BOLD_TTF, 0).expect("the built-in bold font parses"),
    })
}

/// A font database with the two faces only, for the charts' SVG text.
pub fn svg_fonts() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(REGULAR_TTF.to_vec());
        db.load_font_data(BOLD_TTF.to_vec());
        db.set_sans_serif_family(FONT_FAMILY);
        Arc::new(db)
    })
    .clone()
}

impl Metrics {
    fn face(&self, weight: Weight) -> &ttf_parser::Face<'static> {
        match weight {
            Weight::Regular => &self.regular,
            Weight::Bold => &self.bold,
        }
    }

    /// Each character's glyph and advance (in em); characters the font lacks get its
    /// `.notdef` glyph (a visible box), except the invisible ones (variation selectors, joiners:
    /// an alert's "⚠️" is "⚠" and one), which are left out.
    fn glyphs<'a>(
        &'a self,
        text: &'a str,
        weight: Weight,
    ) -> impl Iterator<Item = (usize, char, u16, f32)> + 'a {
        let face = self.face(weight);
        let em = face.units_per_em() as f32;
        text.char_indices().filter_map(move |(i, c)| {
            let id = match face.glyph_index(c) {
                Some(id) => id,
                None if matches!(c, '\u{200B}'..='\u{200F}' | '\u{FE00}'..='\u{FE0F}' | '\u{2060}') => {
                    return None;
                }
                None => ttf_parser::GlyphId(0),
            };
            Some((i, c, id.0, face.glyph_hor_advance(id).unwrap_or(0) as f32 / em))
        })
    }

    /// The width of `text` at `size` points.
    pub fn width(&self, text: &str, size: f32, weight: Weight) -> f32 {
        self.glyphs(text, weight).map(|g| g.3).sum::<f32>() * size
    }

    /// `text` broken into lines no wider than `max` (at spaces; a word wider than a line is cut
    /// where it overflows). A newline always breaks.
    pub fn wrap(&self, text: &str, size: f32, weight: Weight, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
                let candidate = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
                if self.width(&candidate, size, weight) <= max {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                // The word alone: cut it if it does not fit a line either.
                for c in word.chars() {
                    line.push(c);
                    if self.width(&line, size, weight) > max && line.chars().count() > 1 {
                        let last = line.pop().expect("two characters");
                        lines.push(std::mem::take(&mut line));
                        line.push(last);
                    }
                }
            }
            lines.push(line);
        }
        lines
    }
}

/// One thing drawn on a page (coordinates in points from the top left).
enum Item {
    Text { x: f32, y: f32, size: f32, weight: Weight, color: Rgb, text: String },
    Rect { x: f32, y: f32, w: f32, h: f32, fill: Rgb },
    Line { x1: f32, y1: f32, x2: f32, y2: f32, color: Rgb },
    Svg { x: f32, y: f32, w: f32, h: f32, tree: Box<usvg::Tree> },
}

/// A table column: its heading, width (points) and alignment.
pub struct Column {
    pub title: &'static str,
    pub width: f32,
    pub right: bool,
}

impl Column {
    pub fn left(title: &'static str, width: f32) -> Column {
        Column { title, width, right: false }
    }
    pub fn right(title: &'static str, width: f32) -> Column {
        Column { title, width, right: true }
    }
}

/// A table cell.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub text: String,
    pub color: Option<Rgb>,
    pub bold: bool,
}

impl Cell {
    pub fn new(text: impl Into<String>) -> Cell {
        Cell { text: text.into(), ..Cell::default() }
    }
    pub fn colored(text: impl Into<String>, color: Rgb) -> Cell {
        Cell { text: text.into(), color: Some(color), bold: true }
    }
}

/// The pages being laid out.
pub struct Layout {
    pages: Vec<Vec<Item>>,
    /// Top of the free space on the current page.
    y: f32,
    /// Left in every page's footer.
    footer: String,
}

const TABLE_SIZE: f32 = 8.0;
const CELL_PAD: f32 = 3.0;

impl Layout {
    pub fn new(footer: impl Into<String>) -> Layout {
        Layout { pages: vec![Vec::new()], y: MARGIN, footer: footer.into() }
    }

    fn page(&mut self) -> &mut Vec<Item> {
        self.pages.last_mut().expect("a page")
    }

    pub fn page_break(&mut self) {
        self.pages.push(Vec::new());
        self.y = MARGIN;
    }

    /// Starts a new page unless `height` still fits on this one.
    pub fn keep(&mut self, height: f32) {
        if self.y + height > PAGE_H - MARGIN - FOOTER && self.y > MARGIN {
            self.page_break();
        }
    }

    pub fn space(&mut self, height: f32) {
        self.y += height;
    }

    fn text_line(&mut self, x: f32, size: f32, weight: Weight, color: Rgb, text: String) {
        // Baseline: the top of the line plus the face's ascent.
        let ascent = metrics().face(weight).ascender() as f32 / metrics().face(weight).units_per_em() as f32;
        let y = self.y + size * ascent;
        self.page().push(Item::Text { x, y, size, weight, color, text });
    }

    /// Wrapped text over the full width.
    pub fn paragraph(&mut self, text: &str, size: f32, weight: Weight, color: Rgb) {
        for line in metrics().wrap(text, size, weight, WIDTH) {
            self.keep(size * LINE);
            self.text_line(MARGIN, size, weight, color, line);
            self.y += size * LINE;
        }
    }

    pub fn title(&mut self, text: &str, subtitle: &str) {
        self.paragraph(text, 19.0, Weight::Bold, INK);
        self.paragraph(subtitle, 10.0, Weight::Regular, MUTED);
        self.space(6.0);
    }

    /// A section heading, kept on the page with at least `with` points of what follows.
    pub fn heading(&mut self, text: &str, with: f32) {
        self.space(8.0);
        self.keep(13.0 * LINE + 4.0 + with);
        self.text_line(MARGIN, 13.0, Weight::Bold, INK, text.to_string());
        self.y += 13.0 * LINE;
        let y = self.y;
        self.page().push(Item::Line { x1: MARGIN, y1: y, x2: MARGIN + WIDTH, y2: y, color: RULE });
        self.y += 4.0;
    }

    /// A table; its heading row repeats on every page it spans. Cells wrap within their column.
    pub fn table(&mut self, columns: &[Column], rows: &[Vec<Cell>]) {
        let heading: Vec<Cell> = columns
            .iter()
            .map(|c| Cell { text: c.title.to_string(), color: Some(MUTED), bold: true })
            .collect();
        let first = rows.first().map_or(0.0, |r| self.row_height(columns, r));
        self.keep(self.row_height(columns, &heading) + first);
        self.table_row(columns, &heading, None);
        for (i, row) in rows.iter().enumerate() {
            let shade = (i % 2 == 1).then_some(SHADE);
            let height = self.row_height(columns, row);
            if self.y + height > PAGE_H - MARGIN - FOOTER {
                self.page_break();
                self.table_row(columns, &heading, None);
            }
            self.table_row(columns, row, shade);
        }
    }

    fn cell_lines(column: &Column, cell: &Cell) -> Vec<String> {
        let weight = if cell.bold { Weight::Bold } else { Weight::Regular };
        metrics().wrap(&cell.text, TABLE_SIZE, weight, column.width - 2.0 * CELL_PAD)
    }

    fn row_height(&self, columns: &[Column], row: &[Cell]) -> f32 {
        let lines =
            columns.iter().zip(row).map(|(c, cell)| Self::cell_lines(c, cell).len()).max().unwrap_or(1);
        lines as f32 * TABLE_SIZE * LINE + 2.0 * CELL_PAD
    }

    fn table_row(&mut self, columns: &[Column], row: &[Cell], shade: Option<Rgb>) {
        let height = self.row_height(columns, row);
        self.keep(height);
        let top = self.y;
        if let Some(fill) = shade {
            let w: f32 = columns.iter().map(|c| c.width).sum();
            self.page().push(Item::Rect { x: MARGIN, y: top, w, h: height, fill });
        }
        let mut x = MARGIN;
        for (column, cell) in columns.iter().zip(row) {
            let weight = if cell.bold { Weight::Bold } else { Weight::Regular };
            for (k, line) in Self::cell_lines(column, cell).into_iter().enumerate() {
                self.y = top + CELL_PAD + k as f32 * TABLE_SIZE * LINE;
                let lx = if column.right {
                    x + column.width - CELL_PAD - metrics().width(&line, TABLE_SIZE, weight)
                } else {
                    x + CELL_PAD
                };
                self.text_line(lx, TABLE_SIZE, weight, cell.color.unwrap_or(INK), line);
            }
            x += column.width;
        }
        self.y = top + height;
        if shade.is_none() {
            let w: f32 = columns.iter().map(|c| c.width).sum();
            let y = self.y;
            self.page().push(Item::Line { x1: MARGIN, y1: y, x2: MARGIN + w, y2: y, color: RULE });
        }
    }

    /// Label/value pairs in two columns of pairs.
    pub fn facts(&mut self, facts: &[(String, String)]) {
        let label_w = 118.0;
        let value_w = WIDTH / 2.0 - label_w;
        for pair in facts.chunks(2) {
            let top = self.y;
            let mut bottom = top;
            for (k, (label, value)) in pair.iter().enumerate() {
                let x = MARGIN + k as f32 * WIDTH / 2.0;
                self.y = top;
                self.keep(10.0 * LINE);
                let row_top = self.y;
                for line in metrics().wrap(label, 9.0, Weight::Regular, label_w - 6.0) {
                    self.text_line(x, 9.0, Weight::Regular, MUTED, line);
                    self.y += 9.0 * LINE;
                }
                bottom = bottom.max(self.y);
                self.y = row_top;
                for line in metrics().wrap(value, 9.0, Weight::Bold, value_w) {
                    self.text_line(x + label_w, 9.0, Weight::Bold, INK, line);
                    self.y += 9.0 * LINE;
                }
                bottom = bottom.max(self.y);
            }
            self.y = bottom + 2.0;
        }
    }

    /// An SVG drawing `w` × `h` points at the left margin (or `x` from it).
    pub fn svg(&mut self, svg: &str, x: f32, w: f32, h: f32) -> anyhow::Result<()> {
        let options = usvg::Options {
            fontdb: svg_fonts(),
            font_family: FONT_FAMILY.to_string(),
            ..usvg::Options::default()
        };
        let tree = usvg::Tree::from_str(svg, &options).map_err(|e| anyhow::anyhow!("a chart's SVG: {e}"))?;
        self.keep(h);
        let y = self.y;
        self.page().push(Item::Svg { x: MARGIN + x, y, w, h, tree: Box::new(tree) });
        Ok(())
    }

    /// Moves below a row of drawings `h` high placed with [`Layout::svg`] at the same top.
    pub fn below(&mut self, h: f32) {
        self.y += h;
    }

    /// Writes the PDF.
    pub fn finish(self, title: &str) -> anyhow::Result<Vec<u8>> {
        let regular = Font::new(REGULAR_TTF.into(), 0).ok_or_else(|| anyhow::anyhow!("regular font"))?;
        let bold = Font::new(BOLD_TTF.into(), 0).ok_or_else(|| anyhow::anyhow!("bold font"))?;
        let mut document = Document::new();
        document.set_metadata(
            Metadata::new().title(title.to_string()).creator(format!("edgepm {}", env!("CARGO_PKG_VERSION"))),
        );
        let pages = self.pages.len();
        for (n, items) in self.pages.into_iter().enumerate() {
            let settings = PageSettings::from_wh(PAGE_W, PAGE_H).expect("A4 is a size");
            let mut page = document.start_page_with(settings);
            let mut surface = page.surface();
            let footer = [
                Item::Line {
                    x1: MARGIN,
                    y1: PAGE_H - MARGIN,
                    x2: PAGE_W - MARGIN,
                    y2: PAGE_H - MARGIN,
                    color: RULE,
                },
                Item::Text {
                    x: MARGIN,
                    y: PAGE_H - MARGIN + 12.0,
                    size: 7.5,
                    weight: Weight::Regular,
                    color: MUTED,
                    text: self.footer.clone(),
                },
                {
                    let text = format!("page {} of {pages}", n + 1);
                    let x = PAGE_W - MARGIN - metrics().width(&text, 7.5, Weight::Regular);
                    Item::Text {
                        x,
                        y: PAGE_H - MARGIN + 12.0,
                        size: 7.5,
                        weight: Weight::Regular,
                        color: MUTED,
                        text,
                    }
                },
            ];
            for item in items.iter().chain(&footer) {
                match item {
                    Item::Text { x, y, size, weight, color, text } => {
                        let font = if *weight == Weight::Bold { bold.clone() } else { regular.clone() };
                        let glyphs: Vec<KrillaGlyph> = metrics()
                            .glyphs(text, *weight)
                            .map(|(i, c, id, advance)| {
                                KrillaGlyph::new(
                                    GlyphId::new(id as u32),
                                    advance,
                                    0.0,
                                    0.0,
                                    0.0,
                                    i..i + c.len_utf8(),
                                    None,
                                )
                            })
                            .collect();
                        surface.set_fill(Some(fill(*color)));
                        surface.set_stroke(None);
                        surface.draw_glyphs(Point::from_xy(*x, *y), &glyphs, font, text, *size, false);
                    }
                    Item::Rect { x, y, w, h, fill: color } => {
                        if let Some(rect) = Rect::from_xywh(*x, *y, *w, *h) {
                            let mut pb = PathBuilder::new();
                            pb.push_rect(rect);
                            if let Some(path) = pb.finish() {
                                surface.set_fill(Some(fill(*color)));
                                surface.set_stroke(None);
                                surface.draw_path(&path);
                            }
                        }
                    }
                    Item::Line { x1, y1, x2, y2, color } => {
                        let mut pb = PathBuilder::new();
                        pb.move_to(*x1, *y1);
                        pb.line_to(*x2, *y2);
                        if let Some(path) = pb.finish() {
                            surface.set_fill(None);
                            surface.set_stroke(Some(Stroke {
                                paint: rgb::Color::new(color.0, color.1, color.2).into(),
                                width: 0.6,
                                ..Stroke::default()
                            }));
                            surface.draw_path(&path);
                        }
                    }
                    Item::Svg { x, y, w, h, tree } => {
                        if let Some(size) = Size::from_wh(*w, *h) {
                            surface.push_transform(&Transform::from_translate(*x, *y));
                            surface.draw_svg(tree, size, SvgSettings::default());
                            surface.pop();
                        }
                    }
                }
            }
            surface.finish();
            page.finish();
        }
        document.finish().map_err(|e| anyhow::anyhow!("writing the PDF: {e:?}"))
    }
}

fn fill(color: Rgb) -> Fill {
    Fill {
        paint: rgb::Color::new(color.0, color.1, color.2).into(),
        opacity: NormalizedF32::ONE,
        ..Fill::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_break_at_spaces_within_the_width_and_long_words_are_cut() {
        let m = metrics();
        let text = "bearing wear on the drive end of the motor, inspect within a week";
        let lines = m.wrap(text, 10.0, Weight::Regular, 120.0);
        assert!(lines.len() > 1, "{lines:?}");
        assert!(lines.iter().all(|l| m.width(l, 10.0, Weight::Regular) <= 120.0), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        let long = "x".repeat(200);
        let cut = m.wrap(&long, 10.0, Weight::Regular, 50.0);
        assert!(cut.len() > 3 && cut.iter().all(|l| m.width(l, 10.0, Weight::Regular) <= 50.0));
        assert_eq!(cut.concat(), long);
        assert_eq!(m.wrap("a\nb", 10.0, Weight::Regular, 500.0), ["a", "b"]);
        assert!(m.width("MTR-001", 10.0, Weight::Bold) > m.width("MTR-001", 10.0, Weight::Regular));
    }
}
