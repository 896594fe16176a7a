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
