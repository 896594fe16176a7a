#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seed inputs taken from the repository's own test fixtures
# (real DICOM/NIfTI files, the synthetic codec and volume-format fixtures, bundled model JSON,
# presets, small safetensors). The corpus folder is not committed; run this from a clone.
set -euo pipefail
cd "$(dirname "$0")"
R=..
C=corpus
rm -rf "$C"
mkdir -p "$C"/{dicom_file,dicom_series,nifti,nifti_gz,volume_formats,png_mask,options_toml,model_json,weights}
shopt -s nullglob
for f in "$R"/crates/segdiff-data/tests/fixtures/dicom/*.dcm "$R"/crates/segdiff-data/tests/fixtures/dicom_codecs/*.dcm; do
    cp "$f" "$C/dicom_file/"
done
# a two-file series: two slices of one fixture folder joined by the harness's separator
files=("$R"/crates/segdiff-data/tests/fixtures/dicom_codecs/*.dcm)
if [ ${#files[@]} -ge 2 ]; then
    { cat "${files[0]}"; printf '@@@@'; cat "${files[1]}"; } > "$C/dicom_series/pair"
fi
for f in "$R"/crates/segdiff-data/tests/fixtures/dicom/CT_small.dcm "$R"/crates/segdiff-data/tests/fixtures/dicom/MR_small_RLE.dcm; do
    cp "$f" "$C/dicom_series/"
done
for f in "$R"/crates/segdiff-data/tests/fixtures/nifti/*.nii "$R"/crates/segdiff-data/tests/fixtures/volume_formats/*.nii; do
    cp "$f" "$C/nifti/"
done
# nifti_gz compresses its input itself: seed it with the uncompressed files
for f in "$R"/crates/segdiff-data/tests/fixtures/nifti/*.nii.gz "$R"/crates/segdiff-data/tests/fixtures/volume_formats/*.nii.gz; do
    gzip -dc "$f" > "$C/nifti_gz/$(basename "$f" .gz)"
done
# volume_formats: first byte 0 .mha, 1 .nrrd, 2 .mhd+raw, 3 .nhdr+raw, 4 .hdr+img
vf="$R"/crates/segdiff-data/tests/fixtures/volume_formats
for f in "$vf"/*.mha; do { printf '\x00'; cat "$f"; } > "$C/volume_formats/$(basename "$f")"; done
for f in "$vf"/*.nrrd; do { printf '\x01'; cat "$f"; } > "$C/volume_formats/$(basename "$f")"; done
for f in "$vf"/*.mhd; do
    raw="$vf/$(basename "$f" .mhd).raw"
    [ -f "$raw" ] && { printf '\x02'; sed 's/^ElementDataFile.*/ElementDataFile = input.raw/' "$f"; printf '@@@@'; cat "$raw"; } > "$C/volume_formats/$(basename "$f")"
done
for f in "$vf"/*.nhdr; do
    raw=$(ls "$vf/$(basename "$f" .nhdr)".raw* 2>/dev/null | head -1 || true)
    [ -n "$raw" ] && { printf '\x03'; sed 's/^data file:.*/data file: input.raw/' "$f"; printf '@@@@'; cat "$raw"; } > "$C/volume_formats/$(basename "$f")"
done
for f in "$vf"/*.hdr; do
    img="$vf/$(basename "$f" .hdr).img"
    [ -f "$img" ] && { printf '\x04'; cat "$f"; printf '@@@@'; cat "$img"; } > "$C/volume_formats/$(basename "$f")"
done
# (sed, not head: head would end the pipe early and pipefail would report find's SIGPIPE)
find "$R"/tests/fixtures "$R"/crates -name '*.png' -size -20k -not -path '*/target/*' | sort | sed -n '1,40p' | while read -r f; do
    cp "$f" "$C/png_mask/$(echo "$f" | tr '/' '_')"
done
for f in "$R"/crates/segdiff-cli/src/presets/*.toml; do cp "$f" "$C/options_toml/"; done
printf '[train]\nbatch_size = 4\nepochs = 7\nablation = true\n[sample]\nsteps = 9\n[segmenter.train]\nepochs = 3\n' > "$C/options_toml/handwritten.toml"
for f in "$R"/assets/mni-demo/*/segdiff.json "$R"/assets/mni-demo/*/unet/config.json "$R"/assets/mni-demo/*/scheduler/scheduler_config.json; do
    cp "$f" "$C/model_json/$(echo "$f" | tr '/' '_')"
done
for f in "$R"/crates/segdiff-unet/tests/fixtures/micro_weights.safetensors; do
    { printf '\x00'; cat "$f"; } > "$C/weights/$(basename "$f")"
done
for d in "$C"/*; do printf "%s: %s files\n" "$(basename "$d")" "$(find "$d" -type f | wc -l)"; done
