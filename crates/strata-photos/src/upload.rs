//! An upload, checked before anything is stored or queued: its size, its type sniffed from the
//! bytes (the `Content-Type` is a claim, checked against them), that the file is complete, and
//! its pixel dimensions read from the header alone — so a decompression bomb (a 50 KB PNG
//! declaring 30,000 × 30,000 pixels, 3.6 GB once decoded) is refused without decoding a pixel.
//!
//! What is checked here is cheap: no pixel is decoded at the edge. A file that passes yet
//! fails to decode (corrupt inside) is the worker's to find; it fails its job, which ends in
//! the dead-letter list after its attempts.

use std::io::Cursor;

/// The largest upload accepted: 10 MiB.
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;
/// The most pixels on either side.
pub const MAX_SIDE: u32 = 16_384;
/// The most pixels in all (50 megapixels: 200 MB as RGBA once decoded).
pub const MAX_PIXELS: u64 = 50_000_000;

/// The image formats accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
}

impl Format {
    /// The media type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::WebP => "image/webp",
        }
    }

    /// The short name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::WebP => "webp",
        }
    }

    /// The format of a stored short name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jpeg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::WebP),
            _ => None,
        }
    }

    /// The format the leading bytes belong to, if any of ours.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else {
            None
        }
    }

    pub(crate) fn image_format(self) -> image::ImageFormat {
        match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::WebP => image::ImageFormat::WebP,
        }
    }
}

/// An upload that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

/// Why an upload was refused. Each maps to one HTTP status: 413, 415 or 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Over [`MAX_UPLOAD_BYTES`] (413).
    #[error("the photo is {size} bytes; the limit is {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The `Content-Type` names no accepted image type (415).
    #[error("Content-Type {declared:?} is not accepted; send image/jpeg, image/png or image/webp")]
    UnsupportedContentType { declared: String },
    /// The bytes are no JPEG, PNG or WebP, whatever the header says (415).
    #[error("the body is not a JPEG, PNG or WebP image")]
    NotAnImage,
    /// The `Content-Type` says one format and the bytes are another (415).
    #[error("Content-Type says {declared} but the bytes are {actual}")]
    ContentTypeMismatch {
        declared: &'static str,
        actual: &'static str,
    },
    /// The file ends before its format's end marker: cut off in transfer (422).
    #[error("the {} file is truncated: it ends before its end marker", .format.as_str())]
    Truncated { format: Format },
    /// The header cannot be read (422).
    #[error("the {} header cannot be read: {detail}", .format.as_str())]
    UnreadableHeader { format: Format, detail: String },
    /// Too many pixels: a decompression bomb, or simply too big to process (422).
    #[error(
        "the image is {width} × {height} pixels; the limit is {MAX_SIDE} pixels a side and {MAX_PIXELS} pixels in all"
    )]
    TooManyPixels { width: u32, height: u32 },
}

/// The media type of a `Content-Type` value, if it names one of ours; `Ok(None)` when the
/// client did not say (absent, or `application/octet-stream`).
fn declared_format(content_type: Option<&str>) -> Result<Option<Format>, UploadError> {
    let Some(raw) = content_type else {
        return Ok(None);
    };
    let media = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "image/jpeg" | "image/jpg" => Ok(Some(Format::Jpeg)),
        "image/png" => Ok(Some(Format::Png)),
        "image/webp" => Ok(Some(Format::WebP)),
        "application/octet-stream" => Ok(None),
        _ => Err(UploadError::UnsupportedContentType {
            declared: raw.chars().take(100).collect(),
        }),
    }
}

/// Whether the file runs to its format's end: JPEG's end-of-image marker (after any padding
/// of zero bytes), PNG's `IEND` chunk, WebP's RIFF length.
fn complete(format: Format, bytes: &[u8]) -> bool {
    match format {
        Format::Jpeg => {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            bytes[..end].ends_with(&[0xFF, 0xD9])
        }
        Format::Png => {
            bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82])
        }
        Format::WebP => {
            let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
            bytes.len() >= declared.saturating_add(8)
        }
    }
}

