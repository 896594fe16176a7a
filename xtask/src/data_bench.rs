//! Data preparation throughput: `segdiff_data::prepare` on a synthetic 512×512×200 CT-like
//! volume (int16 NIfTI + uint8 labels) to 256² slices, the whole call timed (read, reorient,
//! window, fit, resize, PNG encode, write).

use std::time::Instant;

use anyhow::{Context, Result};
use segdiff_data::synthetic::{phantom, write_nifti_i16, write_nifti_u8};
use segdiff_data::{
    prepare, InputSpec, Intensity, LabelMapping, PrepareOptions, SliceAxis, Volume,
};

/// Marks the section so `cargo xtask bench --data-only` can replace it in place.
pub const START: &str = "<!-- data-prep:start -->";
/// End of the section.
pub const END: &str = "<!-- data-prep:end -->";

/// Runs the cases and returns the Markdown section (between the markers).
pub fn section() -> Result<String> {
    let shape = [512, 512, 200];
    let tmp = tempfile_dir()?;
    let (img, lab) = phantom(shape, [0.7, 0.7, 2.5]);
    let img = Volume {
        data: img.data.mapv(|v| v as i16),
        affine: img.affine,
    };
    let (ip, lp) = (tmp.join("ct.nii"), tmp.join("ct_seg.nii"));
    write_nifti_i16(&ip, &img).context("writing the synthetic volume")?;
    write_nifti_u8(&lp, &lab).context("writing the synthetic labels")?;
    drop((img, lab));
    let cases = [
        (
            "axial, CT abdomen window",
            vec![SliceAxis::Axial],
            "ct:abdomen",
        ),
        (
            "all three axes, CT abdomen window",
            SliceAxis::ALL.to_vec(),
            "ct:abdomen",
        ),
        (
            "axial, MRI 1st–99th percentile",
            vec![SliceAxis::Axial],
            "percentile:1,99",
        ),
    ];
    let mut md = format!(
        "\n{START}\n## Data preparation\n\n`segdiff_data::prepare` on a synthetic {}×{}×{} int16 volume \
         with a label map, to 256² PNG pairs (whole call: read, reorient, window, fit, Pillow-exact \
         resize, PNG encode, atomic write), {} rayon threads, load average at start {}.\n\n\
         | case | slices | wall | slices/s |\n|---|---|---|---|\n",
        shape[0],
        shape[1],
        shape[2],
        rayon::current_num_threads(),
        crate::bench::load_average()
    );
    for (name, axes, intensity) in cases {
        let mut opts = PrepareOptions::new(
            vec![InputSpec {
                image: ip.clone(),
                label: Some(lp.clone()),
                ..InputSpec::default()
            }],
            tmp.join("out"),
            LabelMapping::identity_count(4)?,
        );
        opts.axes = axes;
        opts.intensity = Intensity::parse(intensity)?;
        opts.size = 256;
        let start = Instant::now();
        let summary = prepare(&opts, &|_| {}).with_context(|| format!("preparing ({name})"))?;
        let secs = start.elapsed().as_secs_f64();
        let slices: usize = summary.slices.iter().sum();
        eprintln!("bench data {name}: {slices} slices in {secs:.2} s");
        md.push_str(&format!(
            "| {name} | {slices} | {secs:.2} s | {:.0} |\n",
            slices as f64 / secs
        ));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    md.push_str(&format!("{END}\n"));
    Ok(md)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("segdiff-data-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Replaces (or appends) the data section of an existing report.
pub fn update(out: &std::path::Path) -> Result<()> {
    let old = std::fs::read_to_string(out).unwrap_or_default();
    let new_section = section()?;
    let text = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            let tail = &old[b + END.len()..];
            format!(
                "{}{}{}",
                old[..a].trim_end_matches('\n'),
                new_section,
                tail.trim_start_matches('\n')
            )
        }
        _ => format!("{old}{new_section}"),
    };
    segdiff_io::write_bytes_atomic(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("updated the data section of {}", out.display());
    Ok(())
}
