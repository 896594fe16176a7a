//! The volume formats beyond NIfTI-1 (`segdiff_data::volume_formats`):
//! * every fixture of `tests/fixtures/volume_formats` (NIfTI-2, NIfTI-1 pair, Analyze 7.5,
//!   MetaImage, NRRD; made by `make_fixtures.py`) against what nibabel / SimpleITK / pynrrd
//!   report: shape, voxel → RAS+ affine (≤ 1e-9), voxels (exact for integer types, ≤ 1e-6
//!   relative for float types);
//! * malformed files give a `DataError` naming the file, never a panic;
//! * `prepare` on a MetaImage image + NRRD labels makes the same dataset as the same volumes
//!   written as NIfTI.

mod common;

use std::path::{Path, PathBuf};

use common::fixtures;
use ndarray::{Array3, Axis};
use segdiff_data::synthetic::{phantom, write_nifti_i16, write_nifti_u8};
use segdiff_data::{
    is_volume_file, prepare, read_manifest, read_volume_file, read_volume_geometry, Affine,
    InputSpec, Intensity, LabelMapping, PrepareOptions, Progress, SliceAxis, Volume,
};

fn dir() -> PathBuf {
    fixtures().join("volume_formats")
}

fn cases() -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<(String, serde_json::Value)> = std::fs::read_dir(dir())
        .expect("fixture folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn affine_of(v: &serde_json::Value) -> Affine {
    let mut a = [[0.0; 4]; 4];
    for (r, row) in a.iter_mut().enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            *x = v[r][c].as_f64().unwrap();
        }
    }
    a
}

fn max_abs(a: &Affine, b: &Affine) -> f64 {
    let mut m = 0.0f64;
    for r in 0..4 {
        for c in 0..4 {
            m = m.max((a[r][c] - b[r][c]).abs());
        }
    }
    m
}

