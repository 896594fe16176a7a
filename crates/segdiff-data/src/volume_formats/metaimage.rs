//! ITK MetaImage (`.mha` with the data after the header, `.mhd` + a raw data file) → volume.
//!
//! Orientation as ITK (and SimpleITK) reads it: the physical space is LPS, `TransformMatrix` (or
//! `Rotation` / `Orientation`) is the direction matrix stored column by column (element
//! `TransformMatrix[c·n + r]` is `D[r][c]`), so the voxel → RAS affine is
//! `diag(−1, −1, 1) · [D · diag(ElementSpacing) | Offset]`. `AnatomicalOrientation` is ignored,
//! as ITK ignores it. Read: `NDims` 2 or 3, `ElementType` MET_UCHAR/CHAR/USHORT/SHORT/UINT/INT/
//! LONG_LONG/ULONG_LONG/FLOAT/DOUBLE, either byte order, `CompressedData` (zlib), `HeaderSize`.
//! Refused with an error: `ElementNumberOfChannels` > 1, ASCII data (`BinaryData = False`),
//! `ElementDataFile = LIST` and file patterns, other object types.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::volume::{Affine, Volume};

use super::voxel_data::{
    decode, format_err, fortran_array, inflate, read_file, read_prefix, sample_count, Compression,
    Scalar,
};

const FORMAT: &str = "MetaImage";
/// Longest header read when only the geometry is wanted.
const HEADER_LIMIT: usize = 1 << 20;

/// A parsed MetaImage header.
#[derive(Clone, Debug)]
struct Header {
    shape: [usize; 3],
    scalar: Scalar,
    big_endian: bool,
    compressed: bool,
    header_size: i64,
    affine: Affine,
    /// `None`: the data follow the header in the same file (`LOCAL`).
    data_file: Option<PathBuf>,
    /// Where the data start in the header file (for `LOCAL`).
    data_start: usize,
}

fn err(path: &Path, detail: impl Into<String>) -> DataError {
    format_err(path, FORMAT, detail)
}

/// `key = value` lines up to and including `ElementDataFile`, and the byte after that line.
fn header_lines(path: &Path, bytes: &[u8]) -> Result<(Vec<(String, String)>, usize)> {
    let mut fields = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or_default();
        let (line, next) = match rest.iter().position(|&c| c == b'\n') {
            Some(n) => (rest.get(..n).unwrap_or_default(), pos + n + 1),
            None => (rest, bytes.len()),
        };
        let text = std::str::from_utf8(line)
            .map_err(|_| err(path, format!("header line at byte {pos} is not text")))?
            .trim();
        pos = next;
        if text.is_empty() {
            continue;
        }
        let (k, v) = text
            .split_once('=')
            .ok_or_else(|| err(path, format!("header line `{text}` is not `key = value`")))?;
        let key = k.trim().to_string();
        let last = key.eq_ignore_ascii_case("ElementDataFile");
        fields.push((key, v.trim().to_string()));
        if last {
            return Ok((fields, pos));
        }
    }
    Err(err(
        path,
        "the header has no ElementDataFile line (truncated or not MetaImage)",
    ))
}

fn field<'a>(fields: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
        .map(|(_, v)| v.as_str())
}

fn numbers<T: std::str::FromStr>(path: &Path, key: &str, value: &str, n: usize) -> Result<Vec<T>> {
    let v: Vec<T> = value
        .split_whitespace()
        .map(|t| t.parse::<T>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| err(path, format!("{key} = {value}: not {n} numbers")))?;
    if v.len() != n {
        return Err(err(path, format!("{key} = {value}: expected {n} values")));
    }
    Ok(v)
}

fn boolean(path: &Path, key: &str, value: Option<&str>) -> Result<Option<bool>> {
    match value.map(|v| v.to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v == "true" || v == "1" => Ok(Some(true)),
        Some(v) if v == "false" || v == "0" => Ok(Some(false)),
        Some(v) => Err(err(path, format!("{key} = {v}: not True or False"))),
    }
}

