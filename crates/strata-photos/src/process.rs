//! What a worker does to a photo: decode it (under the same pixel limits as the upload check,
//! enforced again by the decoder's own allocation limit), turn it upright by its EXIF
//! orientation, then encode it afresh — the original size and each thumbnail — so that no
//! metadata (EXIF, GPS position, camera serial, comments) survives: only pixels are carried
//! over. Thumbnails are resized with a SIMD convolution (Lanczos3) by `fast_image_resize`.
//!
//! Encoding is deterministic, so the same upload always gives the same bytes and therefore the
//! same content-addressed keys: a job processed twice stores nothing new.

use std::io::Cursor;
use std::time::{Duration, Instant};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ImageDecoder};

use crate::upload::{self, Format, MAX_PIXELS, MAX_SIDE};

/// The sizes served: the longest side of each thumbnail in pixels, and the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Size {
    S64,
    S128,
    S512,
    Original,
}

impl Size {
    /// Every size, smallest first.
    pub const ALL: [Size; 4] = [Size::S64, Size::S128, Size::S512, Size::Original];

    /// As in `?size=`: `64`, `128`, `512`, `original`.
    pub fn as_str(self) -> &'static str {
        match self {
            Size::S64 => "64",
            Size::S128 => "128",
            Size::S512 => "512",
            Size::Original => "original",
        }
    }

    /// The size named by a `?size=` value.
    pub fn parse(s: &str) -> Option<Self> {
        Size::ALL.into_iter().find(|z| z.as_str() == s)
    }

    /// The bounding box's side, or `None` for the original.
    pub fn side(self) -> Option<u32> {
        match self {
            Size::S64 => Some(64),
            Size::S128 => Some(128),
            Size::S512 => Some(512),
            Size::Original => None,
        }
    }
}

/// JPEG quality of every encoded JPEG.
pub const JPEG_QUALITY: u8 = 85;

/// A photo rendered at every size, in the format it was uploaded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub format: Format,
    /// Of the upright original.
    pub width: u32,
    pub height: u32,
    /// Every [`Size`], with its encoded bytes.
    pub variants: Vec<(Size, Vec<u8>)>,
}

/// Why a photo could not be rendered. Not worth retrying: the same bytes fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    #[error("the upload no longer passes the upload checks: {0}")]
    Upload(#[from] upload::UploadError),
    #[error("the {} image cannot be decoded: {detail}", .format.as_str())]
    Decode { format: Format, detail: String },
    #[error("resizing failed: {0}")]
    Resize(String),
    #[error("encoding the {} failed: {detail}", .size.as_str())]
    Encode { size: Size, detail: String },
}

/// Where rendering spent its time, phase by phase (for the thumbnail benchmark,
/// `strata photo-load thumbs`); each call of [`render_sizes`] adds to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Checks, decoding, orientation and the conversion to 8 bits a channel.
    pub decode: Duration,
    pub resize: Duration,
    pub encode: Duration,
}

/// Decodes the upload (checked again: the worker trusts nothing it did not check) and renders
/// every size. CPU-bound: run it on a blocking thread.
pub fn render(bytes: &[u8]) -> Result<Rendered, ProcessError> {
    render_sizes(bytes, &Size::ALL, &mut Timings::default())
}

/// [`render`] for `sizes` only (each once, smallest first in the result), adding the time of
/// each phase to `timings`. The thumbnails are resized largest first: a thumbnail with a larger
/// one already made is resized from it (128 and 64 from the 512, at least 4× smaller) rather
/// than from the full-size photo, which costs the same Lanczos3 work per source pixel whatever
/// the target. Dimensions are always fitted from the original's, so they do not depend on the
/// path.
pub fn render_sizes(
    bytes: &[u8],
    sizes: &[Size],
    timings: &mut Timings,
) -> Result<Rendered, ProcessError> {
    let started = Instant::now();
    let inspected = upload::inspect(bytes, None)?;
    let format = inspected.format;
    let decode_error = |e: image::ImageError| ProcessError::Decode {
        format,
        detail: e.to_string(),
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // RGBA at 8 bits, plus the decoder's working room.
    limits.max_alloc = Some(MAX_PIXELS * 4 + 64 * 1024 * 1024);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    // Eight bits a channel, alpha only where there is some to keep.
    let img = if img.color().has_alpha() && format != Format::Jpeg {
        DynamicImage::ImageRgba8(img.into_rgba8())
    } else {
        DynamicImage::ImageRgb8(img.into_rgb8())
    };
    timings.decode += started.elapsed();
    let (width, height) = (img.width(), img.height());
    let mut wanted: Vec<Size> = sizes.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut resizer = Resizer::new();
    // The thumbnails made so far, by side, largest first.
    let mut made: Vec<(u32, DynamicImage)> = Vec::new();
    let mut variants = Vec::with_capacity(wanted.len());
    for &size in wanted.iter().rev() {
        let pixels = match size.side() {
            Some(side) if width.max(height) > side => {
                let started = Instant::now();
                let (w, h) = fit(width, height, side);
                let source = made
                    .iter()
                    .rev()
                    .find(|(larger, _)| *larger >= side * 4)
                    .map_or(&img, |(_, larger)| larger);
                let mut dst = DynamicImage::new(w, h, img.color());
                resizer
                    .resize(
                        source,
                        &mut dst,
                        &ResizeOptions::new()
                            .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)),
                    )
                    .map_err(|e| ProcessError::Resize(e.to_string()))?;
                timings.resize += started.elapsed();
                made.push((side, dst));
                made.last().map(|(_, resized)| resized).unwrap_or(&img)
            }
            // Never enlarged: a small photo's thumbnail is the photo.
            _ => &img,
        };
        let started = Instant::now();
        variants.push((size, encode(pixels, format, size)?));
        timings.encode += started.elapsed();
    }
    variants.reverse();
    Ok(Rendered {
        format,
        width,
        height,
        variants,
    })
}

