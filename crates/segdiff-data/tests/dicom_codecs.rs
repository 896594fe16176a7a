//! Every compressed transfer syntax segdiff decodes, on our own synthetic images
//! (`tests/fixtures/dicom_codecs`, built by its `make_fixtures.py` with pydicom 3.0.2, gdcm 3.2.6
//! and Pillow): pixel-exact against pydicom 3's `pixel_array` (pylibjpeg / gdcm plugins) and, for
//! lossless syntaxes, against the synthetic pixels; colour refused unless `to_grey`; damaged
//! copies never panic.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use common::*;
use segdiff_data::{
    read_dicom, read_dicom_pixels, read_dicom_pixels_with, scan_dicom, DataError, DicomReadOptions,
};
use serde_json::Value;

fn codec_dir() -> PathBuf {
    fixtures().join("dicom_codecs")
}

struct Fixtures {
    files: Vec<(String, Value)>,
    tensors: HashMap<String, Tensor>,
}

fn load() -> Fixtures {
    let dir = codec_dir();
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    let mut files: Vec<(String, Value)> = meta["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Fixtures {
        files,
        tensors: load_tensors(&dir.join("expected.safetensors")),
    }
}

fn ints(t: &Tensor) -> Vec<i32> {
    values_f64(t).into_iter().map(|v| v as i32).collect()
}

fn max_abs_diff(a: &[i32], b: &[i32]) -> i64 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (i64::from(x) - i64::from(y)).abs())
        .max()
        .unwrap_or(0)
}

/// sha256 of values in the dtype pydicom returned, little-endian.
fn sha_as(raw: &[i32], dtype: &str) -> String {
    let bytes: Vec<u8> = match dtype {
        "uint8" => raw.iter().map(|&v| v as u8).collect(),
        "int8" => raw.iter().map(|&v| v as i8 as u8).collect(),
        "int16" => raw.iter().flat_map(|&v| (v as i16).to_le_bytes()).collect(),
        "uint16" => raw.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
        other => panic!("unexpected dtype {other}"),
    };
    sha256_hex(&bytes)
}

fn is_colour(entry: &Value) -> bool {
    matches!(
        entry["photometric"].as_str(),
        Some("RGB" | "YBR_FULL" | "YBR_FULL_422")
    )
}

/// The largest difference from pydicom allowed for a lossy file, as measured: 0 wherever both
/// sides use the same decoder family exactly.
fn lossy_bound(file: &str) -> i64 {
    match file {
        // jpeg-decoder (Rust) and libjpeg 9 (pylibjpeg-libjpeg) use different IDCTs: measured
        // max 1 on these 8-bit fixtures.
        "mono8_jpeg_baseline.dcm" | "mono8_jpeg_extended.dcm" => 1,
        // YBR_FULL_422 JPEG: to_grey takes the Y sample as jpeg-decoder decodes it: measured
        // max 1 against pydicom's Y (the IDCT difference).
        "rgb8_jpeg_baseline.dcm" => 1,
        _ => 0,
    }
}

