//! NRRD (`.nrrd` with attached data, `.nhdr` + the `data file` it names) → volume.
//!
//! Orientation as ITK / SimpleITK and pynrrd read it: axis `a`'s `space directions` vector is
//! column `a` of the affine and `space origin` its translation, in the named space, then mapped
//! to RAS+: `right-anterior-superior` (RAS) as is, `left-anterior-superior` (LAS) x negated,
//! `left-posterior-superior` (LPS) x and y negated; `scanner-xyz` and `3D-right-handed` are taken
//! as LPS, as ITK takes them. Without space information the grid is ITK's: identity direction in
//! LPS with `spacings` (NaN or missing: 1), origin 0 — voxel → RAS `diag(−s0, −s1, s2)`.
//! Read: `dimension` 3, or 4 with exactly one non-spatial axis (`none` direction) from which
//! `volume_index` picks one volume; every scalar `type`; `endian`; encodings raw, gzip and ascii;
//! `line skip`, `byte skip`. Refused with an error: bzip2 and hex encodings, `block` type,
//! time or unnamed spaces, non-3-D spaces, file lists and patterns as `data file`.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::volume::{Affine, Volume};

use super::voxel_data::{
    decode, format_err, fortran_array, inflate, read_file, read_prefix, sample_count, Compression,
    Scalar,
};

const FORMAT: &str = "NRRD";
/// Longest header read when only the geometry is wanted.
const HEADER_LIMIT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Raw,
    Gzip,
    Ascii,
}

#[derive(Clone, Debug)]
struct Header {
    scalar: Scalar,
    big_endian: bool,
    encoding: Encoding,
    sizes: Vec<usize>,
    /// The three spatial axes, in voxel-index order.
    spatial: [usize; 3],
    /// The non-spatial axis of a 4-D file.
    extra: Option<usize>,
    affine: Affine,
    data_file: Option<PathBuf>,
    data_start: usize,
    line_skip: usize,
    byte_skip: i64,
}

fn err(path: &Path, detail: impl Into<String>) -> DataError {
    format_err(path, FORMAT, detail)
}

fn scalar(path: &Path, t: &str) -> Result<Scalar> {
    Ok(match t {
        "signed char" | "int8" | "int8_t" => Scalar::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => Scalar::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            Scalar::I16
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => Scalar::U16,
        "int" | "signed int" | "int32" | "int32_t" => Scalar::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => Scalar::U32,
        "longlong"
        | "long long"
        | "long long int"
        | "signed long long"
        | "signed long long int"
        | "int64"
        | "int64_t" => Scalar::I64,
        "ulonglong" | "unsigned long long" | "unsigned long long int" | "uint64" | "uint64_t" => {
            Scalar::U64
        }
        "float" => Scalar::F32,
        "double" => Scalar::F64,
        _ => {
            return Err(err(
                path,
                format!("type `{t}` is not supported (integer and real scalar types only)"),
            ))
        }
    })
}

/// `(x,y,z)` vectors and `none` of a `space directions` / `space origin` value.
fn vectors(path: &Path, key: &str, value: &str) -> Result<Vec<Option<Vec<f64>>>> {
    let bad = || {
        err(
            path,
            format!("{key}: `{value}` is not a list of (x,y,z) vectors"),
        )
    };
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("none") {
            out.push(None);
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix('(') {
            let end = r.find(')').ok_or_else(bad)?;
            let v: Vec<f64> = r
                .get(..end)
                .unwrap_or_default()
                .split(',')
                .map(|t| t.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad())?;
            out.push(Some(v));
            rest = r.get(end + 1..).unwrap_or_default().trim_start();
        } else {
            return Err(bad());
        }
    }
    Ok(out)
}

