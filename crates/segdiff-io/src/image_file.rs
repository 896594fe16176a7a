//! PNG files: decoding, grey conversion as Pillow does it, class-id maps, atomic encoding.
//!
//! The official code reads every image with Pillow and `convert("L")` (grey) or `convert("RGB")`;
//! segdiff reads every image through this module so that one file gives the same pixels in every
//! command. Grey from RGB uses Pillow's fixed-point ITU-R 601-2 luma
//! (`(19595·R + 38470·G + 7471·B + 0x8000) >> 16`), alpha is dropped, palettes are expanded first
//! (as Pillow's `P → L` does through the palette's RGB), 16-bit grey is clipped to 255 and 16-bit
//! RGB keeps its high byte, as Pillow reads and converts those PNGs. Readers that keep 16-bit
//! precision use [`grey16`] instead (the same luma weights at 16 bits).

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};

/// Reading or writing an image file failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageFileError {
    /// The file could not be read or written.
    #[error("{}: {action}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an image this build decodes (PNG).
    #[error("{}: not a readable image", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// The PNG decoder panicked on the file (caught by [`crate::catch_panic`]).
    #[error("{}: not a readable image: {detail}", path.display())]
    DecoderPanic { path: PathBuf, detail: String },
    /// The image could not be encoded.
    #[error("{}: encoding the PNG", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// A buffer does not hold `channels × height × width` values of 1 or 3 channels.
    #[error("{}: {values} values cannot be a {channels}×{height}×{width} image (1 or 3 channels)", path.display())]
    Shape {
        path: PathBuf,
        values: usize,
        channels: usize,
        height: usize,
        width: usize,
    },
    /// The image decodes but its pixel layout is not the one this reader needs.
    #[error("{}: {found:?} image; expected {expected}", path.display())]
    Layout {
        path: PathBuf,
        found: image::ColorType,
        expected: &'static str,
    },
}

/// Result of this module.
pub type ImageFileResult<T> = std::result::Result<T, ImageFileError>;

/// Decodes the image at `path` (format from its bytes; this build decodes PNG).
pub fn read_image(path: &Path) -> ImageFileResult<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|source| ImageFileError::Io {
        path: path.to_path_buf(),
        action: "reading",
        source,
    })?;
    decode_image(&bytes, path)
}

/// Decodes the image file `bytes` read from `path` (named in errors), behind a panic guard.
pub fn decode_image(bytes: &[u8], path: &Path) -> ImageFileResult<DynamicImage> {
    match crate::catch_panic(|| image::load_from_memory(bytes)) {
        Ok(r) => r.map_err(|source| ImageFileError::Decode {
            path: path.to_path_buf(),
            source,
        }),
        Err(panic) => Err(ImageFileError::DecoderPanic {
            path: path.to_path_buf(),
            detail: crate::panic_detail("the image decoder", &panic),
        }),
    }
}

/// Pillow's `convert("L")` of one 8-bit RGB pixel.
#[inline]
pub fn pil_luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// The 8-bit grey image Pillow's `convert("L")` makes of `img` (see the module docs).
pub fn grey8(img: &DynamicImage) -> GrayImage {
    let (w, h) = (img.width(), img.height());
    let from = |values: Vec<u8>| GrayImage::from_raw(w, h, values).expect("w*h grey samples");
    let rgb_to_l = |raw: &[u8], step: usize| -> Vec<u8> {
        raw.chunks_exact(step)
            .map(|p| pil_luma(p[0], p[1], p[2]))
            .collect()
    };
    match img {
        DynamicImage::ImageLuma8(g) => g.clone(),
        DynamicImage::ImageLumaA8(g) => from(g.as_raw().chunks_exact(2).map(|p| p[0]).collect()),
        DynamicImage::ImageLuma16(g) => {
            from(g.as_raw().iter().map(|&v| v.min(255) as u8).collect())
        }
        DynamicImage::ImageLumaA16(g) => from(
            g.as_raw()
                .chunks_exact(2)
                .map(|p| p[0].min(255) as u8)
                .collect(),
        ),
        DynamicImage::ImageRgb8(i) => from(rgb_to_l(i.as_raw(), 3)),
        DynamicImage::ImageRgba8(i) => from(rgb_to_l(i.as_raw(), 4)),
        DynamicImage::ImageRgb16(i) => {
            let hi: Vec<u8> = i.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            from(rgb_to_l(&hi, 3))
        }
        DynamicImage::ImageRgba16(i) => {
            let hi: Vec<u8> = i.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            from(rgb_to_l(&hi, 4))
        }
        other => from(rgb_to_l(other.to_rgb8().as_raw(), 3)),
    }
}

