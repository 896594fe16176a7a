//! Pixel data of one DICOM object: the supported transfer syntaxes, decoding to raw integers with
//! pydicom 3's bit handling, and the per-frame modality rescale.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder, PixelRepresentation, PlanarConfiguration};
use segdiff_io::{catch_panic, panic_detail};

use super::attributes::{
    attr_int, attr_str, clean_uid, frame_count, frame_geometries, open_dicom, uint_attr, DicomFile,
};
use crate::error::{DataError, Result};

const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const TS_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const TS_DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const TS_RLE: &str = "1.2.840.10008.1.2.5";
const TS_JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const TS_JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
const TS_JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
const TS_JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
const TS_JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
const TS_JPEG_LS_NEAR: &str = "1.2.840.10008.1.2.4.81";
const TS_J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
const TS_J2K: &str = "1.2.840.10008.1.2.4.91";

/// How DICOM pixel data is turned into one grey value per pixel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DicomReadOptions {
    /// Colour images (RGB, YBR_FULL, YBR_FULL_422; 3 samples per pixel) become grey instead of
    /// being refused: RGB as Pillow's `convert("L")` weighs it (ITU-R 601-2 luma, also for 16-bit
    /// samples), YBR as its Y (luma) sample. Palette colour is always refused.
    pub to_grey: bool,
}

/// Pixel values of one DICOM object before any rescale, as pydicom's `pixel_array` gives them.
#[derive(Clone, Debug)]
pub struct DicomPixels {
    /// Rows per frame.
    pub rows: usize,
    /// Columns per frame.
    pub cols: usize,
    /// Number of frames.
    pub frames: usize,
    /// Frame-major, row-major raw values.
    pub raw: Vec<i32>,
    /// (slope, intercept) of each frame.
    pub rescale: Vec<(f64, f64)>,
    /// PhotometricInterpretation was MONOCHROME1.
    pub monochrome1: bool,
    /// Smallest and largest raw value BitsStored/PixelRepresentation allow.
    pub raw_range: (i64, i64),
}

impl DicomPixels {
    /// Frame `f` after the modality rescale, computed in f32 (`f32(raw)·f32(slope) + f32(intercept)`).
    pub fn rescaled_frame(&self, f: usize) -> Vec<f32> {
        let n = self.rows * self.cols;
        let (slope, inter) = self.rescale.get(f).copied().unwrap_or((1.0, 0.0));
        let (s, i) = (slope as f32, inter as f32);
        let mut out: Vec<f32> = self.raw[f * n..(f + 1) * n]
            .iter()
            .map(|&v| v as f32 * s + i)
            .collect();
        if self.monochrome1 {
            let a = self.raw_range.0 as f32 * s + i;
            let b = self.raw_range.1 as f32 * s + i;
            let sum = a + b;
            for v in &mut out {
                *v = sum - *v;
            }
        }
        out
    }
}

fn transfer_syntax_name(uid: &str) -> &'static str {
    match uid {
        TS_IMPLICIT_LE => "Implicit VR Little Endian",
        TS_EXPLICIT_LE => "Explicit VR Little Endian",
        TS_DEFLATED_LE => "Deflated Explicit VR Little Endian",
        TS_EXPLICIT_BE => "Explicit VR Big Endian",
        TS_RLE => "RLE Lossless",
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended",
        "1.2.840.10008.1.2.4.57" => "JPEG Lossless",
        "1.2.840.10008.1.2.4.70" => "JPEG Lossless SV1",
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.90" => "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.201" => "HTJ2K Lossless",
        "1.2.840.10008.1.2.4.202" => "HTJ2K Lossless RPCL",
        "1.2.840.10008.1.2.4.203" => "HTJ2K",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "MPEG-2",
        "1.2.840.10008.1.2.4.102" | "1.2.840.10008.1.2.4.103" => "MPEG-4",
        _ => "unknown transfer syntax",
    }
}