/// Checks an upload: size, type (sniffed, and against `content_type`), completeness, then
/// dimensions from the header.
pub fn inspect(bytes: &[u8], content_type: Option<&str>) -> Result<Inspected, UploadError> {
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(UploadError::TooLarge {
            size: bytes.len(),
            max: MAX_UPLOAD_BYTES,
        });
    }
    let declared = declared_format(content_type)?;
    let format = Format::sniff(bytes).ok_or(UploadError::NotAnImage)?;
    if let Some(declared) = declared
        && declared != format
    {
        return Err(UploadError::ContentTypeMismatch {
            declared: declared.mime(),
            actual: format.mime(),
        });
    }
    if !complete(format, bytes) {
        return Err(UploadError::Truncated { format });
    }
    let (width, height) =
        image::ImageReader::with_format(Cursor::new(bytes), format.image_format())
            .into_dimensions()
            .map_err(|e| UploadError::UnreadableHeader {
                format,
                detail: e.to_string(),
            })?;
    check_dimensions(width, height)?;
    Ok(Inspected {
        format,
        width,
        height,
    })
}

/// Refuses dimensions over the limits (and images without pixels).
pub fn check_dimensions(width: u32, height: u32) -> Result<(), UploadError> {
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE || pixels > MAX_PIXELS {
        return Err(UploadError::TooManyPixels { width, height });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn each_format_is_recognised_from_its_bytes() {
        for format in [Format::Jpeg, Format::Png, Format::WebP] {
            let bytes = testdata::image(format, 40, 30);
            let got = inspect(&bytes, None).expect("a valid image passes");
            assert_eq!(
                got,
                Inspected {
                    format,
                    width: 40,
                    height: 30
                }
            );
            inspect(&bytes, Some(format.mime())).expect("with its true Content-Type");
            inspect(&bytes, Some("application/octet-stream")).expect("with no claim");
        }
    }

    #[test]
    fn a_lying_content_type_is_refused() {
        let png = testdata::image(Format::Png, 10, 10);
        assert_eq!(
            inspect(&png, Some("image/jpeg")),
            Err(UploadError::ContentTypeMismatch {
                declared: "image/jpeg",
                actual: "image/png"
            })
        );
        assert!(matches!(
            inspect(&png, Some("text/html")),
            Err(UploadError::UnsupportedContentType { .. })
        ));
    }

    #[test]
    fn text_is_not_an_image_whatever_its_content_type() {
        assert_eq!(
            inspect(b"<html>hello</html>", Some("image/png")),
            Err(UploadError::NotAnImage)
        );
        assert_eq!(inspect(b"", None), Err(UploadError::NotAnImage));
        assert_eq!(inspect(b"RIFF", None), Err(UploadError::NotAnImage));
    }

    #[test]
    fn a_truncated_file_of_each_format_is_refused() {
        for format in [Format::Jpeg, Format::Png, Format::WebP] {
            let bytes = testdata::image(format, 64, 64);
            for cut in [bytes.len() / 2, bytes.len() - 1] {
                assert_eq!(
                    inspect(&bytes[..cut], None),
                    Err(UploadError::Truncated { format }),
                    "{format:?} cut at {cut} of {}",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let bomb = testdata::png_bomb(30_000, 30_000);
        assert!(bomb.len() < 200_000, "a small file: {} bytes", bomb.len());
        assert_eq!(
            inspect(&bomb, Some("image/png")),
            Err(UploadError::TooManyPixels {
                width: 30_000,
                height: 30_000
            })
        );
        assert!(check_dimensions(16_384, 3_000).is_ok());
        assert!(check_dimensions(16_385, 1).is_err());
        assert!(
            check_dimensions(10_000, 10_000).is_err(),
            "100 MP is over 50 MP"
        );
        assert!(check_dimensions(0, 10).is_err());
    }

    #[test]
    fn an_upload_over_the_limit_is_refused_before_anything_else() {
        let big = vec![0u8; MAX_UPLOAD_BYTES + 1];
        assert_eq!(
            inspect(&big, Some("text/plain")),
            Err(UploadError::TooLarge {
                size: MAX_UPLOAD_BYTES + 1,
                max: MAX_UPLOAD_BYTES
            })
        );
    }
}
