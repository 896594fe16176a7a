//! NIfTI-2 (`.nii`, `.nii.gz`, single file) and the two-file `.hdr` + `.img` family (NIfTI-1
//! pairs, NIfTI-2 pairs, Analyze 7.5), read as nibabel reads them.
//!
//! * The byte order is the one in which `sizeof_hdr` reads 348 (NIfTI-1 / Analyze) or 540
//!   (NIfTI-2).
//! * NIfTI (magic `n+2\0\r\n\x1a\n`, `ni1\0`, `n+1\0`, `ni2\0…`): affine and `scl_slope`/`scl_inter`
//!   exactly as for NIfTI-1 files (sform, else qform, else nibabel's centred LAS fallback; see
//!   [`crate::nifti_volume`]), scaling computed in f64.
//! * A `.hdr` without magic is Analyze 7.5 as nibabel's `AnalyzeImage` reads it: no scaling
//!   (`funused1` ignored) and `AnalyzeHeader.get_best_affine()`, i.e. `diag(−dx, dy, dz)` (pixdim
//!   taken as stored, x flipped: Analyze is radiological) centred on the volume, translation
//!   `−(dim − 1)/2 · zoom`. SPM's `origin` field (nibabel's `Spm99AnalyzeImage` / `Spm2AnalyzeImage`,
//!   which `nib.load` picks for such files) is not used: the two agree when `origin` is zero
//!   and `funused1` is 0 or 1.
//! * Analyze data types: uint8, int16, int32, float32, float64; NIfTI adds int8, uint16, uint32,
//!   int64, uint64. Complex, RGB and float128 are refused.
//! * `.img`/`.hdr` may each be gzipped (`.img.gz`, `.hdr.gz`). 4-D files: one volume is taken
//!   (`volume_index`); dimensions 5–7 must have length 1.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::nifti_volume::{forms_affine, NiftiForms};
use crate::volume::{Affine, Volume};

use super::voxel_data::{
    decode, format_err, fortran_array, inflate, nibabel_scaling, read_file, read_prefix,
    sample_count, Compression, Scalar,
};

const NIFTI2: &str = "NIfTI-2";
const PAIR: &str = "NIfTI/Analyze .hdr/.img pair";
const NIFTI2_MAGIC: &[u8; 8] = b"n+2\0\r\n\x1a\n";
const NIFTI2_PAIR_MAGIC: &[u8; 8] = b"ni2\0\r\n\x1a\n";

/// Which header variant a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nifti,
    Analyze,
}

/// The fields of a NIfTI-2, NIfTI-1 or Analyze header that reading a volume needs.
#[derive(Clone, Debug)]
struct Header {
    kind: Kind,
    big_endian: bool,
    datatype: i64,
    /// `dim[1..=dim[0]]`.
    dims: Vec<usize>,
    pixdim: [f64; 8],
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    forms: Option<NiftiForms>,
}

/// Little helper reading fixed offsets of a header in its byte order; `None` past the end.
struct Fields<'a> {
    b: &'a [u8],
    be: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.b.get(at..at + N)?.try_into().ok()
    }
    fn i16(&self, at: usize) -> Option<i64> {
        let a = self.arr::<2>(at)?;
        Some(i64::from(if self.be {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }))
    }
    fn i32(&self, at: usize) -> Option<i64> {
        let a = self.arr::<4>(at)?;
        Some(i64::from(if self.be {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }))
    }
    fn i64(&self, at: usize) -> Option<i64> {
        let a = self.arr::<8>(at)?;
        Some(if self.be {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        })
    }
    fn f32(&self, at: usize) -> Option<f64> {
        let a = self.arr::<4>(at)?;
        Some(f64::from(if self.be {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        }))
    }
    fn f64(&self, at: usize) -> Option<f64> {
        let a = self.arr::<8>(at)?;
        Some(if self.be {
            f64::from_be_bytes(a)
        } else {
            f64::from_le_bytes(a)
        })
    }
}