fn is_supported_syntax(uid: &str) -> bool {
    matches!(
        uid,
        TS_IMPLICIT_LE
            | TS_EXPLICIT_LE
            | TS_DEFLATED_LE
            | TS_EXPLICIT_BE
            | TS_RLE
            | TS_JPEG_BASELINE
            | TS_JPEG_EXTENDED
            | TS_JPEG_LOSSLESS
            | TS_JPEG_LOSSLESS_SV1
            | TS_JPEG_LS_LOSSLESS
            | TS_JPEG_LS_NEAR
            | TS_J2K_LOSSLESS
            | TS_J2K
    )
}

/// Decode the pixel data of an opened DICOM object into raw integers (pydicom 3 semantics).
/// The decoders run behind a panic guard: a decoder that panics on a damaged file gives a
/// [`DataError::PixelData`] naming the file.
pub(super) fn decode_pixels(
    obj: &DicomFile,
    path: &Path,
    opts: &DicomReadOptions,
) -> Result<DicomPixels> {
    check_decodable(obj, path)?;
    let samples = match catch_panic(|| decoded_samples(obj, path)) {
        Ok(r) => r?,
        Err(panic) => {
            return Err(DataError::PixelData {
                path: path.to_path_buf(),
                detail: panic_detail("the pixel-data decoder", &panic),
            })
        }
    };
    let pixel_err = |detail: String| DataError::PixelData {
        path: path.to_path_buf(),
        detail,
    };
    let grey = samples.to_grey(opts).map_err(pixel_err)?;
    let (rows, cols, frames, layout) =
        (samples.rows, samples.cols, samples.frames, &samples.layout);
    let raw = layout
        .raw_values(&grey.data, rows, cols, frames)
        .map_err(pixel_err)?;
    let rescale = frame_geometries(obj, frames)
        .into_iter()
        .map(|g| g.rescale)
        .collect();
    Ok(DicomPixels {
        rows,
        cols,
        frames,
        raw,
        rescale,
        monochrome1: grey.monochrome1,
        raw_range: layout.raw_range(),
    })
}

/// Decoded (uncompressed) samples of every frame, still in the object's colour layout:
/// little-endian, `samples` per pixel, interleaved unless `planar`.
struct Samples {
    rows: usize,
    cols: usize,
    frames: usize,
    samples: usize,
    planar: bool,
    /// Native YBR_FULL_422: each pair of pixels stored as Y0 Y1 Cb Cr.
    packed_422: bool,
    photometric: String,
    layout: SampleLayout,
    data: Vec<u8>,
}

/// Grey samples of a [`Samples`]: one per pixel, little-endian in the layout's width.
struct GreySamples<'a> {
    /// Borrowed from the [`Samples`] when they are already grey.
    data: std::borrow::Cow<'a, [u8]>,
    monochrome1: bool,
}