/// The 16-bit grey of a 16-bit image, or `None` for an 8-bit one: grey(+alpha) keeps its first
/// channel; RGB(A) gets `round(0.299 R + 0.587 G + 0.114 B)` (ITU-R 601-2, as Pillow's luma, at
/// 16 bits instead of Pillow's 8).
pub fn grey16(img: &DynamicImage) -> Option<Vec<u16>> {
    let luma = |raw: &[u16], step: usize| -> Vec<u16> {
        raw.chunks_exact(step)
            .map(|p| {
                (f64::from(p[0]) * 0.299 + f64::from(p[1]) * 0.587 + f64::from(p[2]) * 0.114)
                    .round() as u16
            })
            .collect()
    };
    match img {
        DynamicImage::ImageLuma16(g) => Some(g.as_raw().clone()),
        DynamicImage::ImageLumaA16(g) => Some(g.as_raw().chunks_exact(2).map(|p| p[0]).collect()),
        DynamicImage::ImageRgb16(i) => Some(luma(i.as_raw(), 3)),
        DynamicImage::ImageRgba16(i) => Some(luma(i.as_raw(), 4)),
        _ => None,
    }
}

/// A one-channel image of 8- or 16-bit samples (class-id maps, 16-bit grey scans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreySamples {
    pub width: usize,
    pub height: usize,
    /// 8 or 16.
    pub bit_depth: u8,
    /// Row-major samples, widened to u16.
    pub pixels: Vec<u16>,
}

/// Reads a one-channel 8- or 16-bit PNG without conversion (a class-id map must not be mixed
/// from colours); any other layout is a [`ImageFileError::Layout`] naming the file.
pub fn read_grey_samples(path: &Path) -> ImageFileResult<GreySamples> {
    let img = read_image(path)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (bit_depth, pixels) = match img {
        DynamicImage::ImageLuma8(g) => (8, g.into_raw().into_iter().map(u16::from).collect()),
        DynamicImage::ImageLuma16(g) => (16, g.into_raw()),
        other => {
            return Err(ImageFileError::Layout {
                path: path.to_path_buf(),
                found: other.color(),
                expected: "a one-channel (greyscale) 8- or 16-bit PNG",
            })
        }
    };
    Ok(GreySamples {
        width,
        height,
        bit_depth,
        pixels,
    })
}

/// Which channels [`read_chw01`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// One channel: [`grey16`] for 16-bit images, else [`grey8`].
    Grey,
    /// Three 8-bit channels, as Pillow's `convert("RGB")`.
    Rgb,
    /// As stored (8 or 16 bits): grey gives one channel, RGB three; alpha is an error.
    AsStored,
}

