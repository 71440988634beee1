"""Count DICOM files per series folder: a stand-in for a curator's own processing step,
run under `cohort run` so that its command, inputs, outputs and git commit are recorded."""
import os

rows = []
for root, _dirs, files in sorted(os.walk(".")):
    if root.startswith("./.cohort") or root.startswith("./derived"):
        continue
    n = sum(1 for f in files if f.endswith(".dcm"))
    if n:
        rows.append(f"{root[2:]},{n}")
os.makedirs("derived", exist_ok=True)
with open("derived/series_counts.csv", "w") as f:
    f.write("series_folder,instances\n" + "\n".join(sorted(rows)) + "\n")