impl Samples {
    /// One grey sample per pixel: greyscale as it is, colour converted with
    /// [`DicomReadOptions::to_grey`] or refused.
    fn to_grey(&self, opts: &DicomReadOptions) -> std::result::Result<GreySamples<'_>, String> {
        let photometric = self.photometric.as_str();
        if self.samples == 1 {
            return match photometric {
                "MONOCHROME1" | "MONOCHROME2" => Ok(GreySamples {
                    data: std::borrow::Cow::Borrowed(&self.data),
                    monochrome1: photometric == "MONOCHROME1",
                }),
                "PALETTE COLOR" => Err(
                    "PALETTE COLOR images are not supported: convert them to greyscale first"
                        .into(),
                ),
                other => Err(format!(
                    "photometric interpretation {other} is not greyscale"
                )),
            };
        }
        let colour = matches!(
            photometric,
            "RGB" | "YBR_FULL" | "YBR_FULL_422" | "YBR_RCT" | "YBR_ICT"
        );
        if self.samples != 3 || !colour {
            return Err(format!(
                "{} samples per pixel ({photometric}) is not an image segdiff can read",
                self.samples
            ));
        }
        if !opts.to_grey {
            return Err(format!(
                "a colour image ({photometric}, 3 samples per pixel); segdiff trains on \
                 greyscale: pass --to-grey to convert it (RGB to luma, YBR to its Y)"
            ));
        }
        let width = match self.layout.alloc {
            8 => 1,
            16 => 2,
            other => {
                return Err(format!(
                    "colour with BitsAllocated {other} is not supported"
                ))
            }
        };
        let pixels = self.rows * self.cols;
        let per_pixel = if self.packed_422 { 2 } else { 3 };
        let need = pixels * self.frames * per_pixel * width;
        if self.data.len() < need {
            return Err(format!(
                "holds {} bytes, {} frames of {}x{} {photometric} need {need}",
                self.data.len(),
                self.frames,
                self.rows,
                self.cols
            ));
        }
        let sample = |i: usize| -> u32 {
            if width == 1 {
                u32::from(self.data[i])
            } else {
                u32::from(u16::from_le_bytes([self.data[2 * i], self.data[2 * i + 1]]))
            }
        };
        // YBR_RCT / YBR_ICT are what JPEG 2000 decoders undo: the decoded data is RGB.
        let luma_only = matches!(photometric, "YBR_FULL" | "YBR_FULL_422");
        let mut data = Vec::with_capacity(pixels * self.frames * width);
        for f in 0..self.frames {
            let base = f * pixels * per_pixel;
            for p in 0..pixels {
                let at = |c: usize| {
                    if self.packed_422 {
                        // Y0 Y1 Cb Cr per pair of pixels: only Y is read.
                        base + (p / 2) * 4 + p % 2
                    } else if self.planar {
                        base + c * pixels + p
                    } else {
                        base + 3 * p + c
                    }
                };
                let v = if luma_only {
                    sample(at(0))
                } else {
                    let (r, g, b) = (
                        u64::from(sample(at(0))),
                        u64::from(sample(at(1))),
                        u64::from(sample(at(2))),
                    );
                    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u32
                };
                if width == 1 {
                    data.push(v as u8);
                } else {
                    data.extend_from_slice(&(v as u16).to_le_bytes());
                }
            }
        }
        Ok(GreySamples {
            data: std::borrow::Cow::Owned(data),
            monochrome1: false,
        })
    }
}