/// Row signs taking the named space to RAS.
fn space_to_ras(path: &Path, space: &str) -> Result<[f64; 3]> {
    Ok(match space.to_ascii_lowercase().as_str() {
        "right-anterior-superior" | "ras" => [1.0, 1.0, 1.0],
        "left-anterior-superior" | "las" => [-1.0, 1.0, 1.0],
        "left-posterior-superior" | "lps" | "scanner-xyz" | "3d-right-handed" => [-1.0, -1.0, 1.0],
        _ => {
            return Err(err(
                path,
                format!(
                    "space `{space}` is not supported (RAS, LAS, LPS, scanner-xyz, 3D-right-handed)"
                ),
            ))
        }
    })
}

/// Header fields (lower-case names) and where the attached data start.
fn header_fields(path: &Path, bytes: &[u8]) -> Result<(Vec<(String, String)>, usize)> {
    if !bytes.starts_with(b"NRRD") {
        return Err(err(
            path,
            "the file does not start with the NRRD magic `NRRD000x`",
        ));
    }
    let mut fields = Vec::new();
    let mut pos = 0usize;
    let mut first = true;
    while pos < bytes.len() {
        let rest = bytes.get(pos..).unwrap_or_default();
        let (line, next) = match rest.iter().position(|&c| c == b'\n') {
            Some(n) => (rest.get(..n).unwrap_or_default(), pos + n + 1),
            None => (rest, bytes.len()),
        };
        pos = next;
        let text = std::str::from_utf8(line)
            .map_err(|_| {
                err(
                    path,
                    "a header line is not text (no blank line before the data?)",
                )
            })?
            .trim_end_matches('\r');
        if first {
            first = false;
            continue;
        }
        if text.is_empty() {
            return Ok((fields, pos));
        }
        if text.starts_with('#') || text.contains(":=") {
            continue;
        }
        let (k, v) = text
            .split_once(": ")
            .ok_or_else(|| err(path, format!("header line `{text}` is not `field: value`")))?;
        fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok((fields, bytes.len()))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let (fields, data_start) = header_fields(path, bytes)?;
    let get = |names: &[&str]| {
        fields
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    };
    let need =
        |name: &str| get(&[name]).ok_or_else(|| err(path, format!("field `{name}` is missing")));
    let scalar = scalar(path, need("type")?)?;
    let dimension: usize = need("dimension")?
        .parse()
        .map_err(|_| err(path, "dimension is not a number"))?;
    let sizes: Vec<usize> = need("sizes")?
        .split_whitespace()
        .map(|t| t.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| err(path, "sizes are not numbers"))?;
    if sizes.len() != dimension {
        return Err(err(
            path,
            format!("dimension {dimension} but {} sizes", sizes.len()),
        ));
    }
    let encoding = match need("encoding")?.to_ascii_lowercase().as_str() {
        "raw" => Encoding::Raw,
        "gzip" | "gz" => Encoding::Gzip,
        "ascii" | "text" | "txt" => Encoding::Ascii,
        e => {
            return Err(err(
                path,
                format!("encoding `{e}` is not supported (raw, gzip, ascii)"),
            ))
        }
    };
    let big_endian = match get(&["endian"]) {
        Some("big") => true,
        Some("little") => false,
        None if scalar.size() == 1 || encoding == Encoding::Ascii => false,
        None => return Err(err(path, "field `endian` is missing for a multi-byte type")),
        Some(e) => return Err(err(path, format!("endian `{e}` is not little or big"))),
    };
    let (spatial, extra, affine) = match get(&["space directions"]) {
        Some(d) => {
            let space = get(&["space"]).ok_or_else(|| {
                err(
                    path,
                    "space directions without a named `space`: the orientation is unknown",
                )
            })?;
            let signs = space_to_ras(path, space)?;
            let dirs = vectors(path, "space directions", d)?;
            if dirs.len() != dimension {
                return Err(err(
                    path,
                    format!("dimension {dimension} but {} space directions", dirs.len()),
                ));
            }
            let spatial: Vec<usize> = (0..dimension).filter(|&a| dirs[a].is_some()).collect();
            let extra: Vec<usize> = (0..dimension).filter(|&a| dirs[a].is_none()).collect();
            if spatial.len() != 3 || extra.len() > 1 {
                return Err(err(
                    path,
                    format!(
                        "{} spatial and {} non-spatial axes: 3 spatial axes and at most one other \
                         are supported",
                        spatial.len(),
                        extra.len()
                    ),
                ));
            }
            let origin = match get(&["space origin"]) {
                Some(o) => match vectors(path, "space origin", o)?.as_slice() {
                    [Some(v)] if v.len() == 3 => v.clone(),
                    _ => {
                        return Err(err(
                            path,
                            format!("space origin `{o}` is not one (x,y,z) vector"),
                        ))
                    }
                },
                None => vec![0.0; 3],
            };
            let mut a = [[0.0; 4]; 4];
            for (c, &axis) in spatial.iter().enumerate() {
                let v = dirs[axis].as_deref().unwrap_or_default();
                if v.len() != 3 || v.iter().any(|x| !x.is_finite()) {
                    return Err(err(
                        path,
                        format!("space direction of axis {axis} is not a finite 3-vector"),
                    ));
                }
                for r in 0..3 {
                    a[r][c] = signs[r] * v[r];
                }
            }
            if origin.iter().any(|x| !x.is_finite()) {
                return Err(err(path, "space origin is not finite"));
            }
            for r in 0..3 {
                a[r][3] = signs[r] * origin[r];
            }
            a[3][3] = 1.0;
            (
                [spatial[0], spatial[1], spatial[2]],
                extra.first().copied(),
                a,
            )
        }
        None => {
            if get(&["space", "space dimension"]).is_some() {
                return Err(err(
                    path,
                    "a space is named but there are no space directions",
                ));
            }
            if dimension != 3 {
                return Err(err(
                    path,
                    format!(
                        "dimension {dimension} without space directions: only 3-D is supported"
                    ),
                ));
            }
            let mut s = [1.0f64; 3];
            if let Some(sp) = get(&["spacings"]) {
                for (i, t) in sp.split_whitespace().take(3).enumerate() {
                    let v: f64 = t
                        .parse()
                        .map_err(|_| err(path, format!("spacings `{sp}` are not numbers")))?;
                    s[i] = if v.is_finite() { v } else { 1.0 };
                }
            }
            let mut a = [[0.0; 4]; 4];
            a[0][0] = -s[0];
            a[1][1] = -s[1];
            a[2][2] = s[2];
            a[3][3] = 1.0;
            ([0, 1, 2], None, a)
        }
    };
    let data_file = match get(&["data file", "datafile"]) {
        None => None,
        Some(f) if f.contains(char::is_whitespace) || f.starts_with("LIST") => {
            return Err(err(
                path,
                format!("data file `{f}`: file lists and patterns are not supported"),
            ))
        }
        Some(f) => {
            let p = Path::new(f);
            Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new("")).join(p)
            })
        }
    };
    let line_skip = match get(&["line skip", "lineskip"]) {
        Some(v) => v
            .parse()
            .map_err(|_| err(path, format!("line skip `{v}` is not a number")))?,
        None => 0,
    };
    let byte_skip = match get(&["byte skip", "byteskip"]) {
        Some(v) => v
            .parse()
            .map_err(|_| err(path, format!("byte skip `{v}` is not a number")))?,
        None => 0,
    };
    if byte_skip < -1 || (byte_skip == -1 && encoding != Encoding::Raw) {
        return Err(err(
            path,
            format!("byte skip {byte_skip} is not supported with this encoding"),
        ));
    }
    Ok(Header {
        scalar,
        big_endian,
        encoding,
        sizes,
        spatial,
        extra,
        affine,
        data_file,
        data_start,
        line_skip,
        byte_skip,
    })
}