/// The byte order in which the first four bytes read `size`; `None` if neither does.
fn byte_order(bytes: &[u8], size: i32) -> Option<bool> {
    let a: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    if i32::from_le_bytes(a) == size {
        Some(false)
    } else if i32::from_be_bytes(a) == size {
        Some(true)
    } else {
        None
    }
}

/// `sizeof_hdr` of a NIfTI-1 / Analyze (348) or NIfTI-2 (540) header, in either byte order.
pub(crate) fn sizeof_hdr(bytes: &[u8]) -> Option<i32> {
    [348, 540]
        .into_iter()
        .find(|&s| byte_order(bytes, s).is_some())
}

fn dims_from(path: &Path, format: &'static str, raw: &[i64]) -> Result<Vec<usize>> {
    let ndim = raw.first().copied().unwrap_or(0);
    if !(1..=7).contains(&ndim) {
        return Err(format_err(
            path,
            format,
            format!("dim[0] = {ndim} is not in 1..7"),
        ));
    }
    raw.iter()
        .skip(1)
        .take(ndim as usize)
        .map(|&d| {
            usize::try_from(d).ok().filter(|&d| d > 0).ok_or_else(|| {
                format_err(
                    path,
                    format,
                    format!("dimensions {raw:?}: {d} is not positive"),
                )
            })
        })
        .collect()
}

/// Parse a 540-byte NIfTI-2 header; `pair` says which magic is expected.
fn parse_nifti2(path: &Path, b: &[u8], pair: bool) -> Result<Header> {
    let short = || {
        format_err(
            path,
            NIFTI2,
            format!("the header is truncated ({} bytes, 540 needed)", b.len()),
        )
    };
    if b.len() < 540 {
        return Err(short());
    }
    let be = byte_order(b, 540).ok_or_else(|| format_err(path, NIFTI2, "sizeof_hdr is not 540"))?;
    let magic = b.get(4..12).unwrap_or_default();
    let want: &[u8] = if pair {
        NIFTI2_PAIR_MAGIC
    } else {
        NIFTI2_MAGIC
    };
    if magic != want {
        return Err(format_err(
            path,
            NIFTI2,
            format!(
                "magic {:?} is not {:?}",
                String::from_utf8_lossy(magic),
                String::from_utf8_lossy(want)
            ),
        ));
    }
    let f = Fields { b, be };
    let g = |v: Option<f64>| v.ok_or_else(short);
    let gi = |v: Option<i64>| v.ok_or_else(short);
    let mut raw_dim = [0i64; 8];
    for (i, d) in raw_dim.iter_mut().enumerate() {
        *d = gi(f.i64(16 + 8 * i))?;
    }
    let mut pixdim = [0f64; 8];
    for (i, p) in pixdim.iter_mut().enumerate() {
        *p = g(f.f64(104 + 8 * i))?;
    }
    let dims = dims_from(path, NIFTI2, &raw_dim)?;
    let mut srow = [[0f64; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = g(f.f64(400 + 32 * r + 8 * c))?;
        }
    }
    let forms = NiftiForms {
        sform_code: gi(f.i32(348))?,
        srow,
        qform_code: gi(f.i32(344))?,
        quatern: [g(f.f64(352))?, g(f.f64(360))?, g(f.f64(368))?],
        qoffset: [g(f.f64(376))?, g(f.f64(384))?, g(f.f64(392))?],
        pixdim: [pixdim[0], pixdim[1], pixdim[2], pixdim[3]],
        dim: [1, 2, 3].map(|i| raw_dim[i].max(1) as f64),
    };
    Ok(Header {
        kind: Kind::Nifti,
        big_endian: be,
        datatype: gi(f.i16(12))?,
        dims,
        pixdim,
        vox_offset: gi(f.i64(168))? as f64,
        scl_slope: g(f.f64(176))?,
        scl_inter: g(f.f64(184))?,
        forms: Some(forms),
    })
}