/// The decoded samples of `obj`: JPEG-LS by `jpegls`, JPEG by `jpeg-decoder` (12-bit DCT by
/// [`super::jpeg12`]), everything else by dicom-pixeldata.
fn decoded_samples(obj: &DicomFile, path: &Path) -> Result<Samples> {
    let ts = clean_uid(obj.meta().transfer_syntax());
    if ts == TS_JPEG_LS_LOSSLESS || ts == TS_JPEG_LS_NEAR {
        return encapsulated_samples(obj, path, "JPEG-LS", jpeg_ls_frame);
    }
    if matches!(
        ts.as_str(),
        TS_JPEG_BASELINE | TS_JPEG_EXTENDED | TS_JPEG_LOSSLESS | TS_JPEG_LOSSLESS_SV1
    ) {
        return encapsulated_samples(obj, path, "JPEG", jpeg_frame);
    }
    if ts == TS_J2K || ts == TS_J2K_LOSSLESS {
        check_j2k_sizes(obj, path)?;
    }
    let decoded = obj.decode_pixel_data().map_err(|e| DataError::PixelData {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(Samples {
        rows: decoded.rows() as usize,
        cols: decoded.columns() as usize,
        frames: decoded.number_of_frames() as usize,
        samples: decoded.samples_per_pixel() as usize,
        planar: decoded.samples_per_pixel() > 1
            && decoded.planar_configuration() == PlanarConfiguration::PixelFirst,
        // Uncompressed YBR_FULL_422 keeps its 4:2:2 layout through dicom-pixeldata.
        packed_422: decoded.photometric_interpretation().as_str() == "YBR_FULL_422"
            && decoded.samples_per_pixel() == 3
            && decoded.data().len()
                == 2 * decoded.rows() as usize
                    * decoded.columns() as usize
                    * decoded.number_of_frames() as usize
                    * usize::from(decoded.bits_allocated() / 8).max(1),
        photometric: decoded.photometric_interpretation().as_str().to_string(),
        layout: SampleLayout::of(&decoded),
        data: decoded.into_data(),
    })
}

/// One decoded frame of a compressed stream: samples (row-major, interleaved when
/// `components` > 1), width, height and components.
struct DecodedFrame {
    samples: Vec<u16>,
    width: usize,
    height: usize,
    components: usize,
}

/// Decodes one compressed frame; `photometric` is the object's PhotometricInterpretation.
type FrameDecoder = fn(&[u8], &str) -> std::result::Result<DecodedFrame, String>;

/// Encapsulated frames (one compressed stream per frame) decoded with `decode`, checked against
/// the header's Rows, Columns and SamplesPerPixel.
fn encapsulated_samples(
    obj: &DicomFile,
    path: &Path,
    codec: &str,
    decode: FrameDecoder,
) -> Result<Samples> {
    let pixel_err = |detail: String| DataError::PixelData {
        path: path.to_path_buf(),
        detail,
    };
    let rows = uint_attr(obj, path, tags::ROWS, "Rows")? as usize;
    let cols = uint_attr(obj, path, tags::COLUMNS, "Columns")? as usize;
    let alloc = uint_attr(obj, path, tags::BITS_ALLOCATED, "BitsAllocated")? as u16;
    let stored =
        uint_attr(obj, path, tags::BITS_STORED, "BitsStored").unwrap_or(alloc.into()) as u16;
    let signed = attr_int(obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let samples = attr_int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let photometric = attr_str(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    let frames = frame_count(obj, path)?;
    if samples != 1 && samples != 3 {
        return Err(pixel_err(format!(
            "{codec} with {samples} samples per pixel is not supported"
        )));
    }
    let samples = samples as usize;
    if alloc != 8 && alloc != 16 {
        return Err(pixel_err(format!(
            "{codec} with BitsAllocated {alloc} is not supported"
        )));
    }
    let per_frame = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(samples))
        .filter(|&n| n > 0 && n <= 1 << 28)
        .ok_or_else(|| {
            pixel_err(format!(
                "{rows}x{cols}x{samples} is not a frame size segdiff decodes"
            ))
        })?;
    let fragments = frame_fragments(obj, frames).map_err(pixel_err)?;
    let mut data = Vec::new();
    for (f, stream) in fragments.iter().enumerate() {
        // The stream's own frame header, checked before decoding: the decoders allocate the
        // size it declares (a damaged 1.6 kB file declaring 63511×34836×3 took 6 GB and 80 s).
        if let Some((w, h, c)) = jpeg_frame_header(stream) {
            if w != cols || (h != 0 && h != rows) || c != samples {
                return Err(pixel_err(format!(
                    "{codec} frame {f} declares {w}x{h} with {c} component(s); the header says \
                     {cols}x{rows} with {samples}"
                )));
            }
        }
        let frame = decode(stream, &photometric)
            .map_err(|e| pixel_err(format!("{codec} frame {f}: {e}")))?;
        if (frame.width, frame.height, frame.components) != (cols, rows, samples)
            || frame.samples.len() != per_frame
        {
            return Err(pixel_err(format!(
                "{codec} frame {f} is {}x{} with {} component(s); the header says {cols}x{rows} \
                 with {samples}",
                frame.width, frame.height, frame.components
            )));
        }
        if alloc == 8 {
            data.extend(frame.samples.iter().map(|&v| v as u8));
        } else {
            data.extend(frame.samples.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    Ok(Samples {
        rows,
        cols,
        frames,
        samples,
        planar: false,
        packed_422: false,
        photometric,
        layout: SampleLayout {
            alloc,
            stored: stored.clamp(1, alloc),
            signed,
        },
        data,
    })
}

/// A JPEG-LS frame, by `jpegls` (single-component streams of 2–16 bits, lossless and
/// near-lossless).
fn jpeg_ls_frame(stream: &[u8], _photometric: &str) -> std::result::Result<DecodedFrame, String> {
    let header = jpeg_frame_header(stream);
    if let Some((_, _, components)) = header {
        if components != 1 {
            return Err(format!(
                "{components} samples per pixel: only greyscale JPEG-LS is decoded (the \
                 pure-Rust decoder reads one component)"
            ));
        }
    }
    let (w, h) = header.map_or((0, 0), |(w, h, _)| (w, h));
    let (samples, w, h) = jpegls::decode(stream, w as u32, h as u32).map_err(|e| e.to_string())?;
    Ok(DecodedFrame {
        samples,
        width: w as usize,
        height: h as usize,
        components: 1,
    })
}

/// A JPEG frame: 12-bit sequential DCT by [`super::jpeg12`], everything else (8-bit baseline
/// and extended, lossless process 14 and SV1) by `jpeg-decoder`. Colour streams are returned as
/// stored (no YCbCr → RGB transform): the PhotometricInterpretation says what they hold, as
/// pydicom reads it, and `--to-grey` takes the Y of YBR data.
fn jpeg_frame(stream: &[u8], _photometric: &str) -> std::result::Result<DecodedFrame, String> {
    if let Some((marker, 12)) = jpeg_sof(stream) {
        if marker == 0xC0 || marker == 0xC1 {
            let f = super::jpeg12::decode_jpeg_dct(stream)?;
            return Ok(DecodedFrame {
                samples: f.samples,
                width: f.width,
                height: f.height,
                components: 1,
            });
        }
    }
    let mut decoder = jpeg_decoder::Decoder::new(stream);
    if jpeg_frame_header(stream).is_some_and(|(_, _, c)| c == 3) {
        // "RGB" interleaves the three components as stored (jpeg-decoder's "None" is broken for
        // colour): RGB stays RGB, YCbCr stays YCbCr (its Y is the grey).
        decoder.set_color_transform(jpeg_decoder::ColorTransform::RGB);
    }
    let bytes = decoder.decode().map_err(|e| e.to_string())?;
    let info = decoder
        .info()
        .ok_or_else(|| "the decoder gave no image header".to_string())?;
    let (components, wide) = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => (1, false),
        jpeg_decoder::PixelFormat::L16 => (1, true),
        jpeg_decoder::PixelFormat::RGB24 => (3, false),
        jpeg_decoder::PixelFormat::CMYK32 => return Err("CMYK JPEG is not supported".into()),
    };
    let samples = if wide {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]))
            .collect()
    } else {
        bytes.iter().map(|&b| u16::from(b)).collect()
    };
    Ok(DecodedFrame {
        samples,
        width: usize::from(info.width),
        height: usize::from(info.height),
        components,
    })
}

/// The first SOF marker of a JPEG / JPEG-LS stream and its sample precision.
fn jpeg_sof(stream: &[u8]) -> Option<(u8, u8)> {
    jpeg_sof_segment(stream).and_then(|(marker, body)| Some((marker, *body.first()?)))
}

/// Width, height and component count from the first SOF segment.
fn jpeg_frame_header(stream: &[u8]) -> Option<(usize, usize, usize)> {
    let (_, body) = jpeg_sof_segment(stream)?;
    let h = u16::from_be_bytes([*body.get(1)?, *body.get(2)?]);
    let w = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]);
    Some((usize::from(w), usize::from(h), usize::from(*body.get(5)?)))
}