#[test]
fn every_syntax_decodes_like_pydicom() {
    let fx = load();
    let mut checked = 0;
    for (file, entry) in &fx.files {
        let Some(image) = entry["image"].as_str() else {
            continue;
        };
        if is_colour(entry) {
            continue;
        }
        let path = codec_dir().join(file);
        let px = read_dicom_pixels(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let frames = if shape.len() == 3 { shape[0] } else { 1 };
        assert_eq!(
            (px.frames, px.rows, px.cols),
            (frames, shape[shape.len() - 2], shape[shape.len() - 1]),
            "{file}: shape"
        );
        let source = ints(&fx.tensors[&format!("src_{image}")]);
        if entry["lossless"].as_bool().unwrap() {
            assert_eq!(
                sha_as(&px.raw, entry["dtype"].as_str().unwrap()),
                entry["array_sha256"].as_str().unwrap(),
                "{file}: sha256 of pydicom's array"
            );
            let e = max_abs_diff(&px.raw, &source);
            println!("{file}: lossless, max abs diff to pydicom and to the source {e}");
            assert_eq!(e, 0, "{file}: differs from the synthetic source");
        } else {
            let want = ints(&fx.tensors[file.as_str()]);
            let e = max_abs_diff(&px.raw, &want);
            let to_source = max_abs_diff(&px.raw, &source);
            println!("{file}: lossy, max abs diff to pydicom {e} (to the source {to_source})");
            assert!(
                e <= lossy_bound(file),
                "{file}: max abs diff to pydicom {e} > {}",
                lossy_bound(file)
            );
            if lossy_bound(file) == 0 {
                assert_eq!(
                    sha_as(&px.raw, entry["dtype"].as_str().unwrap()),
                    entry["array_sha256"].as_str().unwrap(),
                    "{file}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} greyscale fixtures");
}

#[test]
fn colour_is_refused_by_default_and_greyed_on_request() {
    let fx = load();
    let mut checked = 0;
    for (file, entry) in &fx.files {
        if entry["image"].as_str().is_none() || !is_colour(entry) {
            continue;
        }
        let path = codec_dir().join(file);
        let err = read_dicom_pixels(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::PixelData { .. }), "{file}: {msg}");
        assert!(msg.contains(file.as_str()), "{file}: {msg}");
        let grey = read_dicom_pixels_with(&path, &DicomReadOptions { to_grey: true });
        if entry["syntax"] == "1.2.840.10008.1.2.4.80" {
            // jpegls (pure_jpegls) decodes single-component streams only: colour JPEG-LS stays
            // refused even with to_grey, with a message that says so.
            let err = grey.unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(file.as_str()) && msg.contains("JPEG-LS") && msg.contains("3 samples"),
                "{file}: {msg}"
            );
            checked += 1;
            continue;
        }
        assert!(msg.contains("--to-grey"), "{file}: {msg}");
        let px = grey.unwrap_or_else(|e| panic!("{file} with to_grey: {e}"));
        assert_eq!((px.frames, px.rows, px.cols), (1, 20, 24), "{file}");
        let want = ints(&fx.tensors[&format!("{file}.grey")]);
        let e = max_abs_diff(&px.raw, &want);
        println!(
            "{file}: to_grey vs {} max abs diff {e}",
            entry["grey"].as_str().unwrap()
        );
        if let Some(t) = fx.tensors.get(&format!("{file}.grey_of_rgb")) {
            // YBR JPEG greys to its Y sample; pydicom's RGB (YCbCr → RGB, rounded) then L
            // lands within 2 of it (measured 2: the IDCT difference plus two roundings).
            let e_rgb = max_abs_diff(&px.raw, &ints(t));
            println!("{file}: to_grey vs Pillow L of pydicom's RGB max abs diff {e_rgb}");
            assert!(
                e_rgb <= 2,
                "{file}: max abs diff to L of pydicom's RGB {e_rgb}"
            );
        }
        assert!(e <= lossy_bound(file), "{file}: max abs diff {e}");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} colour fixtures");
}

#[test]
fn object_without_pixel_data_names_the_file() {
    let path = codec_dir().join("no_pixels_sr.dcm");
    let err = read_dicom_pixels(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::NoPixelData { .. }), "{msg}");
    assert!(msg.contains("no_pixels_sr.dcm"), "{msg}");
}

/// xorshift64*: reproducible damage without a dependency on rand's API.
struct Damage(u64);

impl Damage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Reads a damaged copy; a panic that escapes the reader fails the test with the case named.
fn read_damaged(path: &Path, what: &str) -> Result<(), String> {
    let start = std::time::Instant::now();
    let result = std::panic::catch_unwind(|| {
        read_dicom_pixels_with(path, &DicomReadOptions { to_grey: true }).map(|_| ())
    });
    let took = start.elapsed().as_secs_f64();
    if took > 0.5 {
        println!("{what}: {took:.1} s");
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("{what}: the reader panicked"),
    }
}

/// Byte ranges of a file's pixel data that hold no length field: the fragments of encapsulated
/// pixel data (after each item header), or the native pixel data after its element header.
fn pixel_data_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let n = bytes.len();
    let tag = [0xe0, 0x7f, 0x10, 0x00];
    let start = bytes
        .windows(4)
        .rposition(|w| w == tag)
        .expect("no Pixel Data element");
    let len = u32::from_le_bytes(bytes[start + 8..start + 12].try_into().unwrap());
    if len != u32::MAX {
        return vec![(start + 12, n)];
    }
    // Encapsulated: items (FFFE,E000) with a 4-byte length, then the sequence delimiter.
    let mut spans = Vec::new();
    let mut at = start + 12;
    while at + 8 <= n && bytes[at..at + 4] == [0xfe, 0xff, 0x00, 0xe0] {
        let item = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if item > 0 {
            spans.push((at + 8, (at + 8 + item).min(n)));
        }
        at += 8 + item;
    }
    spans
}

