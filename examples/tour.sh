#!/usr/bin/env bash
# The main job on the bundled example data: import, inspect, correct, diff, annotate with two
# readers, measure agreement, make a consensus, split by patient, de-identify (annotations and
# the split follow), scan for PHI, export for nnU-Net / MONAI / CSV, verify, share. Works on a copy in a temp folder; the repo stays untouched.
#
#   examples/tour.sh            (builds cohort in release mode first)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin cohort
cohort() { "$here/target/release/cohort" "$@"; }
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cp -r "$here/examples/data" "$work/ds"
cd "$work/ds"
export COHORT_USER=curator

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "init and import: commit the PACS export"
cohort init
cohort commit -m "import PACS export"
cohort ls | head -4
cohort find -w Modality=MR -w 'SliceThickness<=3' --show SeriesDescription,SliceThickness | head -3
cohort find --by series --show Modality,SeriesDescription | head -4     # the series, with their counts

step "a correction to one header: only the header is stored again"
# Rewrite one instance with another series description, keeping its pixel data
# (any DICOM editor works; dcmtk's dcmodify here).
f=FAKE0000/study0/series0/IM00000.dcm
if command -v dcmodify >/dev/null; then
  dcmodify -nb -m "(0008,103E)=AXIAL 2mm CORRECTED" "$f"
else
  # No dcmtk: flip the description's text in place (same length, so the file stays valid).
  LC_ALL=C sed -i 's/FAKE AXIAL 2.5MM/FAKE AXIAL 2.0MM/' "$f"
fi
cohort status
cohort diff                                      # before committing: the attribute that changed
cohort commit -m "correct series description"
cohort diff HEAD~1 HEAD
cohort du

step "a mistake undone, an old version read, a viewer's litter ignored"
printf 'oops' > "$f"                             # a file overwritten by mistake
cohort restore "$f"                              # back as committed; HEAD does not move
cohort cat HEAD~1 "$f" | cmp -s - "$f" || echo "$f now differs from its imported version"
echo "commits that changed it: $(cohort log --json -- "$f" | grep -c '"id"')"
printf '.DS_Store\nThumbs.db\n' > .cohortignore && touch FAKE0001/.DS_Store
cohort status                                    # only .cohortignore is new
cohort commit -m "ignore viewer files"
rm FAKE0001/.DS_Store   # deid below keeps DICOM only: .cohortignore stays on this branch

step "two curators fix the same instance on two branches: the merge takes both fixes, attribute by attribute"
# fix FILE TAG VALUE OLD NEW: set TAG to VALUE with dcmodify, or without dcmtk replace OLD by
# NEW in place (same length).
fix() { if command -v dcmodify >/dev/null; then dcmodify -nb -m "$2=$3" "$1"; else LC_ALL=C sed -i "s|$4|$5|" "$1"; fi; }
f=FAKE0000/study0/series0/IM00001.dcm
cohort branch site-fix
fix "$f" "(0008,1030)" "FAKE CT CHEST NON CONTRAST" "W/O CONTRAST" "NON CONTRAST"
cohort commit -m "study description: non contrast"
cohort checkout site-fix
fix "$f" "(0008,0080)" "FAKE CENTRAL HOSPITAL" "GENERAL HOSPITAL" "CENTRAL HOSPITAL"
cohort commit -m "institution: central hospital"
cohort checkout main
cohort merge site-fix
cohort diff HEAD~1 HEAD

step "two sites add patients to clinical.csv on two branches: the table merges row by row"
printf 'patient_id,age,site\nFAKE0000,54,A\n' > clinical.csv
cohort commit -m "clinical data"
cohort branch site-b
printf 'FAKE0001,61,A\n' >> clinical.csv
cohort commit -m "site A: FAKE0001"
cohort checkout site-b
printf 'FAKE0002,47,B\n' >> clinical.csv
cohort commit -m "site B: FAKE0002"
cohort checkout main
cohort merge site-b
cohort diff -p HEAD~1 HEAD

