//! Voxel samples as the header formats store them: a scalar type, a byte order, optionally
//! gzip/zlib-compressed, x fastest. Every size is checked against the bytes actually there before
//! anything is allocated from a header's numbers.

use std::io::Read;
use std::path::Path;

use flate2::read::{GzDecoder, ZlibDecoder};
use ndarray::{Array3, ShapeBuilder};

use crate::error::{DataError, Result};

/// One stored sample type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scalar {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Scalar {
    /// Bytes per sample.
    pub(crate) fn size(self) -> usize {
        match self {
            Scalar::U8 | Scalar::I8 => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 | Scalar::F32 => 4,
            Scalar::U64 | Scalar::I64 | Scalar::F64 => 8,
        }
    }
}

/// Compression of a data stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    Gzip,
    Zlib,
}

/// A format-specific error naming the file.
pub(crate) fn format_err(
    path: &Path,
    format: &'static str,
    detail: impl Into<String>,
) -> DataError {
    DataError::VolumeFormat {
        path: path.to_path_buf(),
        format,
        detail: detail.into(),
    }
}

/// Whole file contents.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, "read volume file", e))
}

/// At most `limit` bytes from the start of a file (decompressed when `gz`): enough for a header.
pub(crate) fn read_prefix(path: &Path, gz: bool, limit: usize) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, "open volume file", e))?;
    let mut out = Vec::new();
    let res = if gz {
        GzDecoder::new(file)
            .take(limit as u64)
            .read_to_end(&mut out)
    } else {
        file.take(limit as u64).read_to_end(&mut out)
    };
    res.map_err(|e| DataError::io(path, "read volume header", e))?;
    Ok(out)
}

/// Number of samples of `dims`, refusing zero, overflow and more bytes than `limit` could hold.
pub(crate) fn sample_count(
    path: &Path,
    format: &'static str,
    dims: &[usize],
    sample_size: usize,
) -> Result<usize> {
    let mut n: usize = 1;
    for &d in dims {
        if d == 0 {
            return Err(format_err(
                path,
                format,
                format!("sizes {dims:?}: a size is 0"),
            ));
        }
        n = n
            .checked_mul(d)
            .ok_or_else(|| format_err(path, format, format!("sizes {dims:?} overflow")))?;
    }
    n.checked_mul(sample_size)
        .ok_or_else(|| format_err(path, format, format!("sizes {dims:?} overflow")))?;
    Ok(n)
}

/// Decompressed data, at most `want` bytes (a larger stream is cut, so no bomb fills memory).
pub(crate) fn inflate(
    path: &Path,
    format: &'static str,
    bytes: &[u8],
    compression: Compression,
    want: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let limit = want as u64;
    let res = match compression {
        Compression::Gzip => GzDecoder::new(bytes).take(limit).read_to_end(&mut out),
        Compression::Zlib => ZlibDecoder::new(bytes).take(limit).read_to_end(&mut out),
    };
    res.map_err(|e| format_err(path, format, format!("cannot decompress the data: {e}")))?;
    Ok(out)
}

/// Samples `first .. first + count` of `bytes` as f32 through `map` (applied in f64), or an error
/// when the data are too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode(
    path: &Path,
    format: &'static str,
    bytes: &[u8],
    scalar: Scalar,
    big_endian: bool,
    first: usize,
    count: usize,
    map: impl Fn(f64) -> f64,
) -> Result<Vec<f32>> {
    let size = scalar.size();
    let range = first
        .checked_add(count)
        .and_then(|end| Some((first.checked_mul(size)?, end.checked_mul(size)?)));
    let Some((start, end)) = range.filter(|&(_, end)| end <= bytes.len()) else {
        return Err(format_err(
            path,
            format,
            format!(
                "the data hold {} bytes, fewer than the {} bytes ({} samples of {size} byte(s)) \
                 the header describes",
                bytes.len(),
                first.saturating_add(count).saturating_mul(size),
                first.saturating_add(count)
            ),
        ));
    };
    let data = &bytes[start..end];
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            data.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    let v = if big_endian {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    };
                    map(v as f64) as f32
                })
                .collect()
        };
    }
    Ok(match scalar {
        Scalar::U8 => data.iter().map(|&v| map(f64::from(v)) as f32).collect(),
        Scalar::I8 => data
            .iter()
            .map(|&v| map(f64::from(v as i8)) as f32)
            .collect(),
        Scalar::U16 => conv!(u16, 2),
        Scalar::I16 => conv!(i16, 2),
        Scalar::U32 => conv!(u32, 4),
        Scalar::I32 => conv!(i32, 4),
        Scalar::U64 => conv!(u64, 8),
        Scalar::I64 => conv!(i64, 8),
        Scalar::F32 => conv!(f32, 4),
        Scalar::F64 => conv!(f64, 8),
    })
}

/// A volume array from samples stored x fastest (Fortran order).
pub(crate) fn fortran_array(
    path: &Path,
    format: &'static str,
    shape: [usize; 3],
    samples: Vec<f32>,
) -> Result<Array3<f32>> {
    Array3::from_shape_vec(shape.f(), samples)
        .map_err(|e| format_err(path, format, format!("voxel array of shape {shape:?}: {e}")))
}

/// nibabel's `scl_slope`/`scl_inter` rule: no scaling for a zero or non-finite slope; a
/// non-finite intercept counts as 0.
pub(crate) fn nibabel_scaling(slope: f64, inter: f64) -> Option<(f64, f64)> {
    if !slope.is_finite() || slope == 0.0 {
        return None;
    }
    let inter = if inter.is_finite() { inter } else { 0.0 };
    (slope != 1.0 || inter != 0.0).then_some((slope, inter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_byte_orders_and_refuses_short_data() {
        let p = Path::new("x.raw");
        let le = decode(p, "t", &[1, 0, 0xff, 0xff], Scalar::I16, false, 0, 2, |v| v).unwrap();
        assert_eq!(le, vec![1.0, -1.0]);
        let be = decode(p, "t", &[0, 1, 0x80, 0], Scalar::U16, true, 1, 1, |v| {
            v * 2.0
        })
        .unwrap();
        assert_eq!(be, vec![65536.0]);
        let e = decode(p, "t", &[0, 1, 2], Scalar::U16, false, 1, 1, |v| v).unwrap_err();
        assert!(e.to_string().contains("x.raw"), "{e}");
        assert!(decode(p, "t", &[], Scalar::U8, false, usize::MAX, 2, |v| v).is_err());
    }

    #[test]
    fn counts_refuse_overflow_and_zero() {
        let p = Path::new("x");
        assert!(sample_count(p, "t", &[usize::MAX, 2], 1).is_err());
        assert!(sample_count(p, "t", &[usize::MAX / 2, 1], 4).is_err());
        assert!(sample_count(p, "t", &[3, 0, 2], 1).is_err());
        assert_eq!(sample_count(p, "t", &[3, 4, 2], 8).unwrap(), 24);
    }
}
