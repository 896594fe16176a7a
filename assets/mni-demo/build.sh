#!/usr/bin/env bash
# Rebuilds the bundled MNI demo assets (model, segmenter, held-out slices) with segdiff itself.
# Run from the repository root with the shared data beside it:  bash assets/mni-demo/build.sh
# Takes about two hours on 2 CPU cores. Every random draw follows the seeds below.
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
#    in train, so "held out" means "not seen", not "another subject". The manifest follows the
#    files (so `segdiff data check` finds nothing to report).
cd "$WORK/mni64"
for f in img/train/*.png; do
    b=$(basename "$f" .png); idx=$((10#${b##*_}))
    if [ $((idx % 10)) -eq 5 ]; then mv "$f" img/test/; mv "mask/all/train/$b.png" mask/all/test/
    elif [ $((idx % 10)) -eq 0 ]; then mv "$f" img/val/; mv "mask/all/train/$b.png" mask/all/val/; fi
done
awk 'BEGIN { FS = OFS = "," }
     NR > 1 { i = $6 % 10; s = (i == 5) ? "test" : (i == 0) ? "val" : "train"
              sub("^img/train/", "img/" s "/", $1); $2 = s }
     { print }' manifest.csv > manifest.tmp && mv manifest.tmp manifest.csv
cd - >/dev/null
"$SEGDIFF" data check --data "$WORK/mni64"

# 3. The segmenter (MONAI UNet 16..256, strides 2); the model's training monitor scores with it.
RAYON_NUM_THREADS=1 "$SEGDIFF" segmenter train --data "$WORK/mni64" --out "$WORK/segmenter" \
    --epochs 40 --lr 5e-3 --seed 0

# 4. The segmentation-guided model (4.3 M parameters, one-hot masks, mask ablation p = 0.2,
#    v-prediction, the training monitor every 250 steps: see model/MODEL_CARD.md), trained in two
#    sittings as it was: planned at 6000 steps and stopped after step 600, resumed with a
#    2500-step schedule and stopped after step 1500. The bundled weights are checkpoints/best
#    (the monitor's best val_dice).
train_until() {  # train_until STEP ARGS…: segdiff ARGS… in the background, stopped after checkpoint STEP
    local step=$1; shift
    RAYON_NUM_THREADS=1 "$SEGDIFF" --threads 1 "$@" & local pid=$!
    local ckpt; ckpt="$WORK/model/checkpoints/step-$(printf %07d "$step")/training_state.json"
    while [ ! -f "$ckpt" ] && kill -0 "$pid" 2>/dev/null; do sleep 5; done
    kill "$pid" 2>/dev/null || true; wait "$pid" || true
}
MODEL_ARGS=(train --data "$WORK/mni64" --out "$WORK/model" --channels 32,64,128,128
    --layers-per-block 1 --norm-groups 8 --batch-size 16 --warmup-steps 200 --lr 5e-4
    --mask-encoding onehot --ablation --ablation-p 0.2 --prediction-type v_prediction --ema 0.999
    --checkpoint-every 100 --keep-checkpoints 2 --eval-every 250 --eval-count 16
    --segmenter "$WORK/segmenter" --seed 0)
train_until 600 "${MODEL_ARGS[@]}" --steps 6000
train_until 1500 "${MODEL_ARGS[@]}" --steps 2500 --resume

# 5. Copy what the demo needs.
rm -rf "$OUT/model" "$OUT/segmenter" "$OUT/data"
mkdir -p "$OUT/model" "$OUT/segmenter" "$OUT/data/img" "$OUT/data/mask/all"
BEST="$WORK/model/checkpoints/best"
cp -r "$BEST/unet" "$BEST/scheduler" "$BEST/model_index.json" "$BEST/segdiff.json" \
    "$BEST/evaluation.json" "$WORK/model/train_log.csv" "$WORK/model/loss.png" "$OUT/model/"
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

# 9. The multi-headed VAE of the demo's last section (see mhvae/MODEL_CARD.md): a TPS warp on the
#    held-out split layout of step 2 (every tissue class is "the brain"), with position
#    augmentation because the template's slices are all centred.
"$SEGDIFF" mhvae train --data "$WORK/mni64" --out "$WORK/mhvae" --warp tps --steps 3000 \
    --augment-position --preview-every 1000 --checkpoint-every 1000 --seed 0
rm -rf "$OUT/mhvae"
mkdir -p "$OUT/mhvae"
cp "$WORK/mhvae/mhvae.json" "$WORK/mhvae/model.safetensors" "$WORK/mhvae/train_log.csv" \
    "$WORK/mhvae/loss.png" "$WORK/mhvae/reconstructions.png" "$OUT/mhvae/"
cp ../shared/data/real/licenses/MNI_ICBM152_NOTICE.txt "$OUT/mhvae/"

# 10. The MHVAE's diffusion refiner (see mhvae-refiner/MODEL_CARD.md), trained against the frozen
#     VAE of step 9 on the training slices' images.
"$SEGDIFF" mhvae train-refiner --vae "$WORK/mhvae" --data "$WORK/mni64" --out "$WORK/mhvae-refiner" \
    --channels 16,32,64 --steps 1500 --checkpoint-every 500 --seed 0
rm -rf "$OUT/mhvae-refiner"
mkdir -p "$OUT/mhvae-refiner"
cp -r "$WORK/mhvae-refiner/refiner.json" "$WORK/mhvae-refiner/unet" "$WORK/mhvae-refiner/train_log.csv" \
    "$WORK/mhvae-refiner/loss.png" "$OUT/mhvae-refiner/"
cp ../shared/data/real/licenses/MNI_ICBM152_NOTICE.txt "$OUT/mhvae-refiner/"