#[test]
fn damaged_compressed_files_never_panic() {
    let fx = load();
    let tmp = tempfile::tempdir().unwrap();
    let (mut ok, mut errors, mut caught) = (0, 0, 0);
    let mut tally = |r: Result<(), String>| match r {
        Ok(()) => ok += 1,
        Err(e) => {
            errors += 1;
            if e.contains("panicked on this input") {
                caught += 1;
                if caught <= 40 {
                    println!("caught: {e}");
                }
            }
        }
    };
    let mut rng = Damage(0x5eed_d1c0);
    for (file, entry) in &fx.files {
        let syntax = entry["syntax"].as_str().unwrap();
        if entry["image"].is_null() || syntax == "1.2.840.10008.1.2.1" {
            continue;
        }
        let bytes = std::fs::read(codec_dir().join(file)).unwrap();
        let n = bytes.len();
        let damaged = tmp.path().join(file);
        // Cuts through the header, the pixel data and its last bytes.
        let mut cuts: Vec<usize> = (1..16).map(|k| n * k / 16).collect();
        cuts.extend([n - 1, n - 2, n - 3, n - 8, n - 17, n - 64]);
        for cut in cuts {
            std::fs::write(&damaged, &bytes[..cut]).unwrap();
            tally(read_damaged(&damaged, &format!("{file} cut at {cut}/{n}")));
        }
        // Byte flips inside the pixel data (one to four at a time), sparing the element and item
        // headers: a flipped length field makes the DICOM parser allocate up to 4 GiB before it
        // fails (a parser matter, not a decoder one; see the coverage notes), too heavy for CI.
        if syntax == "1.2.840.10008.1.2.1.99" {
            // A deflated data set is one compressed stream: any flip can inflate to a huge
            // length field (the parser issue above), so deflate gets only the cuts.
            continue;
        }
        let spans = pixel_data_spans(&bytes);
        for round in 0..12 {
            let mut copy = bytes.clone();
            let flips = 1 + round % 4;
            let mut at = Vec::new();
            for _ in 0..flips {
                let (lo, hi) = spans[(rng.next() as usize) % spans.len()];
                let i = lo + (rng.next() as usize) % (hi - lo);
                copy[i] ^= 1 << (rng.next() % 8);
                at.push(i);
            }
            std::fs::write(&damaged, &copy).unwrap();
            tally(read_damaged(&damaged, &format!("{file} flipped at {at:?}")));
        }
    }
    println!(
        "damaged copies: {ok} decoded, {errors} errors ({caught} of them decoder panics caught \
         by the guard)"
    );
    assert!(errors > 0 && ok + errors > 400, "{ok} {errors}");
}

