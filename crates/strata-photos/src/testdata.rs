//! Images made on the spot for tests (this crate's, the web tier's): valid ones of each format,
//! one carrying EXIF metadata, and a decompression bomb. Nothing here is used in serving.

use std::io::Cursor;

use image::RgbImage;

use crate::upload::Format;

/// A `width × height` gradient in `format`.
pub fn image(format: Format, width: u32, height: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format.image_format())
        .unwrap_or_else(|e| panic!("encoding a test image: {e}"));
    out.into_inner()
}

/// A `width × height` image in `format` whose pixels depend on `seed`: images of different
/// seeds (below 2^24) differ in every pixel, and so do their resized copies — for loads that
/// need many distinct photos.
pub fn image_seeded(format: Format, width: u32, height: u32, seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            ((x * 255 / width.max(1) + seed) % 256) as u8,
            ((y * 255 / height.max(1) + seed / 256) % 256) as u8,
            ((x + y + seed / 65_536) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format.image_format())
        .unwrap_or_else(|e| panic!("encoding a test image: {e}"));
    out.into_inner()
}

/// A JPEG with an EXIF segment (APP1) carrying `marker` — standing in for a GPS position.
pub fn jpeg_with_exif(width: u32, height: u32, marker: &[u8]) -> Vec<u8> {
    let plain = image(Format::Jpeg, width, height);
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(marker);
    let len = u16::try_from(payload.len() + 2).unwrap_or(u16::MAX);
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

/// A PNG that is all there — signature, header, data, end — yet whose header declares
/// `width × height` pixels over a tiny data stream: a few hundred bytes that would decode to
/// gigabytes.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit greyscale
    chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream of one empty stored block.
    chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01,
        ],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A PNG whose header is fine and whose image data is not a zlib stream: it passes the checks
/// at the edge and fails to decode — a poison job.
pub fn poison_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        b"these bytes are no deflate stream at all",
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Decodes an image (to check what the pipeline produced).
pub fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).unwrap_or_else(|e| panic!("decoding: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_images_differ_by_seed_and_keep_their_size() {
        let one = image_seeded(Format::Jpeg, 64, 48, 1);
        assert_eq!(
            one,
            image_seeded(Format::Jpeg, 64, 48, 1),
            "the same seed, the same image"
        );
        for other in [2, 257, 65_537] {
            assert_ne!(
                one,
                image_seeded(Format::Jpeg, 64, 48, other),
                "seed {other}"
            );
        }
        let decoded = decode(&one);
        assert_eq!((decoded.width(), decoded.height()), (64, 48));
    }
}
