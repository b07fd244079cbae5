//! Synthetic photos for the thumbnail benchmark, made from a seed: the same seed gives the same
//! files. A flat or purely geometric image decodes and compresses unrealistically fast, so each
//! photo has what a camera's has: a smooth, lit background (a sky-like gradient and broad
//! waves of colour), objects with soft edges and their own shading, fine texture at several
//! scales, and sensor noise. Sizes run from 0.3 MP to 12 MP (4000 × 3000), landscape and
//! portrait; one photo in ten is a PNG and one in twenty a lossless WebP (kept to at most
//! 1.2 MP, as screenshots and avatars are), the rest JPEG at quality 90 as cameras and phones
//! write them.

use std::io::Cursor;
use std::path::Path;

use anyhow::Context as _;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};

/// Camera and phone sizes, smallest first (0.3 MP to 12 MP).
const SIZES: [(u32, u32); 12] = [
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 960),
    (1600, 1200),
    (1920, 1080),
    (2048, 1536),
    (2592, 1944),
    (3264, 2448),
    (3840, 2160),
    (4000, 3000),
    (4032, 3024),
];
/// The largest of [`SIZES`] a PNG or WebP photo is given.
const SMALL_SIZES: usize = 4;

/// The format a photo is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    WebP,
}

impl Kind {
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Jpeg => "jpg",
            Kind::Png => "png",
            Kind::WebP => "webp",
        }
    }
}

/// Photo `index` of the set made from `seed`: its format and size.
pub fn plan(seed: u64, index: u32) -> (Kind, u32, u32) {
    let mut rng =
        StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(index));
    let kind = match index % 20 {
        3 => Kind::WebP,
        7 | 17 => Kind::Png,
        _ => Kind::Jpeg,
    };
    let choices = if kind == Kind::Jpeg {
        SIZES.len()
    } else {
        SMALL_SIZES
    };
    let (w, h) = SIZES[rng.random_range(0..choices)];
    // About one photo in three is taken upright.
    if rng.random_bool(0.3) {
        (kind, h, w)
    } else {
        (kind, w, h)
    }
}

/// The pixels of photo `index` of the set made from `seed`.
pub fn pixels(seed: u64, index: u32, width: u32, height: u32) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(index) << 32) ^ 0x5EED);
    let (w, h) = (width as usize, height as usize);
    let mut buf = vec![0f32; w * h * 3];

    // Light: a vertical gradient (sky to ground) in two random colours.
    let top: [f32; 3] = std::array::from_fn(|_| rng.random_range(60.0..230.0));
    let bottom: [f32; 3] = std::array::from_fn(|_| rng.random_range(20.0..180.0));
    // Broad waves of colour: separable products of cosines, from tables per row and column.
    let waves: Vec<([f32; 3], Vec<f32>, Vec<f32>)> = (0..4)
        .map(|_| {
            let amp: [f32; 3] = std::array::from_fn(|_| rng.random_range(-30.0..30.0));
            let (fx, fy) = (rng.random_range(0.5..4.0), rng.random_range(0.5..4.0));
            let (px, py) = (rng.random_range(0.0..6.3), rng.random_range(0.0..6.3));
            let cx = (0..w)
                .map(|x| (std::f32::consts::TAU * fx * x as f32 / w as f32 + px).cos())
                .collect();
            let cy = (0..h)
                .map(|y| (std::f32::consts::TAU * fy * y as f32 / h as f32 + py).cos())
                .collect();
            (amp, cx, cy)
        })
        .collect();
    for y in 0..h {
        let t = y as f32 / h as f32;
        let base: [f32; 3] = std::array::from_fn(|c| top[c] * (1.0 - t) + bottom[c] * t);
        let row = &mut buf[y * w * 3..(y + 1) * w * 3];
        for x in 0..w {
            for c in 0..3 {
                let mut v = base[c];
                for (amp, cx, cy) in &waves {
                    v += amp[c] * cx[x] * cy[y];
                }
                row[x * 3 + c] = v;
            }
        }
    }

    // Objects: soft-edged ellipses and boxes, each shaded from one side.
    let objects = rng.random_range(6..20);
    for _ in 0..objects {
        let color: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
        let (cx, cy) = (
            rng.random_range(0.0..1.0) * w as f32,
            rng.random_range(0.0..1.0) * h as f32,
        );
        let rx = rng.random_range(0.03..0.3) * w as f32;
        let ry = rng.random_range(0.03..0.3) * h as f32;
        let round = rng.random_bool(0.6);
        let shade = rng.random_range(0.2..0.6);
        let (x0, x1) = ((cx - rx).max(0.0) as usize, ((cx + rx) as usize).min(w));
        let (y0, y1) = ((cy - ry).max(0.0) as usize, ((cy + ry) as usize).min(h));
        for y in y0..y1 {
            let dy = (y as f32 - cy) / ry;
            for x in x0..x1 {
                let dx = (x as f32 - cx) / rx;
                let d = if round {
                    (dx * dx + dy * dy).sqrt()
                } else {
                    dx.abs().max(dy.abs())
                };
                // Opaque inside, a soft edge over the last tenth.
                let alpha = ((1.0 - d) * 10.0).clamp(0.0, 1.0);
                if alpha == 0.0 {
                    continue;
                }
                let light = 1.0 - shade * (dx + dy + 2.0) / 4.0;
                let px = &mut buf[(y * w + x) * 3..(y * w + x) * 3 + 3];
                for c in 0..3 {
                    px[c] = px[c] * (1.0 - alpha) + color[c] * light * alpha;
                }
            }
        }
    }

    // Texture: value noise at three scales (bilinear between random lattice values), then
    // sensor noise per pixel.
    for (cell, amp) in [(48usize, 14.0f32), (12, 10.0), (3, 10.0)] {
        let (gw, gh) = (w / cell + 2, h / cell + 2);
        let lattice: Vec<f32> = (0..gw * gh).map(|_| rng.random_range(-amp..amp)).collect();
        for y in 0..h {
            let (gy, fy) = (y / cell, (y % cell) as f32 / cell as f32);
            for x in 0..w {
                let (gx, fx) = (x / cell, (x % cell) as f32 / cell as f32);
                let at = |i: usize, j: usize| lattice[j * gw + i];
                let top = at(gx, gy) * (1.0 - fx) + at(gx + 1, gy) * fx;
                let bottom = at(gx, gy + 1) * (1.0 - fx) + at(gx + 1, gy + 1) * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                let px = &mut buf[(y * w + x) * 3..(y * w + x) * 3 + 3];
                for p in px.iter_mut() {
                    *p += v;
                }
            }
        }
    }
    let mut state = rng.random::<u64>() | 1;
    let bytes: Vec<u8> = buf
        .iter()
        .map(|v| {
            // xorshift64: a sum of two bytes, centred, is a cheap bell-shaped noise (±12,
            // a standard deviation of about 5 levels: a phone sensor's in daylight).
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = ((state & 0xFF) + ((state >> 8) & 0xFF)) as f32 / 21.25 - 12.0;
            (v + noise).round().clamp(0.0, 255.0) as u8
        })
        .collect();
    RgbImage::from_raw(width, height, bytes).unwrap_or_else(|| RgbImage::new(width, height))
}