/// The marker and body of the first SOFn segment (SOF0–SOF15 but DHT, JPG, DAC; JPEG-LS's
/// SOF55), reading the markers after SOI as jpeg-decoder does: bytes before a 0xFF are skipped
/// (libjpeg tolerates them, and so does the decoder), as are fill bytes and stuffed zeros.
fn jpeg_sof_segment(stream: &[u8]) -> Option<(u8, &[u8])> {
    if stream.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2;
    loop {
        pos += stream.get(pos..)?.iter().position(|&b| b == 0xFF)? + 1;
        while *stream.get(pos)? == 0xFF {
            pos += 1;
        }
        let marker = stream[pos];
        pos += 1;
        match marker {
            0x00 => continue,
            // markers without a length: TEM, RST0–7, SOI; EOI ends the stream
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 => return None,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([
            *stream.get(pos)?,
            *stream.get(pos + 1)?,
        ]));
        let body = stream.get(pos + 2..pos.checked_add(len)?)?;
        let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if sof || marker == 0xF7 {
            return Some((marker, body));
        }
        if marker == 0xDA || len < 2 {
            return None;
        }
        pos += len;
    }
}

/// JPEG 2000: the image size each codestream declares (its SIZ marker) must be the header's Rows,
/// Columns and SamplesPerPixel before openjp2 decodes it, since it allocates what the codestream
/// declares (a damaged 1.2 kB file declaring 24×100663316 took 1.9 GB and 6 s).
fn check_j2k_sizes(obj: &DicomFile, path: &Path) -> Result<()> {
    let rows = uint_attr(obj, path, tags::ROWS, "Rows")? as usize;
    let cols = uint_attr(obj, path, tags::COLUMNS, "Columns")? as usize;
    let samples = attr_int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    // not encapsulated: dicom-pixeldata reports it
    let Ok(fragments) = pixel_fragments(obj) else {
        return Ok(());
    };
    for (i, fragment) in fragments.iter().enumerate() {
        let Some((w, h, c)) = j2k_image_size(fragment) else {
            continue;
        };
        if (w, h, c) != (cols as u64, rows as u64, samples as u64) {
            return Err(DataError::PixelData {
                path: path.to_path_buf(),
                detail: format!(
                    "the JPEG 2000 codestream in fragment {i} declares {w}x{h} with {c} \
                     component(s); the header says {cols}x{rows} with {samples}"
                ),
            });
        }
    }
    Ok(())
}