#[test]
fn every_fixture_matches_its_oracle() {
    let cases = cases();
    assert!(cases.len() >= 20, "only {} fixtures found", cases.len());
    let prefixes = ["n2_", "an_", "ni1pair_", "mi_", "nr_"];
    for p in prefixes {
        assert!(
            cases.iter().any(|(n, _)| n.starts_with(p)),
            "no {p} fixture"
        );
    }
    for (name, exp) in &cases {
        let files: Vec<PathBuf> = exp["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| dir().join(f.as_str().unwrap()))
            .collect();
        let shape: Vec<usize> = exp["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let affine = affine_of(&exp["affine"]);
        let values: Vec<f64> = exp["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let float = name.ends_with("f32") || name.ends_with("f64");
        // A pair is read through either of its files.
        let entries: Vec<&PathBuf> = if name.starts_with("an_") || name.starts_with("ni1pair") {
            files.iter().collect()
        } else {
            vec![&files[0]]
        };
        for path in entries {
            assert!(is_volume_file(path), "{}", path.display());
            let v = read_volume_file(path, 0)
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", path.display()));
            assert_eq!(v.volume.shape().to_vec(), shape, "{name}");
            let da = max_abs(&v.volume.affine, &affine);
            assert!(
                da <= 1e-9,
                "{name}: affine off by {da:e}: {:?} vs {affine:?}",
                v.volume.affine
            );
            let (gshape, gaff) = read_volume_geometry(path, 0).unwrap();
            assert_eq!(gshape.to_vec(), shape, "{name}: geometry shape");
            assert!(max_abs(&gaff, &affine) <= 1e-9, "{name}: geometry affine");
            let [_, ny, nz] = v.volume.shape();
            let mut worst = 0.0f64;
            for ((i, j, k), &got) in v.volume.data.indexed_iter() {
                let want = values[(i * ny + j) * nz + k];
                if float {
                    let rel = (f64::from(got) - want).abs() / want.abs().max(1e-30);
                    worst = worst.max(rel);
                } else {
                    assert_eq!(f64::from(got), want, "{name}: voxel {i},{j},{k}");
                }
            }
            assert!(worst <= 1e-6, "{name}: relative error {worst:e}");
            println!(
                "{name} ({}): affine max err {da:.1e}, voxel max rel err {worst:.1e}, oracle {}",
                path.file_name().unwrap().to_string_lossy(),
                exp["oracle"]
            );
        }
    }
}

/// Reads `path` and `read_volume_geometry`, expecting both to fail naming `names`' file.
fn assert_fails(path: &Path, names: &str, what: &str) {
    let e = read_volume_file(path, 0)
        .err()
        .unwrap_or_else(|| panic!("{what}: {} was read", path.display()));
    let msg = format!("{e}");
    assert!(msg.contains(names), "{what}: `{msg}` does not name {names}");
    println!("{what}: {msg}");
}

fn copy_fixture(tmp: &Path, name: &str) -> PathBuf {
    let to = tmp.join(name);
    std::fs::copy(dir().join(name), &to).unwrap();
    to
}

fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn malformed_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let nii2 = std::fs::read(dir().join("n2_sform_i16.nii")).unwrap();

    // NIfTI-2: truncated header, short data, bad magic, complex data type, absurd dims.
    let p = t.join("trunc.nii");
    std::fs::write(&p, &nii2[..300]).unwrap();
    assert_fails(&p, "trunc.nii", "truncated NIfTI-2 header");
    let p = t.join("short.nii");
    std::fs::write(&p, &nii2[..nii2.len() - 10]).unwrap();
    assert_fails(&p, "short.nii", "NIfTI-2 data shorter than dims");
    let p = t.join("magic.nii");
    let mut b = nii2.clone();
    b[4..8].copy_from_slice(b"n+1\0");
    std::fs::write(&p, &b).unwrap();
    assert_fails(&p, "magic.nii", "NIfTI-2 bad magic");
    let p = t.join("complex.nii");
    let mut b = nii2.clone();
    b[12..14].copy_from_slice(&32i16.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert_fails(&p, "complex.nii", "NIfTI-2 complex data type");
    let p = t.join("huge.nii");
    let mut b = nii2.clone();
    for d in 1..4 {
        b[16 + 8 * d..24 + 8 * d].copy_from_slice(&(1i64 << 40).to_le_bytes());
    }
    std::fs::write(&p, &b).unwrap();
    assert_fails(&p, "huge.nii", "NIfTI-2 dims overflow");
    assert!(read_volume_geometry(&p, 0).is_err());

    // Analyze / NIfTI-1 pair: missing .img, truncated .hdr, garbage magic.
    let h = copy_fixture(t, "an_i16.hdr");
    assert_fails(&h, "an_i16.img", "missing .img");
    let p = t.join("cut.hdr");
    std::fs::write(&p, &std::fs::read(&h).unwrap()[..100]).unwrap();
    std::fs::write(t.join("cut.img"), [0u8; 120]).unwrap();
    assert_fails(&p, "cut.hdr", "truncated .hdr");
    let p = t.join("odd.hdr");
    let mut b = std::fs::read(&h).unwrap();
    b[344..348].copy_from_slice(b"xyz\0");
    std::fs::write(&p, &b).unwrap();
    std::fs::write(t.join("odd.img"), [0u8; 120]).unwrap();
    assert_fails(&p, "odd.hdr", "bad pair magic");
    let p = t.join("small.hdr");
    std::fs::copy(&h, &p).unwrap();
    std::fs::write(t.join("small.img"), [0u8; 119]).unwrap();
    assert_fails(&p, "small.img", "Analyze data shorter than dims");

    // MetaImage: truncated header, short data, unknown type, >1 channel, missing data file.
    let mha = std::fs::read(dir().join("mi_rot_i16.mha")).unwrap();
    let text_end = mha
        .windows(15)
        .position(|w| w == b"ElementDataFile")
        .unwrap();
    let p = t.join("head.mha");
    std::fs::write(&p, &mha[..text_end]).unwrap();
    assert_fails(&p, "head.mha", "truncated MetaImage header");
    let p = t.join("short.mha");
    std::fs::write(&p, &mha[..mha.len() - 3]).unwrap();
    assert_fails(&p, "short.mha", "MetaImage data shorter than DimSize");
    let text = String::from_utf8_lossy(&mha[..text_end]).into_owned();
    let with = |name: &str, head: String, data: &[u8]| {
        let p = t.join(name);
        let mut b = head.into_bytes();
        b.extend_from_slice(b"ElementDataFile = LOCAL\n");
        b.extend_from_slice(data);
        std::fs::write(&p, b).unwrap();
        p
    };
    let data = &mha[mha.len() - 120..];
    let p = with("type.mha", text.replace("MET_SHORT", "MET_FOO"), data);
    assert_fails(&p, "type.mha", "unknown MetaImage ElementType");
    let p = with(
        "rgb.mha",
        format!("{text}ElementNumberOfChannels = 3\n"),
        data,
    );
    assert_fails(&p, "rgb.mha", "3-channel MetaImage");
    let p = with(
        "big.mha",
        text.replace("DimSize = 5 4 3", "DimSize = 100000 100000 100000"),
        data,
    );
    assert_fails(&p, "big.mha", "absurd DimSize");
    let p = with(
        "zlib.mha",
        text.replace("CompressedData = False", "CompressedData = True"),
        b"not zlib at all",
    );
    assert_fails(&p, "zlib.mha", "broken zlib stream");
    let p = t.join("lost.mhd");
    std::fs::write(
        &p,
        "NDims = 3\nDimSize = 5 4 3\nElementType = MET_UCHAR\nElementDataFile = lost.raw\n",
    )
    .unwrap();
    assert_fails(&p, "lost.raw", "missing MetaImage data file");

    // NRRD: bad magic, unknown type, bzip2, short data, missing detached file, none axes.
    let nrrd = std::fs::read(dir().join("nr_ras_i16.nrrd")).unwrap();
    let blank = nrrd.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let head = String::from_utf8_lossy(&nrrd[..blank]).into_owned();
    let body = &nrrd[blank..];
    let with = |name: &str, head: String, data: &[u8]| {
        let p = t.join(name);
        let mut b = head.into_bytes();
        b.extend_from_slice(data);
        std::fs::write(&p, b).unwrap();
        p
    };
    let p = with("magic.nrrd", head.replacen("NRRD", "NRRX", 1), body);
    assert_fails(&p, "magic.nrrd", "NRRD bad magic");
    let p = with(
        "block.nrrd",
        head.replace("type: int16", "type: block"),
        body,
    );
    assert_fails(&p, "block.nrrd", "NRRD block type");
    let p = with(
        "bz.nrrd",
        head.replace("encoding: raw", "encoding: bzip2"),
        body,
    );
    assert_fails(&p, "bz.nrrd", "NRRD bzip2");
    let p = with("short.nrrd", head.clone(), &body[..body.len() - 1]);
    assert_fails(&p, "short.nrrd", "NRRD data shorter than sizes");
    let p = with(
        "huge.nrrd",
        head.replace("sizes: 5 4 3", "sizes: 4294967296 4294967296 4294967296"),
        body,
    );
    assert_fails(&p, "huge.nrrd", "NRRD sizes overflow");
    let p = with(
        "unnamed.nrrd",
        head.replace("space: right-anterior-superior\n", ""),
        body,
    );
    assert_fails(&p, "unnamed.nrrd", "NRRD directions without space");
    let p = with(
        "lost.nhdr",
        format!("{}data file: gone.raw\n\n", &head[..head.len() - 1]),
        b"",
    );
    assert_fails(&p, "gone.raw", "missing NRRD data file");
    let p = with(
        "gz.nrrd",
        head.replace("encoding: raw", "encoding: gzip"),
        b"not gzip",
    );
    assert_fails(&p, "gz.nrrd", "broken gzip stream");

    // Every fixture cut short at every tenth byte: an error or a volume, never a panic.
    for (name, exp) in cases() {
        let first = exp["files"][0].as_str().unwrap().to_string();
        let src = dir().join(&first);
        let bytes = if first.ends_with(".gz") {
            gunzip(&src)
        } else {
            std::fs::read(&src).unwrap()
        };
        let plain = first.trim_end_matches(".gz");
        let p = t.join(format!("cut_{plain}"));
        for n in (0..bytes.len()).step_by(10) {
            std::fs::write(&p, &bytes[..n]).unwrap();
            if let Err(e) = read_volume_file(&p, 0) {
                assert!(!e.to_string().is_empty(), "{name}");
            }
            let _ = read_volume_geometry(&p, 0);
        }
    }
}

#[test]
fn volume_index_selects_the_4d_volume_and_is_checked() {
    let p = dir().join("nr_4d_f64.nrrd");
    assert!(read_volume_file(&p, 0).is_ok());
    let e = read_volume_file(&p, 1).unwrap_err().to_string();
    assert!(e.contains("nr_4d_f64.nrrd"), "{e}");
    let e = read_volume_file(&dir().join("mi_u8.mha"), 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mi_u8.mha"), "{e}");
}

/// Voxel → LPS affine split ITK's way: spacing, column-unit direction, origin.
fn itk_geometry(a: &Affine) -> ([f64; 3], [[f64; 3]; 3], [f64; 3]) {
    let flip = [-1.0, -1.0, 1.0];
    let mut spacing = [0.0; 3];
    let mut dir = [[0.0; 3]; 3];
    for c in 0..3 {
        spacing[c] = (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt();
        for r in 0..3 {
            dir[r][c] = flip[r] * a[r][c] / spacing[c];
        }
    }
    let origin = [0, 1, 2].map(|r| flip[r] * a[r][3]);
    (spacing, dir, origin)
}

fn fortran_bytes<T: Copy>(data: &Array3<T>, mut put: impl FnMut(T, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..data.len_of(Axis(2)) {
        for j in 0..data.len_of(Axis(1)) {
            for i in 0..data.len_of(Axis(0)) {
                put(data[[i, j, k]], &mut out);
            }
        }
    }
    out
}

fn write_mha_i16(path: &Path, v: &Volume<i16>) {
    let (s, d, o) = itk_geometry(&v.affine);
    let sh = v.data.shape();
    // Column-wise, as ITK writes TransformMatrix.
    let tm: Vec<String> = (0..9).map(|n| format!("{}", d[n % 3][n / 3])).collect();
    let head = format!(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = True\n\
         CompressedData = False\nTransformMatrix = {}\nOffset = {} {} {}\n\
         ElementSpacing = {} {} {}\nDimSize = {} {} {}\nElementType = MET_SHORT\n\
         ElementDataFile = LOCAL\n",
        tm.join(" "),
        o[0],
        o[1],
        o[2],
        s[0],
        s[1],
        s[2],
        sh[0],
        sh[1],
        sh[2]
    );
    let mut b = head.into_bytes();
    b.extend(fortran_bytes(&v.data, |x, o| o.extend(x.to_be_bytes())));
    std::fs::write(path, b).unwrap();
}

fn write_nrrd_u8_gz(path: &Path, v: &Volume<u8>) {
    use std::io::Write;
    let a = v.affine;
    let sh = v.data.shape();
    let col = |c: usize| format!("({},{},{})", a[0][c], a[1][c], a[2][c]);
    let head = format!(
        "NRRD0004\n# written by the segdiff tests\ntype: uint8\ndimension: 3\n\
         space: right-anterior-superior\nsizes: {} {} {}\nspace directions: {} {} {}\n\
         kinds: domain domain domain\nencoding: gzip\nspace origin: ({},{},{})\n\n",
        sh[0],
        sh[1],
        sh[2],
        col(0),
        col(1),
        col(2),
        a[0][3],
        a[1][3],
        a[2][3]
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&fortran_bytes(&v.data, |x, o| o.push(x)))
        .unwrap();
    let mut b = head.into_bytes();
    b.extend(gz.finish().unwrap());
    std::fs::write(path, b).unwrap();
}

fn run_prepare(image: PathBuf, label: PathBuf, out: &Path) {
    let labels = LabelMapping::parse("1=organ,2=cyst,3=bone", true, None).unwrap();
    let mut opts = PrepareOptions::new(
        vec![InputSpec {
            image,
            label: Some(label),
            ..Default::default()
        }],
        out,
        labels,
    );
    opts.axes = SliceAxis::ALL.to_vec();
    opts.size = 32;
    opts.intensity = Intensity::parse("ct:abdomen").unwrap();
    opts.seed = 5;
    opts.command = "segdiff prepare --test".into();
    prepare(&opts, &|_: &Progress| {}).unwrap();
}

#[test]
fn prepare_reads_metaimage_and_nrrd_like_nifti() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, lab) = phantom([24, 20, 12], [1.5, 1.0, 2.5]);
    // An oblique-free but permuted and flipped grid with a shifted origin.
    let affine = [
        [0.0, -1.0, 0.0, 12.0],
        [0.0, 0.0, 2.5, -8.0],
        [1.5, 0.0, 0.0, 3.5],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let img = Volume {
        data: img.data.mapv(|x| x.round() as i16),
        affine,
    };
    let lab = Volume {
        data: lab.data,
        affine,
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    write_nifti_i16(&a.join("case.nii.gz"), &img).unwrap();
    write_nifti_u8(&a.join("case_seg.nii.gz"), &lab).unwrap();
    write_mha_i16(&b.join("case.mha"), &img);
    write_nrrd_u8_gz(&b.join("case_seg.nrrd"), &lab);
    let mha = read_volume_file(&b.join("case.mha"), 0).unwrap();
    assert_eq!(mha.volume.data, img.data.mapv(f32::from));
    assert!(max_abs(&mha.volume.affine, &affine) < 1e-12);

    let (out_a, out_b) = (tmp.path().join("out_a"), tmp.path().join("out_b"));
    run_prepare(a.join("case.nii.gz"), a.join("case_seg.nii.gz"), &out_a);
    run_prepare(b.join("case.mha"), b.join("case_seg.nrrd"), &out_b);
    let ra = read_manifest(&out_a.join("manifest.csv")).unwrap();
    let rb = read_manifest(&out_b.join("manifest.csv")).unwrap();
    assert_eq!(ra.len(), 24 + 20 + 12);
    assert_eq!(ra.len(), rb.len());
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(
            (
                &x.file,
                x.split,
                &x.volume_id,
                x.axis,
                x.slice_index,
                &x.intensity
            ),
            (
                &y.file,
                y.split,
                &y.volume_id,
                y.axis,
                y.slice_index,
                &y.intensity
            )
        );
        for f in [x.file.clone(), x.file.replacen("img/", "mask/all/", 1)] {
            let (pa, pb) = (out_a.join(&f), out_b.join(&f));
            assert_eq!(
                std::fs::read(&pa).unwrap(),
                std::fs::read(&pb).unwrap(),
                "{f} differs"
            );
        }
    }
}

#[test]
fn label_volumes_read_every_format_and_only_nifti1_is_a_header_reference() {
    let mapping = LabelMapping::parse("1=a,2=b", false, None).unwrap();
    for f in [
        "mi_u8.mha",
        "nr_spacings_i8.nrrd",
        "an_i16.hdr",
        "n2_noform_u8.nii",
    ] {
        let p = dir().join(f);
        let l = segdiff_data::read_label_volume(&p, &mapping, None)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let raw = read_volume_file(&p, 0).unwrap();
        assert_eq!(l.classes.affine, raw.volume.affine, "{f}");
        let want = raw
            .volume
            .data
            .mapv(|v| if v == 1.0 || v == 2.0 { v as u8 } else { 0 });
        assert_eq!(l.classes.data, want, "{f}");
        assert!(!segdiff_data::volume_slices::is_nifti_path(&p), "{f}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("one.nii.gz");
    let (_, lab) = phantom([4, 4, 4], [1.0, 1.0, 1.0]);
    write_nifti_u8(&p, &lab).unwrap();
    assert!(segdiff_data::volume_slices::is_nifti_path(&p));
}