/// One flipped bit in a length field used to make the DICOM parser reserve and zero-fill up to
/// 4 GiB before failing (seconds, gigabytes): the length walk refuses it first, naming the
/// element and the bytes left.
#[test]
fn a_length_beyond_the_end_is_refused_before_parsing() {
    let src = codec_dir().join("mono8_jpeg_sv1.dcm");
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[914] ^= 8;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("flipped.dcm");
    std::fs::write(&path, &bytes).unwrap();
    let err = read_dicom_pixels(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::DicomParse { .. }), "{msg}");
    assert!(
        msg.contains("flipped.dcm") && msg.contains("declares 4294901760 bytes"),
        "{msg}"
    );
}

/// Where dicom-rs expects an item (after an item ends), a sequence delimiter ends the sequence
/// whatever length it declares, and the next header follows at once; elsewhere a defined length
/// is a value it reserves. The walk reads the headers in the same state, so the lengths dicom-rs
/// would reserve after such a delimiter are refused before parsing. Two fuzzer-found files
/// (dicom-rs reserved 2.4 GB on each) and a hand-made one.
#[test]
fn lengths_after_a_sequence_delimiter_are_checked_where_dicom_rs_reads_them() {
    let regressions =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/dicom_file");
    for (file, declared) in [
        (
            "oom-sequence-delimiter-in-item-position.dcm",
            "declares 2450849800 bytes",
        ),
        (
            "oom-sequence-delimiter-length.dcm",
            "declares 2365886210 bytes",
        ),
    ] {
        let err = read_dicom_pixels(&regressions.join(file)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::DicomParse { .. }), "{msg}");
        assert!(msg.contains(file) && msg.contains(declared), "{msg}");
    }
    // meta group (explicit VR little endian), then: an undefined-length sequence (0008,1115)
    // with one empty item, its delimiter declaring 12 bytes (ignored by dicom-rs), then an OB
    // element (0009,1010) declaring 0xF0000000 bytes
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    let ts = b"1.2.840.10008.1.2.1\0";
    let mut meta = Vec::new();
    meta.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    meta.extend_from_slice(&(ts.len() as u16).to_le_bytes());
    meta.extend_from_slice(ts);
    bytes.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&[
        0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 12, 0, 0, 0]);
    bytes.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0, 0, 0, 0, 0xF0]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("delimiter.dcm");
    std::fs::write(&path, &bytes).unwrap();
    let msg = read_dicom_pixels(&path).unwrap_err().to_string();
    assert!(
        msg.contains("delimiter.dcm") && msg.contains("declares 4026531840 bytes"),
        "{msg}"
    );
    // without the preamble (`DICM` at byte 0), which dicom-rs reads too
    std::fs::write(&path, &bytes[128..]).unwrap();
    let msg = read_dicom_pixels(&path).unwrap_err().to_string();
    assert!(msg.contains("declares 4026531840 bytes"), "{msg}");
}

/// A JPEG 2000 codestream whose SIZ marker declares a far larger image than the DICOM header
/// (24×100663316 in a 1.2 kB file, found by fuzzing: openjp2 took 1.9 GB and 6 s) is refused
/// before decoding; valid JPEG 2000 files still decode (`every_syntax_decodes_like_pydicom`).
#[test]
fn jpeg2000_codestream_larger_than_the_header_is_refused_before_decoding() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/dicom_file/oom-jpeg2000-siz-size.dcm");
    let err = read_dicom_pixels_with(&path, &DicomReadOptions { to_grey: true }).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::PixelData { .. }), "{msg}");
    assert!(
        msg.contains("declares 24x100663316 with 1 component(s)") && msg.contains("oom-jpeg2000"),
        "{msg}"
    );
}