/// Parse a 348-byte NIfTI-1 pair or Analyze 7.5 header.
fn parse_348(path: &Path, b: &[u8]) -> Result<Header> {
    let short = || {
        format_err(
            path,
            PAIR,
            format!("the header is truncated ({} bytes, 348 needed)", b.len()),
        )
    };
    if b.len() < 348 {
        return Err(short());
    }
    let be = byte_order(b, 348).ok_or_else(|| format_err(path, PAIR, "sizeof_hdr is not 348"))?;
    let f = Fields { b, be };
    let g = |v: Option<f64>| v.ok_or_else(short);
    let gi = |v: Option<i64>| v.ok_or_else(short);
    let magic = b.get(344..348).unwrap_or_default();
    let kind = match magic {
        b"ni1\0" | b"n+1\0" => Kind::Nifti,
        _ if magic.iter().all(|&c| c == 0) => Kind::Analyze,
        _ => {
            return Err(format_err(
                path,
                PAIR,
                format!(
                    "magic {:?} is neither NIfTI-1 (\"ni1\") nor empty (Analyze 7.5)",
                    String::from_utf8_lossy(magic)
                ),
            ))
        }
    };
    let mut raw_dim = [0i64; 8];
    for (i, d) in raw_dim.iter_mut().enumerate() {
        *d = gi(f.i16(40 + 2 * i))?;
    }
    let mut pixdim = [0f64; 8];
    for (i, p) in pixdim.iter_mut().enumerate() {
        *p = g(f.f32(76 + 4 * i))?;
    }
    let dims = dims_from(path, PAIR, &raw_dim)?;
    let forms = if kind == Kind::Nifti {
        let mut srow = [[0f64; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = g(f.f32(280 + 16 * r + 4 * c))?;
            }
        }
        Some(NiftiForms {
            sform_code: gi(f.i16(254))?,
            srow,
            qform_code: gi(f.i16(252))?,
            quatern: [g(f.f32(256))?, g(f.f32(260))?, g(f.f32(264))?],
            qoffset: [g(f.f32(268))?, g(f.f32(272))?, g(f.f32(276))?],
            pixdim: [pixdim[0], pixdim[1], pixdim[2], pixdim[3]],
            dim: [1, 2, 3].map(|i| raw_dim[i].max(1) as f64),
        })
    } else {
        None
    };
    Ok(Header {
        kind,
        big_endian: be,
        datatype: gi(f.i16(70))?,
        dims,
        pixdim,
        vox_offset: g(f.f32(108))?,
        scl_slope: g(f.f32(112))?,
        scl_inter: g(f.f32(116))?,
        forms,
    })
}

impl Header {
    fn scalar(&self, path: &Path, format: &'static str) -> Result<Scalar> {
        let s = match (self.datatype, self.kind) {
            (2, _) => Scalar::U8,
            (4, _) => Scalar::I16,
            (8, _) => Scalar::I32,
            (16, _) => Scalar::F32,
            (64, _) => Scalar::F64,
            (256, Kind::Nifti) => Scalar::I8,
            (512, Kind::Nifti) => Scalar::U16,
            (768, Kind::Nifti) => Scalar::U32,
            (1024, Kind::Nifti) => Scalar::I64,
            (1280, Kind::Nifti) => Scalar::U64,
            (d, _) => {
                return Err(format_err(
                    path,
                    format,
                    format!("data type {d} is not supported (integer and real scalar types only)"),
                ))
            }
        };
        Ok(s)
    }