/// Photo `index` of the set made from `seed`, encoded: its file name and bytes.
pub fn photo(seed: u64, index: u32) -> anyhow::Result<(String, Vec<u8>)> {
    let (kind, width, height) = plan(seed, index);
    let img = pixels(seed, index, width, height);
    let mut out = Cursor::new(Vec::new());
    let (raw, color) = (img.as_raw(), ExtendedColorType::Rgb8);
    match kind {
        Kind::Jpeg => {
            JpegEncoder::new_with_quality(&mut out, 90).write_image(raw, width, height, color)
        }
        Kind::Png => PngEncoder::new(&mut out).write_image(raw, width, height, color),
        Kind::WebP => WebPEncoder::new_lossless(&mut out).write_image(raw, width, height, color),
    }
    .with_context(|| format!("encoding photo {index}"))?;
    Ok((
        format!("photo-{index:03}.{}", kind.extension()),
        out.into_inner(),
    ))
}

/// Writes photos `0..count` of the set made from `seed` into `dir`, calling `progress` after
/// each with its name and size; returns the total of bytes.
pub fn make(
    dir: &Path,
    seed: u64,
    count: u32,
    mut progress: impl FnMut(&str, usize),
) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut total = 0u64;
    for index in 0..count {
        let (name, bytes) = photo(seed, index)?;
        std::fs::write(dir.join(&name), &bytes)
            .with_context(|| format!("writing {}", dir.join(&name).display()))?;
        total += bytes.len() as u64;
        progress(&name, bytes.len());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_photo_and_another_seed_another() {
        let (name, once) = photo(7, 3).expect("photo");
        let (_, twice) = photo(7, 3).expect("photo");
        assert_eq!(once, twice);
        assert_ne!(photo(8, 3).expect("photo").1, once);
        assert!(name.starts_with("photo-003."));
    }

    #[test]
    fn the_set_mixes_formats_and_sizes_from_small_to_twelve_megapixels() {
        let plans: Vec<_> = (0..100).map(|i| plan(1, i)).collect();
        let count = |k: Kind| plans.iter().filter(|(kind, ..)| *kind == k).count();
        assert_eq!(
            (count(Kind::Jpeg), count(Kind::Png), count(Kind::WebP)),
            (85, 10, 5)
        );
        let mp = |(_, w, h): &(Kind, u32, u32)| u64::from(*w) * u64::from(*h);
        assert!(plans.iter().map(mp).min() < Some(600_000));
        assert!(plans.iter().map(mp).max() >= Some(12_000_000));
        assert!(plans.iter().any(|(_, w, h)| h > w), "some are upright");
    }

    #[test]
    fn a_photo_is_not_flat() {
        let img = pixels(1, 0, 320, 240);
        let lumas: Vec<f64> = img.pixels().map(|p| f64::from(p.0[1])).collect();
        let mean = lumas.iter().sum::<f64>() / lumas.len() as f64;
        let var = lumas.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / lumas.len() as f64;
        assert!(var.sqrt() > 10.0, "spread of {:.1}", var.sqrt());
        // Neighbours differ (noise and texture), but not wildly (it is not white noise).
        let step: f64 = img
            .rows()
            .flat_map(|row| {
                let row: Vec<f64> = row.map(|p| f64::from(p.0[1])).collect();
                row.windows(2)
                    .map(|w| (w[1] - w[0]).abs())
                    .collect::<Vec<_>>()
            })
            .sum::<f64>()
            / (319.0 * 240.0);
        assert!((0.5..20.0).contains(&step), "mean step of {step:.2}");
    }
}