/// Two more fuzzer finds, refused before the costly step: dicom-rs reads a binary-number value
/// as whole numbers and leaves a remainder unread (a UL of length 2 here), so the next header
/// starts 2 bytes early and declared 3.75 GB (2.3 GB reserved); and jpeg-decoder skips bytes
/// before a marker, finding a frame header the earlier size check did not (9 s of decoding).
#[test]
fn headers_are_read_where_the_decoders_read_them() {
    let regressions =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/dicom_file");
    for (file, what) in [
        (
            "oom-numeric-value-remainder.dcm",
            "element (0001,0028) at byte",
        ),
        (
            "timeout-jpeg-bytes-before-marker.dcm",
            "JPEG frame 0 declares",
        ),
    ] {
        let msg = read_dicom_pixels(&regressions.join(file))
            .unwrap_err()
            .to_string();
        println!("{msg}");
        assert!(msg.contains(file) && msg.contains(what), "{msg}");
    }
}

/// dicom-rs 0.10.1's RLE decoder panics (a slice range out of bounds in rle_lossless.rs) when a
/// segment offset in the RLE header points past the fragment: the panic guard turns it into a
/// pixel-data error naming the file. Byte 774 of `mono8_rle.dcm` is in that header.
#[test]
fn a_damaged_rle_header_is_an_error_not_a_crash() {
    let src = codec_dir().join("mono8_rle.dcm");
    let mut bytes = std::fs::read(&src).unwrap();
    bytes[774] = 228;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rle_bad_offset.dcm");
    std::fs::write(&path, &bytes).unwrap();
    let err = read_dicom_pixels(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::PixelData { .. }), "{msg}");
    assert!(
        msg.contains("rle_bad_offset.dcm") && msg.contains("panicked on this input"),
        "{msg}"
    );
}

/// Every input that ever crashed the `dicom_file` fuzz target (`fuzz/regressions/dicom_file/`)
/// gives an error naming the file, without a panic (the fuzz smoke test replays them under
/// libFuzzer's memory limit when a nightly toolchain is installed; this runs on stable).
#[test]
fn fuzz_regressions_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/dicom_file");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let err = read_dicom_pixels_with(&path, &DicomReadOptions { to_grey: true }).unwrap_err();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(err.to_string().contains(&name), "{err}");
        n += 1;
    }
    assert!(n >= 3, "only {n} regression inputs in {}", dir.display());
}

/// Every input that ever failed the `dicom_series` fuzz target (`fuzz/regressions/dicom_series/`:
/// up to four files split at `@@@@`, as the target writes them into one folder) scans and reads
/// to an error naming a file of the folder, without a panic.
#[test]
fn fuzz_series_regressions_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/dicom_series");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut rest = bytes.as_slice();
        for i in 0..4 {
            let at = rest.windows(4).position(|w| w == b"@@@@").filter(|_| i < 3);
            let (part, next) = match at {
                Some(k) => (&rest[..k], &rest[k + 4..]),
                None => (rest, &rest[rest.len()..]),
            };
            std::fs::write(tmp.path().join(format!("{i}.dcm")), part).unwrap();
            rest = next;
            if at.is_none() {
                break;
            }
        }
        let _ = scan_dicom(tmp.path());
        let err = read_dicom(tmp.path()).unwrap_err().to_string();
        println!("{err}");
        assert!(err.contains(".dcm"), "{err}");
        n += 1;
    }
    assert!(n >= 2, "only {n} regression inputs in {}", dir.display());
}

/// A JPEG stream whose own frame header declares a far larger image than the DICOM header
/// (63511×34836×3 in a 1.6 kB file, found by fuzzing) is refused before the decoder allocates it.
#[test]
fn jpeg_stream_larger_than_the_header_is_refused_before_decoding() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions/dicom_file/oom-jpeg-frame-header-size.dcm");
    let err = read_dicom_pixels_with(&path, &DicomReadOptions { to_grey: true }).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("declares 63511x34836 with 3 component(s)") && msg.contains("24x20"),
        "{msg}"
    );
}