/// Width, height and component count from the SIZ marker of a JPEG 2000 codestream starting
/// `fragment` (raw, or inside a JP2 file's `jp2c` box); `None` when it starts none.
fn j2k_image_size(fragment: &[u8]) -> Option<(u64, u64, u64)> {
    const SOC_SIZ: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
    const JP2: [u8; 8] = [0, 0, 0, 0x0C, b'j', b'P', b' ', b' '];
    let start = if fragment.get(..4)? == SOC_SIZ {
        0
    } else if fragment.get(..8)? == JP2 {
        let head = &fragment[..fragment.len().min(1 << 16)];
        head.windows(4).position(|w| w == SOC_SIZ)?
    } else {
        return None;
    };
    let siz = fragment.get(start + 4..start + 4 + 38)?;
    let u32_at = |k: usize| {
        u64::from(u32::from_be_bytes([
            siz[k],
            siz[k + 1],
            siz[k + 2],
            siz[k + 3],
        ]))
    };
    // Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz (the image area is [XOsiz, Xsiz) × [YOsiz, Ysiz)),
    // the tile grid, and Csiz
    let (x, y, x0, y0) = (u32_at(4), u32_at(8), u32_at(12), u32_at(16));
    let components = u64::from(u16::from_be_bytes([siz[36], siz[37]]));
    Some((x.saturating_sub(x0), y.saturating_sub(y0), components))
}

/// The fragments of encapsulated Pixel Data, as stored.
fn pixel_fragments(obj: &DicomFile) -> std::result::Result<&[Vec<u8>], String> {
    let element = obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| format!("Pixel Data: {e}"))?;
    let dicom_core::DicomValue::PixelSequence(seq) = element.value() else {
        return Err("compressed transfer syntax but Pixel Data is not encapsulated".into());
    };
    Ok(seq.fragments())
}

/// The compressed stream of each of `frames` frames of encapsulated Pixel Data: all fragments
/// of a single frame joined, or one fragment per frame.
fn frame_fragments(obj: &DicomFile, frames: usize) -> std::result::Result<Vec<Vec<u8>>, String> {
    let fragments = pixel_fragments(obj)?;
    if frames == 1 {
        return Ok(vec![fragments
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect()]);
    }
    if fragments.len() == frames {
        return Ok(fragments.iter().map(|f| f.to_vec()).collect());
    }
    Err(format!(
        "{} fragments for {frames} frames: frames split over several fragments are not supported",
        fragments.len()
    ))
}

