//! Slices per second of `prepare` on a synthetic 512×512×200 CT-like volume (int16 NIfTI + uint8
//! labels, uncompressed), 256² output, abdomen window. Run: `cargo bench -p segdiff-data`.
//! Reports wall time of the whole call (read, reorient, window, fit, resize, PNG encode, write).

use std::time::Instant;

use segdiff_data::synthetic::{phantom, write_nifti_i16, write_nifti_u8};
use segdiff_data::{
    prepare, InputSpec, Intensity, LabelMapping, PrepareOptions, SliceAxis, Volume,
};

fn main() {
    let shape = [512, 512, 200];
    let tmp = std::env::temp_dir().join(format!("segdiff-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("create temp dir");
    let t0 = Instant::now();
    let (img, lab) = phantom(shape, [0.7, 0.7, 2.5]);
    let img = Volume {
        data: img.data.mapv(|v| v as i16),
        affine: img.affine,
    };
    let (ip, lp) = (tmp.join("ct.nii"), tmp.join("ct_seg.nii"));
    write_nifti_i16(&ip, &img).expect("write image");
    write_nifti_u8(&lp, &lab).expect("write labels");
    drop((img, lab));
    println!(
        "synthetic volume {shape:?} written in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    println!("rayon threads: {}", rayon::current_num_threads());
    let runs = [
        (vec![SliceAxis::Axial], "ct:abdomen"),
        (SliceAxis::ALL.to_vec(), "ct:abdomen"),
        (vec![SliceAxis::Axial], "percentile:1,99"),
    ];
    for (axes, intensity) in runs {
        let mut opts = PrepareOptions::new(
            vec![InputSpec {
                image: ip.clone(),
                label: Some(lp.clone()),
                ..Default::default()
            }],
            tmp.join("out"),
            LabelMapping::parse("1=organ,2=cyst,3=bone", true, None).expect("labels"),
        );
        opts.axes = axes.clone();
        opts.intensity = Intensity::parse(intensity).expect("intensity");
        let t = Instant::now();
        let s = prepare(&opts, &|_| {}).expect("prepare");
        let secs = t.elapsed().as_secs_f64();
        let n = s.slices.iter().sum::<usize>();
        println!(
            "axes {:?}, {intensity}: {n} slices in {secs:.2} s = {:.1} slices/s",
            axes.iter().map(|a| a.name()).collect::<Vec<_>>(),
            n as f64 / secs
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