    /// Spatial shape, first sample and sample count of volume `volume_index`.
    fn block(
        &self,
        path: &Path,
        format: &'static str,
        volume_index: usize,
    ) -> Result<([usize; 3], usize, usize)> {
        let d = |i: usize| self.dims.get(i).copied().unwrap_or(1);
        let n4 = d(3);
        super::check_volume_index(path, n4, volume_index)?;
        if self.dims.iter().skip(4).any(|&v| v > 1) {
            return Err(format_err(
                path,
                format,
                format!(
                    "dimensions {:?}: only 3-D and 4-D volumes are supported",
                    self.dims
                ),
            ));
        }
        let shape = [d(0), d(1), d(2)];
        let count = sample_count(path, format, &shape, 8)?;
        let total = sample_count(path, format, &self.dims, 8)?;
        debug_assert!(total >= count);
        Ok((shape, volume_index * count, count))
    }

    fn affine(&self) -> (Affine, Vec<String>) {
        match &self.forms {
            Some(f) => forms_affine(f),
            None => (self.analyze_affine(), Vec::new()),
        }
    }

    /// nibabel `AnalyzeHeader.get_best_affine` (`shape_zoom_affine` with `x_flip`).
    fn analyze_affine(&self) -> Affine {
        let n = self.dims.len();
        let mut m = [[0.0; 4]; 4];
        for (i, row) in m.iter_mut().enumerate().take(3) {
            let (size, zoom) = if i < n {
                (
                    self.dims.get(i).copied().unwrap_or(1) as f64,
                    self.pixdim[i + 1],
                )
            } else {
                (1.0, 1.0)
            };
            let z = if i == 0 { -zoom } else { zoom };
            row[i] = z;
            row[3] = -((size - 1.0) / 2.0) * z;
        }
        m[3][3] = 1.0;
        m
    }

    fn data_offset(&self, path: &Path, format: &'static str, min: usize) -> Result<usize> {
        let v = self.vox_offset;
        if !(0.0..=1e15).contains(&v) {
            return Err(format_err(
                path,
                format,
                format!("vox_offset {v} is invalid"),
            ));
        }
        let off = v as usize;
        if off < min {
            return Err(format_err(
                path,
                format,
                format!("vox_offset {v} points into the header (at least {min} expected)"),
            ));
        }
        Ok(off)
    }

    /// Decode volume `volume_index` from `data` (the bytes from the data offset on).
    fn volume(
        &self,
        path: &Path,
        format: &'static str,
        data: &[u8],
        volume_index: usize,
    ) -> Result<LoadedVolume> {
        let scalar = self.scalar(path, format)?;
        let (shape, first, count) = self.block(path, format, volume_index)?;
        let scaling = match self.kind {
            Kind::Nifti => nibabel_scaling(self.scl_slope, self.scl_inter),
            Kind::Analyze => None,
        };
        let samples = match scaling {
            Some((s, i)) => decode(
                path,
                format,
                data,
                scalar,
                self.big_endian,
                first,
                count,
                |v| v * s + i,
            )?,
            None => decode(
                path,
                format,
                data,
                scalar,
                self.big_endian,
                first,
                count,
                |v| v,
            )?,
        };
        let (affine, warnings) = self.affine();
        Ok(LoadedVolume {
            volume: Volume {
                data: fortran_array(path, format, shape, samples)?,
                affine,
            },
            source: path.to_path_buf(),
            modality: None,
            warnings,
        })
    }
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().to_ascii_lowercase().ends_with(".gz")
}

/// Bytes needed from the data file for volume `volume_index` (+ its offset), checked.
fn needed_bytes(
    path: &Path,
    format: &'static str,
    h: &Header,
    off: usize,
    volume_index: usize,
) -> Result<usize> {
    let size = h.scalar(path, format)?.size();
    let (_, first, count) = h.block(path, format, volume_index)?;
    first
        .checked_add(count)
        .and_then(|n| n.checked_mul(size))
        .and_then(|n| n.checked_add(off))
        .ok_or_else(|| format_err(path, format, "the data size overflows"))
}