fn scalar(path: &Path, t: &str) -> Result<Scalar> {
    Ok(match t.to_ascii_uppercase().as_str() {
        "MET_UCHAR" => Scalar::U8,
        "MET_CHAR" => Scalar::I8,
        "MET_USHORT" => Scalar::U16,
        "MET_SHORT" => Scalar::I16,
        "MET_UINT" => Scalar::U32,
        "MET_INT" => Scalar::I32,
        "MET_ULONG_LONG" => Scalar::U64,
        "MET_LONG_LONG" => Scalar::I64,
        "MET_FLOAT" => Scalar::F32,
        "MET_DOUBLE" => Scalar::F64,
        _ => {
            return Err(err(
                path,
                format!(
                    "ElementType {t} is not supported (MET_UCHAR, MET_CHAR, MET_USHORT, MET_SHORT, \
                     MET_UINT, MET_INT, MET_ULONG_LONG, MET_LONG_LONG, MET_FLOAT, MET_DOUBLE)"
                ),
            ))
        }
    })
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let (fields, data_start) = header_lines(path, bytes)?;
    let get = |names: &[&str]| field(&fields, names);
    if let Some(t) = get(&["ObjectType"]) {
        if !t.eq_ignore_ascii_case("Image") {
            return Err(err(path, format!("ObjectType {t} is not Image")));
        }
    }
    let ndims: usize = get(&["NDims"])
        .ok_or_else(|| err(path, "NDims is missing"))?
        .parse()
        .map_err(|_| err(path, "NDims is not a number"))?;
    if !(2..=3).contains(&ndims) {
        return Err(err(
            path,
            format!("NDims {ndims}: only 2-D and 3-D images are supported"),
        ));
    }
    let dims: Vec<usize> = numbers(
        path,
        "DimSize",
        get(&["DimSize"]).ok_or_else(|| err(path, "DimSize is missing"))?,
        ndims,
    )?;
    let channels: usize = match get(&["ElementNumberOfChannels"]) {
        Some(v) => v.parse().map_err(|_| {
            err(
                path,
                format!("ElementNumberOfChannels = {v} is not a number"),
            )
        })?,
        None => 1,
    };
    if channels != 1 {
        return Err(err(
            path,
            format!("{channels} channels per voxel: only scalar (1-channel) images are supported"),
        ));
    }
    let scalar = scalar(
        path,
        get(&["ElementType"]).ok_or_else(|| err(path, "ElementType is missing"))?,
    )?;
    if boolean(path, "BinaryData", get(&["BinaryData"]))? == Some(false) {
        return Err(err(
            path,
            "ASCII data (BinaryData = False) are not supported",
        ));
    }
    let big_endian = boolean(
        path,
        "BinaryDataByteOrderMSB",
        get(&["BinaryDataByteOrderMSB", "ElementByteOrderMSB"]),
    )?
    .unwrap_or(false);
    let compressed = boolean(path, "CompressedData", get(&["CompressedData"]))?.unwrap_or(false);
    let spacing: Vec<f64> = match get(&["ElementSpacing", "ElementSize"]) {
        Some(v) => numbers(path, "ElementSpacing", v, ndims)?,
        None => vec![1.0; ndims],
    };
    let origin: Vec<f64> = match get(&["Offset", "Position", "Origin"]) {
        Some(v) => numbers(path, "Offset", v, ndims)?,
        None => vec![0.0; ndims],
    };
    let matrix: Vec<f64> = match get(&["TransformMatrix", "Rotation", "Orientation"]) {
        Some(v) => numbers(path, "TransformMatrix", v, ndims * ndims)?,
        None => (0..ndims * ndims)
            .map(|i| if i % (ndims + 1) == 0 { 1.0 } else { 0.0 })
            .collect(),
    };
    if spacing
        .iter()
        .chain(&origin)
        .chain(&matrix)
        .any(|v| !v.is_finite())
    {
        return Err(err(
            path,
            "ElementSpacing, Offset or TransformMatrix is not finite",
        ));
    }
    let header_size: i64 = match get(&["HeaderSize"]) {
        Some(v) => v
            .parse()
            .map_err(|_| err(path, format!("HeaderSize = {v} is not a number")))?,
        None => 0,
    };
    let data_name = get(&["ElementDataFile"]).unwrap_or_default();
    let data_file = if data_name.eq_ignore_ascii_case("LOCAL") {
        None
    } else if data_name.eq_ignore_ascii_case("LIST") || data_name.contains(char::is_whitespace) {
        return Err(err(
            path,
            format!("ElementDataFile = {data_name}: file lists and patterns are not supported"),
        ));
    } else {
        let p = Path::new(data_name);
        Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            path.parent().unwrap_or(Path::new("")).join(p)
        })
    };
    let mut shape = [1usize; 3];
    shape[..ndims].copy_from_slice(&dims);
    // ITK: LPS physical space, direction stored column-wise.
    let mut affine = [[0.0; 4]; 4];
    for r in 0..ndims {
        let flip = if r < 2 { -1.0 } else { 1.0 };
        for c in 0..ndims {
            affine[r][c] = flip * matrix[c * ndims + r] * spacing[c];
        }
        affine[r][3] = flip * origin[r];
    }
    for (d, row) in affine.iter_mut().enumerate().skip(ndims) {
        row[d] = 1.0;
    }
    Ok(Header {
        shape,
        scalar,
        big_endian,
        compressed,
        header_size,
        affine,
        data_file,
        data_start,
    })
}