ann="$here/examples/annotations"
step "annotate: two readers label every CT series; agreement; majority consensus"
for r in a b; do
  cohort annotate import main "$ann/finding-reader-$r.csv" --task finding --kind label \
    --reader "reader-$r" --source retrospective
done
cohort agreement --task finding
cohort consensus --task finding --method majority

step "segment: each reader's lesion masks (NIfTI on the series grid); Dice between readers"
while read -r series mask; do
  reader=${mask%.nii.gz}; reader=reader-${reader##*-}
  cohort annotate import main "$here/$mask" --task lesion --kind segmentation --reader "$reader" \
    --source retrospective --series "$series" --labels 1=lesion -m "lesion mask by $reader" > /dev/null
done < "$ann/masks.txt"
cohort agreement --task lesion
cohort consensus --task lesion --method staple
cohort annotate list

step "split by patient (60/20/20, stratified by the consensus finding); check for leakage"
cohort split create --name v1 --ratios 60,20,20 --stratify finding --seed 1
cohort split show --name v1
cohort split check --name v1

step "run your own script as a recorded step (command, inputs, outputs, git commit of the code)"
cohort run -m "count instances per series" --output derived/series_counts.csv -- python3 "$here/examples/scripts/series_counts.py"
cohort show HEAD | sed -n '/Activity/,$p'
cohort rerun HEAD

step "de-identify (DICOM PS3.15 Basic Profile + modified dates): annotations and split follow"
head -c 32 /dev/urandom > "$work/deid.key"
cohort deid main --key-file "$work/deid.key" --option retain-longitudinal-temporal-information-modified-dates --keep 'derived/*' -m "de-identify for research"
cohort ls deid | head -3
cohort deid-report deid | head -12
cohort annotate list deid

step "independent PHI scan: the de-identified branch passes, the identified one does not"
cohort phi-scan deid
if cohort phi-scan main > /dev/null; then echo "unexpected: identified data passed"; exit 1; else echo "main (identified): findings, as expected"; fi

step "export for training: nnU-Net v2 raw layout, a MONAI datalist, a CSV; each with a manifest"
cohort export deid "$work/nnunet" --split v1 --format nnunet --task lesion
(cd "$work/nnunet" && find . -type f | sort | head -8 && cat dataset.json)
cohort export deid "$work/monai" --split v1 --format monai --task lesion
cohort export deid "$work/csv" --split v1 --part train --format csv --task finding
head -3 "$work/csv/dataset.csv"

step "provenance for an auditor: lineage of one image, W3C PROV, a dataset card, signatures"
img=$(cohort ls deid | awk '/modality=CT/ {print $4; exit}')
cohort blame "$img" deid
cohort prov deid > "$work/provenance.json"
echo "PROV-JSON: $(wc -c < "$work/provenance.json") bytes in $work/provenance.json"
cohort card deid --format html "$work/card.html"
cohort card deid | sed -n '/## Summary/,/## Composition/p'
cohort keygen "$work/curator.key" --signer "A. Curator" > /dev/null
cohort checkout deid
cohort commit --allow-empty -m "reviewed for release" --sign "$work/curator.key"
cohort verify

step "share: push the de-identified branch to a remote (a folder here; s3://bucket/prefix works the same), partial clone of the train part"
cohort remote add research "$work/remote"
cohort push research deid
cohort clone "$work/remote" "$work/gpu-node" --rev deid --split v1 --part train
(cd "$work/gpu-node" && cohort du | tail -2 && cohort export deid "$work/gpu-train" --split v1 --part train --format nnunet --task lesion)
cohort verify-export "$work/gpu-train"           # before training: still exactly what was exported

step "export a state byte for byte, and check the whole store"
cohort export deid "$work/export" --link hardlink
find "$work/export" -type f | wc -l
cohort tag v1 deid
cohort push research --tag v1                    # the state a model was trained on, on the remote
# The identified branch pushed by mistake: deleted there, and remote gc removes its objects.
cohort push research main
cohort push research main --delete
cohort remote gc research
cohort op log -n 4
cohort fsck
