//! Pixel data of one DICOM object: the supported transfer syntaxes, decoding to raw integers with
//! pydicom 3's bit handling, and the per-frame modality rescale.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder, PixelRepresentation};

use super::attributes::{clean_uid, frame_geometries, open_dicom, DicomFile};
use crate::error::{DataError, Result};

const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const TS_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const TS_DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const TS_RLE: &str = "1.2.840.10008.1.2.5";

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
        TS_IMPLICIT_LE | TS_EXPLICIT_LE | TS_DEFLATED_LE | TS_EXPLICIT_BE | TS_RLE
    )
}

/// Decode the pixel data of an opened DICOM object into raw integers (pydicom 3 semantics).
pub(super) fn decode_pixels(obj: &DicomFile, path: &Path) -> Result<DicomPixels> {
    check_decodable(obj, path)?;
    let pixel_err = |detail: String| DataError::PixelData {
        path: path.to_path_buf(),
        detail,
    };
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| pixel_err(e.to_string()))?;
    let photometric = greyscale_interpretation(&decoded).map_err(pixel_err)?;
    let rows = decoded.rows() as usize;
    let cols = decoded.columns() as usize;
    let frames = decoded.number_of_frames() as usize;
    let layout = SampleLayout::of(&decoded);
    let raw = layout
        .raw_values(decoded.data(), rows, cols, frames)
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
        monochrome1: photometric == "MONOCHROME1",
        raw_range: layout.raw_range(),
    })
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

/// The PhotometricInterpretation of a single-sample greyscale image, or why it is not one.
fn greyscale_interpretation(decoded: &DecodedPixelData<'_>) -> std::result::Result<String, String> {
    if decoded.samples_per_pixel() != 1 {
        return Err(format!(
            "{} samples per pixel ({}); only greyscale images are supported",
            decoded.samples_per_pixel(),
            decoded.photometric_interpretation().as_str()
        ));
    }
    let photometric = decoded.photometric_interpretation().as_str().to_string();
    if photometric != "MONOCHROME1" && photometric != "MONOCHROME2" {
        return Err(format!(
            "photometric interpretation {photometric} is not greyscale"
        ));
    }
    Ok(photometric)
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
    let obj = open_dicom(path, false)?;
    decode_pixels(&obj, path)
}