impl Header {
    fn shape(&self) -> [usize; 3] {
        self.spatial
            .map(|a| self.sizes.get(a).copied().unwrap_or(1))
    }

    fn check(&self, path: &Path, volume_index: usize) -> Result<usize> {
        let total = sample_count(path, FORMAT, &self.sizes, self.scalar.size())?;
        let n4 = self
            .extra
            .and_then(|a| self.sizes.get(a).copied())
            .unwrap_or(1);
        super::check_volume_index(path, n4, volume_index)?;
        Ok(total)
    }
}

/// Shape and affine from the header alone.
pub(crate) fn nrrd_geometry(path: &Path, volume_index: usize) -> Result<([usize; 3], Affine)> {
    let h = parse(path, &read_prefix(path, false, HEADER_LIMIT)?)?;
    h.check(path, volume_index)?;
    Ok((h.shape(), h.affine))
}

/// Read a NRRD volume (see the module docs).
pub(crate) fn read_nrrd(path: &Path, volume_index: usize) -> Result<LoadedVolume> {
    let file = read_file(path)?;
    let h = parse(path, &file)?;
    let total = h.check(path, volume_index)?;
    let (data_path, mut stored) = match &h.data_file {
        None => (
            path.to_path_buf(),
            file.get(h.data_start..).unwrap_or_default(),
        ),
        Some(p) => (p.clone(), &[][..]),
    };
    let detached;
    if let Some(p) = &h.data_file {
        detached = std::fs::read(p)
            .map_err(|e| DataError::io(p, "read the NRRD data file (`data file`)", e))?;
        stored = &detached;
    }
    for _ in 0..h.line_skip {
        let n = stored
            .iter()
            .position(|&c| c == b'\n')
            .map_or(stored.len(), |n| n + 1);
        stored = stored.get(n..).unwrap_or_default();
    }
    let size = h.scalar.size();
    let want = total * size;
    let skip = usize::try_from(h.byte_skip.max(0)).unwrap_or(usize::MAX);
    let samples: Vec<f32> = match h.encoding {
        Encoding::Ascii => {
            let text = String::from_utf8_lossy(stored);
            let v: Vec<f32> = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .take(total)
                .map(|t| t.parse::<f64>().map(|x| x as f32))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| err(&data_path, "ascii data hold a token that is not a number"))?;
            if v.len() != total {
                return Err(err(
                    &data_path,
                    format!(
                        "ascii data hold {} values, the header describes {total}",
                        v.len()
                    ),
                ));
            }
            v
        }
        Encoding::Raw | Encoding::Gzip => {
            let data = if h.encoding == Encoding::Gzip {
                let w = want
                    .checked_add(skip)
                    .ok_or_else(|| err(path, "byte skip overflows"))?;
                inflate(&data_path, FORMAT, stored, Compression::Gzip, w)?
            } else {
                stored.to_vec()
            };
            let from = if h.byte_skip == -1 {
                data.len().saturating_sub(want)
            } else {
                skip
            };
            decode(
                &data_path,
                FORMAT,
                data.get(from..).unwrap_or_default(),
                h.scalar,
                h.big_endian,
                0,
                total,
                |v| v,
            )?
        }
    };
    let shape = h.shape();
    let out = gather(&h, &samples, shape, volume_index);
    Ok(LoadedVolume {
        volume: Volume {
            data: fortran_array(path, FORMAT, shape, out)?,
            affine: h.affine,
        },
        source: path.to_path_buf(),
        modality: None,
        warnings: Vec::new(),
    })
}

/// The spatial volume `volume_index` in Fortran order, from all samples (axis 0 fastest).
fn gather(h: &Header, samples: &[f32], shape: [usize; 3], volume_index: usize) -> Vec<f32> {
    let mut stride = vec![1usize; h.sizes.len()];
    for a in 1..h.sizes.len() {
        stride[a] = stride[a - 1] * h.sizes[a - 1];
    }
    let st = h.spatial.map(|a| stride[a]);
    let base = h.extra.map_or(0, |a| volume_index * stride[a]);
    let mut out = Vec::with_capacity(shape[0] * shape[1] * shape[2]);
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let at = base + i * st[0] + j * st[1] + k * st[2];
                out.push(samples.get(at).copied().unwrap_or(f32::NAN));
            }
        }
    }
    out
}
