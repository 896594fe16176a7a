//! Decodes the pixel data of one DICOM file as `segdiff_data::read_dicom_pixels` does (raw values
//! before rescale, pydicom 3's `pixel_array`) and writes them as little-endian i32, frame-major and
//! row-major; prints `{"rows":..,"cols":..,"frames":..}`, or `{"error":"..."}` and exits 1.
//! The codec coverage script (`tests/fixtures/dicom_codecs/coverage.py`) compares it with pydicom:
//!
//! `cargo run --release -p segdiff-data --example dicom_pixels -- FILE OUT.bin [--to-grey]`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use segdiff_data::{read_dicom_pixels_with, DicomReadOptions};

fn run(args: &[String]) -> Result<String, String> {
    let mut to_grey = false;
    let mut paths = Vec::new();
    for a in args {
        match a.as_str() {
            "--to-grey" => to_grey = true,
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [file, out] = paths.as_slice() else {
        return Err("usage: dicom_pixels FILE OUT.bin [--to-grey]".into());
    };
    let pixels =
        read_dicom_pixels_with(file, &DicomReadOptions { to_grey }).map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = pixels.raw.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tmp = out.with_extension("bin.partial");
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(serde_json::json!({
        "rows": pixels.rows,
        "cols": pixels.cols,
        "frames": pixels.frames,
    })
    .to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            println!("{}", serde_json::json!({ "error": message }));
            ExitCode::FAILURE
        }
    }
}
