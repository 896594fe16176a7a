use super::*;

/// A RAS-aligned class volume `X × Y × Z` with known regions: a slab, a box and a column, the
/// border (one voxel) background.
fn ras_classes(shape: [usize; 3]) -> Array3<u8> {
    let [nx, ny, nz] = shape;
    Array3::from_shape_fn(shape, |(x, y, z)| {
        if x == 0 || y == 0 || z == 0 || x == nx - 1 || y == ny - 1 || z == nz - 1 {
            0
        } else if x < nx / 2 && y < ny / 2 {
            1
        } else if z >= nz / 2 && y >= ny / 2 {
            2
        } else if x > nx / 2 {
            3
        } else {
            0
        }
    })
}

/// The same anatomy stored with permuted and flipped voxel axes and a shifted origin: file axis 0
/// runs inferior (−z), axis 1 right (+x), axis 2 posterior (−y).
fn scrambled(ras: &Array3<u8>, spacing: [f64; 3], origin: [f64; 3]) -> Volume<u8> {
    let [nx, ny, nz] = [ras.shape()[0], ras.shape()[1], ras.shape()[2]];
    let data = Array3::from_shape_fn([nz, nx, ny], |(a, b, c)| ras[[b, ny - 1 - c, nz - 1 - a]]);
    let affine = [
        [0.0, spacing[0], 0.0, origin[0]],
        [0.0, 0.0, -spacing[1], origin[1]],
        [-spacing[2], 0.0, 0.0, origin[2]],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Volume { data, affine }
}

/// Fake generation: every pixel's intensity is its class id / 10.
fn paint(slices: &LabelSlices) -> Vec<f32> {
    slices.masks.iter().map(|&c| f32::from(c) / 10.0).collect()
}

#[test]
fn permuted_flipped_shifted_volume_round_trips_exactly() {
    let ras = ras_classes([12, 10, 8]);
    let labels = scrambled(&ras, [0.8, 1.1, 2.5], [17.5, -3.25, 40.0]);
    let mut covered = 0;
    for axis in SliceAxis::ALL {
        for fit in [Fit::Pad, Fit::Stretch] {
            let (w, h) = axis.slice_size([12, 10, 8]);
            // Model size = squared size: both resizes are identities.
            let size = if fit == Fit::Pad { w.max(h) } else { w };
            if fit == Fit::Stretch && w != h {
                continue;
            }
            let s = slice_label_volume(&labels, axis, fit, size).unwrap();
            assert_eq!(s.count, axis.count([12, 10, 8]));
            // The one-voxel background border leaves the first and last slice empty.
            assert_eq!(s.foreground_range(), Some(1..s.count - 1));
            let back = s.geometry.place(&paint(&s), 1, -1.0).unwrap();
            assert_eq!(back.shape(), labels.data.shape());
            assert_eq!(s.geometry.affine, labels.affine);
            assert_eq!(s.geometry.shape, labels.shape());
            for (idx, &v) in back.indexed_iter() {
                let want = f32::from(labels.data[idx]) / 10.0;
                assert_eq!(v, want, "{axis:?} {fit:?} voxel {idx:?}");
            }
            covered += 1;
        }
    }
    assert!(covered >= 3);
}

#[test]
fn slices_show_the_anatomy_in_radiological_order() {
    // Axial slice of the RAS volume: image left = patient right (high x), top = anterior.
    let ras = ras_classes([12, 10, 8]);
    let labels = scrambled(&ras, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
    let s = slice_label_volume(&labels, SliceAxis::Axial, Fit::Pad, 12).unwrap();
    let k = 2;
    let m = s.slice(k);
    // Padded 12 × 10 → 12 × 12: one row of padding on top.
    for r in 0..10 {
        for c in 0..12 {
            assert_eq!(
                m[(r + 1) * 12 + c],
                ras[[11 - c, 9 - r, k]],
                "pixel {r},{c}"
            );
        }
    }
    assert!(m[..12].iter().all(|&v| v == 0));
}

#[test]
fn interiors_survive_real_resizing() {
    let ras = ras_classes([12, 10, 8]);
    let labels = scrambled(&ras, [0.8, 1.1, 2.5], [-5.0, 60.0, 7.5]);
    for axis in SliceAxis::ALL {
        let s = slice_label_volume(&labels, axis, Fit::Pad, 32).unwrap();
        let back = s.geometry.place(&paint(&s), 1, -1.0).unwrap();
        assert_eq!(back.shape(), labels.data.shape());
        let [n0, n1, n2] = labels.shape();
        let mut checked = 0;
        let mut worst = 0.0f32;
        for ((a, b, c), &v) in back.indexed_iter() {
            // Interior: the 3×3×3 neighbourhood holds one class.
            let cls = labels.data[[a, b, c]];
            let mut same = true;
            for da in -1i64..=1 {
                for db in -1i64..=1 {
                    for dc in -1i64..=1 {
                        let p = [a as i64 + da, b as i64 + db, c as i64 + dc];
                        if p[0] < 0 || p[1] < 0 || p[2] < 0 {
                            continue;
                        }
                        let p = [p[0] as usize, p[1] as usize, p[2] as usize];
                        if p[0] >= n0 || p[1] >= n1 || p[2] >= n2 {
                            continue;
                        }
                        same &= labels.data[p] == cls;
                    }
                }
            }
            if same {
                worst = worst.max((v - f32::from(cls) / 10.0).abs());
                checked += 1;
            }
        }
        println!("{axis:?}: {checked} interior voxels, max error {worst:e}");
        assert!(checked > 100);
        assert!(worst < 1e-5, "{axis:?}: max interior error {worst}");
    }
}

#[test]
fn multi_channel_slices_are_averaged_and_sizes_checked() {
    let ras = ras_classes([6, 6, 4]);
    let labels = Volume {
        data: ras,
        affine: crate::volume::IDENTITY_AFFINE,
    };
    let s = slice_label_volume(&labels, SliceAxis::Axial, Fit::Pad, 6).unwrap();
    let one = paint(&s);
    let mut three = Vec::new();
    for k in 0..s.count {
        let sl = &one[k * 36..(k + 1) * 36];
        three.extend(sl.iter().map(|v| v * 0.5));
        three.extend(sl.iter().map(|v| v * 1.5));
        three.extend_from_slice(sl);
    }
    let a = s.geometry.place(&one, 1, 0.0).unwrap();
    let b = s.geometry.place(&three, 3, 0.0).unwrap();
    assert!(a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-6));
    assert!(s.geometry.place(&one[1..], 1, 0.0).is_err());
}

#[test]
fn float_bilinear_keeps_constants_and_is_identity_at_same_size() {
    let src: Vec<f32> = (0..20).map(|v| v as f32).collect();
    assert_eq!(resize_bilinear_f32(&src, 5, 4, 5, 4), src);
    let c = vec![0.25f32; 7 * 3];
    for (ow, oh) in [(2, 9), (14, 1), (3, 3)] {
        let r = resize_bilinear_f32(&c, 7, 3, ow, oh);
        assert_eq!(r.len(), ow * oh);
        assert!(r.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }
}

#[test]
fn strict_mapping_names_the_value_and_file() {
    let dir = std::env::temp_dir().join(format!("segdiff-vs-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lab.nii.gz");
    let mut data = Array3::<i16>::zeros([4, 4, 3]);
    data[[1, 1, 1]] = 7;
    data[[2, 2, 1]] = 1;
    crate::synthetic::write_nifti_i16(
        &path,
        &Volume {
            data,
            affine: crate::volume::IDENTITY_AFFINE,
        },
    )
    .unwrap();
    let strict = LabelMapping::parse("1=liver", true, None).unwrap();
    let err = read_label_volume(&path, &strict, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains('7') && err.contains("lab.nii.gz"), "{err}");
    let loose = LabelMapping::parse("1=liver", false, None).unwrap();
    let v = read_label_volume(&path, &loose, None).unwrap();
    assert_eq!(v.classes.data[[1, 1, 1]], 0);
    assert_eq!(v.classes.data[[2, 2, 1]], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
