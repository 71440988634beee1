#!/usr/bin/env python3
"""Generate ps3.15-table-e1-1-2024b.json from the innolitics/dicom-standard extraction.

Usage (from any directory; python3 standard library only):

    python3 schema/deid/generate.py [SOURCE_JSON] [OUTPUT_JSON]

SOURCE_JSON defaults to ../../../shared/dicom-standard/confidentiality_profile_attributes.json
relative to this script (the project's shared/ folder); OUTPUT_JSON defaults to
ps3.15-table-e1-1-2024b.json beside this script. The output is deterministic: rows keep the
source order and keys are written in a fixed order, so regenerating an unchanged source gives a
byte-identical file.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = os.path.join(
    HERE, "..", "..", "..", "shared", "dicom-standard", "confidentiality_profile_attributes.json"
)
DEFAULT_OUTPUT = os.path.join(HERE, "ps3.15-table-e1-1-2024b.json")

# (cohort option name, innolitics key, table column title, CID 7050 code)
COLUMNS = [
    ("retain-safe-private", "rtnSafePrivOpt", "Rtn. Safe Priv. Opt.", "113111"),
    ("retain-uids", "rtnUIDsOpt", "Rtn. UIDs Opt.", "113110"),
    ("retain-device-identity", "rtnDevIdOpt", "Rtn. Dev. Id. Opt.", "113109"),
    ("retain-institution-identity", "rtnInstIdOpt", "Rtn. Inst. Id. Opt.", "113112"),
    ("retain-patient-characteristics", "rtnPatCharsOpt", "Rtn. Pat. Chars. Opt.", "113108"),
    ("retain-longitudinal-temporal-information-full-dates", "rtnLongFullDatesOpt",
     "Rtn. Long. Full Dates Opt.", "113106"),
    ("retain-longitudinal-temporal-information-modified-dates", "rtnLongModifDatesOpt",
     "Rtn. Long. Modif. Dates Opt.", "113107"),
    ("clean-descriptors", "cleanDescOpt", "Clean Desc. Opt.", "113105"),
    ("clean-structured-content", "cleanStructContOpt", "Clean Struct. Cont. Opt.", "113104"),
    ("clean-graphics", "cleanGraphOpt", "Clean Graph. Opt.", "113103"),
]
BASIC_ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
OPTION_ACTIONS = {"K", "C"}
TAG_RE = re.compile(r"^\([0-9A-FX]{4},[0-9A-FX]{4}\)$")
PRIVATE_PATTERN = "(GGGG,EEEE) WHERE GGGG IS ODD"
KNOWN_KEYS = {"name", "tag", "id", "stdCompIOD", "basicProfile"} | {c[1] for c in COLUMNS}


def main(argv):
    source = argv[1] if len(argv) > 1 else DEFAULT_SOURCE
    output = argv[2] if len(argv) > 2 else DEFAULT_OUTPUT
    with open(source, encoding="utf-8") as f:
        src_rows = json.load(f)

    rows = []
    for r in src_rows:
        unknown = set(r) - KNOWN_KEYS
        if unknown:
            raise SystemExit(f"unknown key(s) {sorted(unknown)} in row {r.get('tag')}")
        tag = r["tag"].upper()
        if tag != PRIVATE_PATTERN and not TAG_RE.match(tag):
            raise SystemExit(f"unparsable tag {r['tag']!r}")
        basic = r["basicProfile"]
        if basic not in BASIC_ACTIONS:
            raise SystemExit(f"unknown basic action {basic!r} for {tag}")
        options = {}
        for name, key, _title, _code in COLUMNS:
            if key in r:
                if r[key] not in OPTION_ACTIONS:
                    raise SystemExit(f"unknown option action {r[key]!r} for {tag}/{name}")
                options[name] = r[key]
        rows.append({
            "tag": tag,
            "name": r["name"],
            "in_std_comp_iod": r["stdCompIOD"] == "Y",
            "basic": basic,
            "options": options,
        })

    doc = {
        "revision": "2024b",
        "source": {
            "standard": "DICOM PS3.15 2024b, Annex E, Table E.1-1 "
                        "Application Level Confidentiality Profile Attributes",
            "extraction": "innolitics/dicom-standard, standard/confidentiality_profile_attributes.json "
                          "(regenerated 2024-04-18)",
            "license": "The extraction is MIT licensed, Copyright (c) 2017 Innolitics, LLC; "
                       "see LICENSE-innolitics-dicom-standard.txt beside this file",
            "generator": "schema/deid/generate.py",
        },
        "source_row_count": len(src_rows),
        "columns": [
            {"name": n, "source_key": k, "title": t, "cid7050": c} for n, k, t, c in COLUMNS
        ],
        "rows": rows,
    }
    # One row per line keeps diffs between revisions readable.
    rows_json = doc.pop("rows")
    head = json.dumps(doc, indent=2, ensure_ascii=False)
    body = ",\n".join("    " + json.dumps(r, ensure_ascii=False) for r in rows_json)
    text = head[:-2] + ',\n  "rows": [\n' + body + "\n  ]\n}\n"
    json.loads(text)  # self-check
    with open(output, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv)
