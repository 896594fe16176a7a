#!/usr/bin/env bash
# Rebuilds the bundled MNI demo assets (model, segmenter, held-out slices) with segdiff itself.
# Run from the repository root with the shared data beside it:  bash assets/mni-demo/build.sh
# Takes about an hour on 2 CPU cores. Every random draw follows the seeds below.
set -euo pipefail
SEGDIFF=${SEGDIFF:-target/release/segdiff}
NIFTI=${NIFTI:-../shared/data/real/nifti}
WORK=${WORK:-/tmp/segdiff-mni-demo}
OUT=assets/mni-demo
cargo build --release -p segdiff-cli
rm -rf "$WORK" && mkdir -p "$WORK"

# 1. T1 + grey/white-matter maps → 4 classes, all three axes, 64×64.
"$SEGDIFF" prepare \
    --image "$NIFTI/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" \
    --tissue-maps "$NIFTI/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz,$NIFTI/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz" \
    --modality mri --axes axial,coronal,sagittal --size 64 --min-pixels 64 --out "$WORK/mni64"

# 2. The template is one brain, so `prepare` (which splits by volume) puts every slice in train.
#    Hold out slices instead: index ≡ 5 (mod 10) → test, ≡ 0 (mod 10) → val. Their neighbours are
#    in train, so "held out" means "not seen", not "another subject".
cd "$WORK/mni64"
for f in img/train/*.png; do
    b=$(basename "$f" .png); idx=$((10#${b##*_}))
    if [ $((idx % 10)) -eq 5 ]; then mv "$f" img/test/; mv "mask/all/train/$b.png" mask/all/test/
    elif [ $((idx % 10)) -eq 0 ]; then mv "$f" img/val/; mv "mask/all/train/$b.png" mask/all/val/; fi
done
cd - >/dev/null

# 3. The segmentation-guided model (one-hot masks, mask ablation, v-prediction: see MODEL_CARD.md).
RAYON_NUM_THREADS=1 "$SEGDIFF" train --data "$WORK/mni64" --out "$WORK/model" \
    --channels 16,32,64,64 --layers-per-block 1 --norm-groups 8 --batch-size 8 --steps 900 \
    --warmup-steps 50 --lr 1e-3 --mask-encoding onehot --ablation --prediction-type v_prediction \
    --ema 0.999 --checkpoint-every 100 --keep-checkpoints 2 --preview-every 150 --seed 0

# 4. The segmenter (MONAI UNet 16..256, strides 2).
RAYON_NUM_THREADS=1 "$SEGDIFF" segmenter train --data "$WORK/mni64" --out "$WORK/segmenter" \
    --epochs 40 --lr 5e-3 --seed 0

# 5. Copy what the demo needs.
rm -rf "$OUT/model" "$OUT/segmenter" "$OUT/data"
mkdir -p "$OUT/model" "$OUT/segmenter" "$OUT/data/img" "$OUT/data/mask/all"
cp -r "$WORK/model/unet" "$WORK/model/scheduler" "$WORK/model/model_index.json" "$WORK/model/segdiff.json" \
    "$WORK/model/train_log.csv" "$WORK/model/loss.png" "$OUT/model/"
cp "$WORK/segmenter/"* "$OUT/segmenter/"
cp -r "$WORK/mni64/img/test" "$OUT/data/img/"
cp -r "$WORK/mni64/mask/all/test" "$OUT/data/mask/all/"
cp "$WORK/mni64/dataset.json" "$OUT/data/"
for d in data model segmenter; do cp ../shared/data/real/licenses/MNI_ICBM152_NOTICE.txt "$OUT/$d/"; done

# 6. The whole-volume section: a neighbour-conditioned model on the axial slices alone (every
#    slice in train: a volume is generated whole, so none is held out), see
#    volume-model/MODEL_CARD.md.
"$SEGDIFF" prepare \
    --image "$NIFTI/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" \
    --tissue-maps "$NIFTI/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz,$NIFTI/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz" \
    --modality mri --axes axial --size 64 --min-pixels 64 --out "$WORK/mni64-axial"
RAYON_NUM_THREADS=1 "$SEGDIFF" --threads 1 train --data "$WORK/mni64-axial" --out "$WORK/volume-model" \
    --channels 16,32,64,64 --layers-per-block 1 --norm-groups 8 --batch-size 8 --steps 1200 \
    --warmup-steps 50 --lr 1e-3 --mask-encoding onehot --prediction-type v_prediction \
    --ema 0.999 --checkpoint-every 100 --keep-checkpoints 2 --neighbours --neighbour-mask --seed 0

# 7. The label volume it generates from (classes 0–3 as `prepare --tissue-maps` builds them, on
#    the T1's 1 mm grid), and it and the T1 on a 2 mm grid (every second voxel along each axis,
#    affine scaled) for the demo's time budget; the T1 as the 8-bit grey levels `prepare` makes
#    (its 1st–99th percentile window over the 1 mm volume), the real reference of the
#    through-plane figure.
cargo run --release -p segdiff-data --example tissue_labels -- \
    "$NIFTI/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" \
    "$NIFTI/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz" \
    "$NIFTI/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz" "$WORK/labels_1mm.nii.gz"
cargo run --release -p segdiff-data --example subsample_volume -- \
    "$WORK/labels_1mm.nii.gz" "$OUT/data/labels_2mm.nii.gz" 2
cargo run --release -p segdiff-data --example subsample_volume -- \
    "$NIFTI/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" "$OUT/data/t1_2mm.nii.gz" 2 \
    --percentile 1,99

# 8. Copy the volume model.
rm -rf "$OUT/volume-model"
mkdir -p "$OUT/volume-model"
cp -r "$WORK/volume-model/unet" "$WORK/volume-model/scheduler" "$WORK/volume-model/model_index.json" \
    "$WORK/volume-model/segdiff.json" "$WORK/volume-model/train_log.csv" "$WORK/volume-model/loss.png" \
    "$OUT/volume-model/"
cp ../shared/data/real/licenses/MNI_ICBM152_NOTICE.txt "$OUT/volume-model/"
