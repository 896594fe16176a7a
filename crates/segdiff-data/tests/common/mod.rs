//! Helpers shared by the integration tests: fixture paths, reference tensors, synthetic DICOM.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use sha2::{Digest, Sha256};

/// Committed fixtures of this crate.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The shared fixture folder (`SEGDIFF_SHARED_FIXTURES`, default `../../../shared/fixtures`);
/// panics with a clear message when it is missing, so ignored tests never pass silently.
pub fn shared_fixtures() -> PathBuf {
    let p = std::env::var_os("SEGDIFF_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    assert!(
        p.join("real_decode.safetensors").is_file(),
        "shared fixtures not found at {} (set SEGDIFF_SHARED_FIXTURES to the shared/fixtures folder)",
        p.display()
    );
    p
}

/// The shared real data folder (`<shared fixtures>/../data/real`), panicking when missing.
pub fn shared_real() -> PathBuf {
    let p = shared_fixtures().join("../data/real");
    assert!(
        p.join("MANIFEST.tsv").is_file(),
        "shared real data not found at {} (expected beside the shared fixtures)",
        p.display()
    );
    p
}

/// Load a safetensors file as candle tensors.
pub fn load_tensors(path: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

/// Flattened values of a tensor as f64.
pub fn values_f64(t: &candle_core::Tensor) -> Vec<f64> {
    t.to_dtype(candle_core::DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("tensor to f64")
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `real_decode_meta.json` entry of a file.
pub fn decode_meta(meta_path: &Path, key: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(meta_path).expect("read meta json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse meta json");
    v["files"][key].clone()
}

/// Description of one synthetic single-frame DICOM slice.
#[derive(Clone, Debug)]
pub struct SliceSpec {
    pub series_uid: String,
    pub instance: i64,
    pub rows: u16,
    pub cols: u16,
    pub position: Option<[f64; 3]>,
    pub orientation: Option<[f64; 6]>,
    pub spacing: [f64; 2],
    pub pixels: Option<Vec<i16>>,
    pub slope_intercept: Option<(f64, f64)>,
    pub photometric: &'static str,
    pub transfer_syntax: &'static str,
}

impl SliceSpec {
    /// An axial CT slice at height `z` filled with `value`.
    pub fn ct(series_uid: &str, instance: i64, rows: u16, cols: u16, z: f64, value: i16) -> Self {
        SliceSpec {
            series_uid: series_uid.into(),
            instance,
            rows,
            cols,
            position: Some([-100.0, -120.0, z]),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            spacing: [0.8, 0.7],
            pixels: Some(
                (0..rows as usize * cols as usize)
                    .map(|i| value + (i % 7) as i16)
                    .collect(),
            ),
            slope_intercept: Some((1.0, -1024.0)),
            photometric: "MONOCHROME2",
            transfer_syntax: "1.2.840.10008.1.2.1",
        }
    }
}

fn ds(v: &[f64]) -> PrimitiveValue {
    PrimitiveValue::from(
        v.iter()
            .map(|x| format!("{x}"))
            .collect::<Vec<_>>()
            .join("\\"),
    )
}

/// Write a synthetic CT image file (explicit VR little endian unless the spec says otherwise).
pub fn write_slice(path: &Path, s: &SliceSpec) {
    let mut obj = InMemDicomObject::new_empty();
    let sop_instance = format!(
        "1.2.826.0.1.3680043.99.{}.{}",
        s.series_uid.len(),
        s.instance
    );
    let put = |obj: &mut InMemDicomObject, tag, vr, v: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, v));
    };
    put(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2"),
    );
    put(
        &mut obj,
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop_instance.as_str()),
    );
    put(&mut obj, tags::MODALITY, VR::CS, PrimitiveValue::from("CT"));
    put(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(s.series_uid.as_str()),
    );
    put(
        &mut obj,
        tags::SERIES_NUMBER,
        VR::IS,
        PrimitiveValue::from("1"),
    );
    put(
        &mut obj,
        tags::INSTANCE_NUMBER,
        VR::IS,
        PrimitiveValue::from(s.instance.to_string()),
    );
    if let Some(p) = s.position {
        put(&mut obj, tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&p));
    }
    if let Some(o) = s.orientation {
        put(&mut obj, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&o));
    }
    put(&mut obj, tags::PIXEL_SPACING, VR::DS, ds(&s.spacing));
    put(
        &mut obj,
        tags::SLICE_THICKNESS,
        VR::DS,
        PrimitiveValue::from("1"),
    );
    put(
        &mut obj,
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    );
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from(s.photometric),
    );
    put(&mut obj, tags::ROWS, VR::US, PrimitiveValue::from(s.rows));
    put(
        &mut obj,
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(s.cols),
    );
    put(
        &mut obj,
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    );
    put(
        &mut obj,
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(16u16),
    );
    put(
        &mut obj,
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(15u16),
    );
    put(
        &mut obj,
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(1u16),
    );
    if let Some((sl, ic)) = s.slope_intercept {
        put(&mut obj, tags::RESCALE_SLOPE, VR::DS, ds(&[sl]));
        put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, ds(&[ic]));
    }
    if let Some(px) = &s.pixels {
        if s.transfer_syntax == "1.2.840.10008.1.2.1" || s.transfer_syntax == "1.2.840.10008.1.2" {
            let words: Vec<u16> = px.iter().map(|&v| v as u16).collect();
            put(
                &mut obj,
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(words.into()),
            );
        } else {
            // An encapsulated syntax: one opaque fragment is enough to reach the decoder.
            let frag = PixelFragmentSequence::new(Vec::<u32>::new(), vec![vec![0u8; 64]]);
            obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, frag));
        }
    }
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(s.transfer_syntax)
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
        .media_storage_sop_instance_uid(sop_instance.as_str());
    let file = obj.with_meta(meta).expect("meta table");
    file.write_to_file(path).expect("write synthetic DICOM");
}

/// Names in a folder (sorted), for "nothing was left behind" checks.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