/// The transfer syntax is one we decode and the object has pixel data.
fn check_decodable(obj: &DicomFile, path: &Path) -> Result<()> {
    let ts = clean_uid(obj.meta().transfer_syntax());
    if !is_supported_syntax(&ts) {
        return Err(DataError::UnsupportedTransferSyntax {
            path: path.to_path_buf(),
            name: transfer_syntax_name(&ts),
            uid: ts,
        });
    }
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(DataError::NoPixelData {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// BitsAllocated, BitsStored (clamped to `1..=allocated`) and PixelRepresentation of the samples.
struct SampleLayout {
    alloc: u16,
    stored: u16,
    signed: bool,
}

impl SampleLayout {
    fn of(decoded: &DecodedPixelData<'_>) -> Self {
        let alloc = decoded.bits_allocated();
        Self {
            alloc,
            stored: decoded.bits_stored().clamp(1, alloc.max(1)),
            signed: decoded.pixel_representation() == PixelRepresentation::Signed,
        }
    }

    /// pydicom 3 shifts native values left then right by (allocated - stored) bits: unsigned values
    /// lose their unused high bits, signed ones are sign-extended from BitsStored.
    fn fix(&self, v: u32, bits: u32) -> i32 {
        let (stored, signed) = (self.stored, self.signed);
        let shift = bits - stored as u32;
        if shift == 0 {
            return if signed && bits < 32 {
                ((v << (32 - bits)) as i32) >> (32 - bits)
            } else {
                v as i32
            };
        }
        if signed {
            ((v << (32 - stored as u32)) as i32) >> (32 - stored as u32)
        } else {
            (v & ((1u32 << stored) - 1)) as i32
        }
    }

    /// The frame-major, row-major raw values of `frames` frames of `rows × cols` little-endian
    /// samples in `data`, or why they cannot be read.
    fn raw_values(
        &self,
        data: &[u8],
        rows: usize,
        cols: usize,
        frames: usize,
    ) -> std::result::Result<Vec<i32>, String> {
        let n = rows * cols * frames;
        let bytes_per = match self.alloc {
            1 | 8 => 1,
            16 => 2,
            32 => 4,
            other => return Err(format!("BitsAllocated {other} is not supported")),
        };
        if data.len() < n * bytes_per {
            return Err(format!(
                "holds {} bytes, {} frames of {}x{} need {}",
                data.len(),
                frames,
                rows,
                cols,
                n * bytes_per
            ));
        }
        Ok(match self.alloc {
            1 => data[..n].iter().map(|&b| i32::from(b != 0)).collect(),
            8 => data[..n]
                .iter()
                .map(|&b| self.fix(u32::from(b), 8))
                .collect(),
            16 => data[..2 * n]
                .chunks_exact(2)
                .map(|c| self.fix(u32::from(u16::from_le_bytes([c[0], c[1]])), 16))
                .collect(),
            _ => {
                if !self.signed && self.stored == 32 {
                    return Err("unsigned 32-bit samples are not supported".into());
                }
                data[..4 * n]
                    .chunks_exact(4)
                    .map(|c| self.fix(u32::from_le_bytes([c[0], c[1], c[2], c[3]]), 32))
                    .collect()
            }
        })
    }

    /// Smallest and largest raw value the layout allows.
    fn raw_range(&self) -> (i64, i64) {
        let stored = self.stored;
        if self.alloc == 1 {
            (0, 1)
        } else if self.signed {
            (-(1i64 << (stored - 1)), (1i64 << (stored - 1)) - 1)
        } else {
            (0, (1i64 << stored) - 1)
        }
    }
}

/// Read and decode the pixel data of one DICOM file (all frames), without rescale.
pub fn read_dicom_pixels(path: &Path) -> Result<DicomPixels> {
    read_dicom_pixels_with(path, &DicomReadOptions::default())
}

/// [`read_dicom_pixels`] with pixel-reading options (colour to grey).
pub fn read_dicom_pixels_with(path: &Path, opts: &DicomReadOptions) -> Result<DicomPixels> {
    let obj = open_dicom(path, false)?;
    decode_pixels(&obj, path, opts)
}