/// Read a data stream up to `want` bytes (gz streams are inflated no further than that).
fn read_data(path: &Path, format: &'static str, want: usize) -> Result<Vec<u8>> {
    if is_gz(path) {
        let raw = read_file(path)?;
        inflate(path, format, &raw, Compression::Gzip, want)
    } else {
        read_file(path)
    }
}

/// A single-file NIfTI-2 volume.
pub(crate) fn read_nifti2(path: &Path, volume_index: usize) -> Result<LoadedVolume> {
    let head = read_prefix(path, is_gz(path), 540)?;
    let h = parse_nifti2(path, &head, false)?;
    let off = h.data_offset(path, NIFTI2, 540)?;
    let want = needed_bytes(path, NIFTI2, &h, off, volume_index)?;
    let bytes = read_data(path, NIFTI2, want)?;
    h.volume(
        path,
        NIFTI2,
        bytes.get(off..).unwrap_or_default(),
        volume_index,
    )
}

/// Shape and affine of a single-file NIfTI-2 volume, from its header.
pub(crate) fn nifti2_geometry(path: &Path, volume_index: usize) -> Result<([usize; 3], Affine)> {
    let head = read_prefix(path, is_gz(path), 540)?;
    let h = parse_nifti2(path, &head, false)?;
    h.scalar(path, NIFTI2)?;
    let (shape, _, _) = h.block(path, NIFTI2, volume_index)?;
    Ok((shape, h.affine().0))
}

/// The header and image files of a pair named by either of them (each possibly gzipped).
fn pair_files(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = path.to_string_lossy();
    let lower = name.to_ascii_lowercase();
    let base = [".hdr.gz", ".img.gz", ".hdr", ".img"]
        .iter()
        .find(|e| lower.ends_with(*e))
        .map(|e| &name[..name.len() - e.len()])
        .ok_or_else(|| format_err(path, PAIR, "expected a .hdr or .img file name"))?;
    let find = |ext: &str| -> Result<PathBuf> {
        let up = ext.to_ascii_uppercase();
        let exts = [
            ext.to_string(),
            format!("{ext}.gz"),
            up.clone(),
            format!("{up}.GZ"),
        ];
        exts.iter()
            .map(|e| PathBuf::from(format!("{base}{e}")))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                DataError::io(
                    format!("{base}{ext}"),
                    "find the other file of the .hdr/.img pair",
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })
    };
    Ok((find(".hdr")?, find(".img")?))
}

fn pair_header(hdr: &Path) -> Result<Header> {
    let head = read_prefix(hdr, is_gz(hdr), 540)?;
    match sizeof_hdr(&head) {
        Some(540) => parse_nifti2(hdr, &head, true),
        _ => parse_348(hdr, &head),
    }
}

/// A `.hdr` + `.img` pair (NIfTI-1, NIfTI-2 or Analyze 7.5), named by either file.
pub(crate) fn read_pair(path: &Path, volume_index: usize) -> Result<LoadedVolume> {
    let (hdr, img) = pair_files(path)?;
    let h = pair_header(&hdr)?;
    let off = h.data_offset(&hdr, PAIR, 0)?;
    let want = needed_bytes(&hdr, PAIR, &h, off, volume_index)?;
    let bytes = read_data(&img, PAIR, want)?;
    let mut v = h.volume(
        &img,
        PAIR,
        bytes.get(off..).unwrap_or_default(),
        volume_index,
    )?;
    v.source = path.to_path_buf();
    Ok(v)
}

/// Shape and affine of a `.hdr` + `.img` pair, from its header.
pub(crate) fn pair_geometry(path: &Path, volume_index: usize) -> Result<([usize; 3], Affine)> {
    let (hdr, _) = pair_files(path)?;
    let h = pair_header(&hdr)?;
    h.scalar(&hdr, PAIR)?;
    let (shape, _, _) = h.block(&hdr, PAIR, volume_index)?;
    Ok((shape, h.affine().0))
}