/// The size of `width × height` scaled to fit a `side × side` box, at least one pixel a side.
pub fn fit(width: u32, height: u32, side: u32) -> (u32, u32) {
    let longest = width.max(height).max(1);
    let scale = |v: u32| {
        ((u64::from(v) * u64::from(side) + u64::from(longest) / 2) / u64::from(longest)).max(1)
            as u32
    };
    (scale(width), scale(height))
}

fn encode(img: &DynamicImage, format: Format, size: Size) -> Result<Vec<u8>, ProcessError> {
    let mut out = Vec::new();
    let result = match format {
        Format::Jpeg => {
            img.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY))
        }
        Format::Png => img.write_with_encoder(PngEncoder::new(&mut out)),
        Format::WebP => img.write_with_encoder(WebPEncoder::new_lossless(&mut out)),
    };
    result.map_err(|e| ProcessError::Encode {
        size,
        detail: e.to_string(),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn every_size_fits_its_box_keeps_the_aspect_and_is_never_enlarged() {
        let r = render(&testdata::image(Format::Png, 1000, 500)).expect("render");
        let dims: Vec<(Size, u32, u32)> = r
            .variants
            .iter()
            .map(|(s, b)| {
                let d = testdata::decode(b);
                (*s, d.width(), d.height())
            })
            .collect();
        assert_eq!(
            dims,
            [
                (Size::S64, 64, 32),
                (Size::S128, 128, 64),
                (Size::S512, 512, 256),
                (Size::Original, 1000, 500)
            ]
        );
        let small = render(&testdata::image(Format::Jpeg, 100, 80)).expect("render");
        let d512 = testdata::decode(&small.variants[2].1);
        assert_eq!((d512.width(), d512.height()), (100, 80), "not enlarged");
    }

    #[test]
    fn each_format_comes_out_in_its_own_format() {
        for format in [Format::Jpeg, Format::Png, Format::WebP] {
            let r = render(&testdata::image(format, 300, 200)).expect("render");
            for (size, bytes) in &r.variants {
                assert_eq!(Format::sniff(bytes), Some(format), "{format:?} {size:?}");
            }
        }
    }

    #[test]
    fn metadata_does_not_survive_re_encoding() {
        let marker = b"GPS 48.8584 N 2.2945 E";
        let upload = testdata::jpeg_with_exif(200, 100, marker);
        assert!(
            upload.windows(marker.len()).any(|w| w == marker),
            "the test upload carries it"
        );
        let r = render(&upload).expect("render");
        for (size, bytes) in &r.variants {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "{size:?} carries the EXIF marker"
            );
            assert!(
                !bytes.windows(4).any(|w| w == b"Exif"),
                "{size:?} has an EXIF segment"
            );
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        let upload = testdata::image(Format::Jpeg, 700, 300);
        assert_eq!(
            render(&upload).expect("once"),
            render(&upload).expect("twice")
        );
    }

    #[test]
    fn a_file_that_passes_the_upload_checks_but_does_not_decode_fails() {
        let poison = testdata::poison_png(64, 64);
        upload::inspect(&poison, None).expect("it passes the cheap checks at the edge");
        assert!(
            matches!(render(&poison), Err(ProcessError::Decode { .. })),
            "{:?}",
            render(&poison)
        );
    }

    #[test]
    fn thumbnails_resized_from_the_512_match_those_resized_from_the_original() {
        let upload = testdata::image(Format::Png, 2000, 1500);
        let cascaded = render(&upload).expect("every size");
        for (i, size) in [Size::S64, Size::S128].into_iter().enumerate() {
            let direct = render_sizes(&upload, &[size], &mut Timings::default()).expect("one");
            let (a, b) = (
                testdata::decode(&cascaded.variants[i].1).into_rgb8(),
                testdata::decode(&direct.variants[0].1).into_rgb8(),
            );
            assert_eq!(a.dimensions(), b.dimensions(), "{size:?}");
            let diff: u64 = a
                .as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum();
            let mean = diff as f64 / a.as_raw().len() as f64;
            assert!(
                mean < 2.0,
                "{size:?}: a mean difference of {mean:.2} levels"
            );
        }
    }

    #[test]
    fn fitting_rounds_and_never_reaches_zero() {
        assert_eq!(fit(4000, 3000, 64), (64, 48));
        assert_eq!(fit(10_000, 1, 64), (64, 1));
        assert_eq!(
            fit(3, 3, 64),
            (64, 64),
            "fit alone scales; render never enlarges"
        );
    }
}
