//! A ROC curve as a PNG drawn pixel by pixel: axes with ticks at 0, 0.5 and 1, the chance
//! diagonal, the curve, and "AUROC 0.xxxx" in a built-in 3x5 bitmap font.

use image::{Rgb, RgbImage};

const SIZE: u32 = 320;
const MARGIN: i32 = 36;
const SCALE: i32 = 2; // font pixels per glyph cell

const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GREY: Rgb<u8> = Rgb([170, 170, 170]);
const BLUE: Rgb<u8> = Rgb([20, 60, 200]);

/// 3x5 glyphs, one row per 3 bits (MSB = left), top row first.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        'A' => [2, 5, 7, 5, 5],
        'C' => [7, 4, 4, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'O' => [7, 5, 5, 5, 7],
        'P' => [6, 5, 6, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        ' ' => [0, 0, 0, 0, 0],
        _ => return None,
    })
}

fn put(img: &mut RgbImage, x: i32, y: i32, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Draws `text` with its top-left corner at (x, y); characters without a glyph are skipped.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, c: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let Some(rows) = glyph(ch) else { continue };
        let x0 = x + i as i32 * 4 * SCALE;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(img, x0 + col * SCALE + dx, y + r as i32 * SCALE + dy, c);
                        }
                    }
                }
            }
        }
    }
}

/// A line from (x0, y0) to (x1, y1), `thick` pixels wide; every `dash`-th run skipped when
/// `dash > 0`.
fn line(
    img: &mut RgbImage,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    c: Rgb<u8>,
    thick: i32,
    dash: i32,
) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for s in 0..=steps {
        if dash > 0 && (s / dash) % 2 == 1 {
            continue;
        }
        let x = x0 + (x1 - x0) * s / steps;
        let y = y0 + (y1 - y0) * s / steps;
        for d in 0..thick {
            put(img, x + d, y, c);
            put(img, x, y + d, c);
        }
    }
}

/// The plot of `curve` (FPR, TPR points from (0, 0)).
pub fn roc_png(curve: &[(f64, f64)], auroc: f64) -> RgbImage {
    let mut img = RgbImage::from_pixel(SIZE, SIZE, Rgb([255, 255, 255]));
    let side = SIZE as i32 - 2 * MARGIN + 8;
    let (left, bottom) = (MARGIN, SIZE as i32 - MARGIN);
    let to_px = |(fpr, tpr): (f64, f64)| {
        (
            left + (fpr * side as f64).round() as i32,
            bottom - (tpr * side as f64).round() as i32,
        )
    };
    line(&mut img, to_px((0.0, 0.0)), to_px((1.0, 1.0)), GREY, 1, 4);
    line(&mut img, (left, bottom), (left + side, bottom), BLACK, 1, 0);
    line(&mut img, (left, bottom), (left, bottom - side), BLACK, 1, 0);
    for (t, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
        let (x, y) = to_px((t, t));
        line(&mut img, (x, bottom), (x, bottom + 4), BLACK, 1, 0);
        line(&mut img, (left - 4, y), (left, y), BLACK, 1, 0);
        let w = label.len() as i32 * 4 * SCALE;
        draw_text(&mut img, x - w / 2, bottom + 8, label, BLACK);
        draw_text(&mut img, left - 6 - w, y - 5, label, BLACK);
    }
    draw_text(
        &mut img,
        left + side / 2 - 12,
        SIZE as i32 - 12,
        "FPR",
        BLACK,
    );
    draw_text(&mut img, 2, MARGIN - 26, "TPR", BLACK);
    for w in curve.windows(2) {
        line(&mut img, to_px(w[0]), to_px(w[1]), BLUE, 2, 0);
    }
    let text = if auroc.is_finite() {
        format!("AUROC {auroc:.4}")
    } else {
        "AUROC".into()
    };
    draw_text(&mut img, left + side / 2 - 10, bottom - 40, &text, BLACK);
    img
}