/// Reads an image as planar `C×H×W` values in [0, 1] (8-bit / 255, 16-bit / 65535); returns
/// `(channels, height, width, values)`.
pub fn read_chw01(
    path: &Path,
    channels: Channels,
) -> ImageFileResult<(usize, usize, usize, Vec<f32>)> {
    let img = read_image(path)?;
    let (h, w) = (img.height() as usize, img.width() as usize);
    fn unit<T: Copy + Into<f32>>(raw: &[T], max: f32) -> Vec<f32> {
        raw.iter().map(|&v| v.into() / max).collect()
    }
    let planar = |interleaved: Vec<f32>| -> Vec<f32> {
        let mut out = vec![0f32; interleaved.len()];
        for (i, p) in interleaved.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * h * w + i] = p[c];
            }
        }
        out
    };
    let grey = |img: &DynamicImage| match grey16(img) {
        Some(g) => unit(&g, 65535.0),
        None => unit(grey8(img).as_raw(), 255.0),
    };
    let rgb8 = |img: &DynamicImage| planar(unit(img.to_rgb8().as_raw(), 255.0));
    Ok(match (channels, &img) {
        (Channels::Grey, _) => (1, h, w, grey(&img)),
        (Channels::Rgb, _) => (3, h, w, rgb8(&img)),
        (Channels::AsStored, DynamicImage::ImageLuma8(_) | DynamicImage::ImageLuma16(_)) => {
            (1, h, w, grey(&img))
        }
        (Channels::AsStored, DynamicImage::ImageRgb8(_)) => (3, h, w, rgb8(&img)),
        (Channels::AsStored, DynamicImage::ImageRgb16(i)) => {
            (3, h, w, planar(unit(i.as_raw(), 65535.0)))
        }
        (Channels::AsStored, other) => {
            return Err(ImageFileError::Layout {
                path: path.to_path_buf(),
                found: other.color(),
                expected: "an 8- or 16-bit grey or RGB PNG without alpha",
            })
        }
    })
}

/// The PNG encoding of `img` (`path` names the file in errors).
pub fn encode_png(path: &Path, img: &DynamicImage) -> ImageFileResult<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|source| ImageFileError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes.into_inner())
}

/// Encodes `img` as PNG and writes it atomically (see [`crate::write_atomic`]).
pub fn write_png(path: &Path, img: &DynamicImage) -> ImageFileResult<()> {
    let bytes = encode_png(path, img)?;
    crate::write_bytes_atomic(path, &bytes).map_err(|source| ImageFileError::Io {
        path: path.to_path_buf(),
        action: "writing",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// RGB, RGBA and palette PNGs become the bytes Pillow's `convert("L")` gives (fixtures made
    /// by `tests/fixtures/oracle_pillow_grey.py`).
    #[test]
    fn grey_matches_pillow() {
        for name in ["rgb", "rgba", "palette"] {
            let img = read_image(&fixture(&format!("{name}.png"))).unwrap();
            let want = read_grey_samples(&fixture(&format!("{name}.pillow_L.png"))).unwrap();
            let got: Vec<u16> = grey8(&img).into_raw().into_iter().map(u16::from).collect();
            assert_eq!(got, want.pixels, "{name}");
            let (c, h, w, v) =
                read_chw01(&fixture(&format!("{name}.png")), Channels::Grey).unwrap();
            assert_eq!((c, h, w), (1, 7, 9));
            let back: Vec<u16> = v.iter().map(|x| (x * 255.0).round() as u16).collect();
            assert_eq!(back, want.pixels, "{name} through read_chw01");
        }
    }

    #[test]
    fn a_class_map_must_be_one_channel() {
        let err = read_grey_samples(&fixture("rgb.png")).unwrap_err();
        assert!(matches!(err, ImageFileError::Layout { .. }));
        assert!(err.to_string().contains("rgb.png"), "{err}");
    }

    #[test]
    fn written_pngs_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let img = GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y) as u8]));
        write_png(&path, &DynamicImage::ImageLuma8(img.clone())).unwrap();
        let back = read_grey_samples(&path).unwrap();
        assert_eq!((back.width, back.height, back.bit_depth), (5, 3, 8));
        assert!(back
            .pixels
            .iter()
            .zip(img.as_raw())
            .all(|(a, &b)| *a == u16::from(b)));
    }

    #[test]
    fn unreadable_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        std::fs::write(&path, b"not a png").unwrap();
        let err = read_image(&path).unwrap_err();
        assert!(matches!(err, ImageFileError::Decode { .. }));
        assert!(err.to_string().contains("bad.png"));
        let missing = read_image(&dir.path().join("missing.png")).unwrap_err();
        assert!(matches!(missing, ImageFileError::Io { .. }));
    }
}