fn check_index(path: &Path, volume_index: usize) -> Result<()> {
    if volume_index > 0 {
        return Err(DataError::option(
            "volume_index",
            format!(
                "{} holds one volume, index {volume_index} is out of range",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Shape and affine from the header alone.
pub(crate) fn metaimage_geometry(path: &Path, volume_index: usize) -> Result<([usize; 3], Affine)> {
    let h = parse(path, &read_prefix(path, false, HEADER_LIMIT)?)?;
    check_index(path, volume_index)?;
    sample_count(path, FORMAT, &h.shape, h.scalar.size())?;
    Ok((h.shape, h.affine))
}

/// Read a MetaImage volume (see the module docs).
pub(crate) fn read_metaimage(path: &Path, volume_index: usize) -> Result<LoadedVolume> {
    check_index(path, volume_index)?;
    let file = read_file(path)?;
    let h = parse(path, &file)?;
    let size = h.scalar.size();
    let n = sample_count(path, FORMAT, &h.shape, size)?;
    let want = n * size;
    let (data_path, stored): (PathBuf, Vec<u8>) = match &h.data_file {
        None => (
            path.to_path_buf(),
            file.get(h.data_start..).unwrap_or_default().to_vec(),
        ),
        Some(p) => (p.clone(), {
            let all = std::fs::read(p).map_err(|e| {
                DataError::io(p, "read the MetaImage data file (ElementDataFile)", e)
            })?;
            match h.header_size {
                -1 if !h.compressed => all
                    .get(all.len().saturating_sub(want)..)
                    .unwrap_or_default()
                    .to_vec(),
                s if s > 0 => all
                    .get(usize::try_from(s).unwrap_or(usize::MAX)..)
                    .unwrap_or_default()
                    .to_vec(),
                _ => all,
            }
        }),
    };
    let data = if h.compressed {
        inflate(&data_path, FORMAT, &stored, Compression::Zlib, want)?
    } else {
        stored
    };
    let samples = decode(
        &data_path,
        FORMAT,
        &data,
        h.scalar,
        h.big_endian,
        0,
        n,
        |v| v,
    )?;
    Ok(LoadedVolume {
        volume: Volume {
            data: fortran_array(path, FORMAT, h.shape, samples)?,
            affine: h.affine,
        },
        source: path.to_path_buf(),
        modality: None,
        warnings: Vec::new(),
    })
}
