"""Property-based ingest: whatever bytes or TSV-like text it is given, ingest either succeeds with
consistent outputs or raises the documented `DataError`, and a failure writes nothing.

Everything runs in-process on small temp files, so a few hundred examples take seconds.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnpipe.config import IngestParams
from rnnpipe.datafiles import read_split
from rnnpipe.errors import DataError, RnnpipeError
from rnnpipe.paths import SPLITS
from rnnpipe.steps.ingest import ingest

# RNNPIPE_HYPOTHESIS_EXAMPLES=5000 for a long hunt; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("RNNPIPE_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Characters that have broken text pipelines before: separators, every kind of line break and
# Unicode whitespace, NUL, a BOM, CJK, quotes and commas for the CSV reader.
TRICKY = "\t\r\n\x0b\x0c\x1c\x85\u2028\u3000\ufeff\x00\"',;| "
text_chars = st.one_of(st.sampled_from(TRICKY), st.sampled_from("abc好差质量"),
                       st.characters(codec="utf-8"))
# Clean document text: no control characters or line separators, so damage stays deliberate.
clean_texts = st.text(st.one_of(st.sampled_from("abc好差质量 ,;'\"\u3000"),
                                st.characters(codec="utf-8",
                                              exclude_categories=["Cc", "Zl", "Zp", "Cs"])),
                      max_size=12)
labels = st.one_of(st.sampled_from(["pos", "neg", "x", "", " ", "pos ", "label"]),
                   st.text(text_chars, max_size=4))
texts = st.text(text_chars, max_size=20)
line_endings = st.sampled_from(["\n", "\r\n", "\r"])
encodings = st.sampled_from(["utf-8", "utf-8-sig", "gb18030"])
params = st.fixed_dictionaries({
    "format": st.sampled_from(["auto", "tsv", "csv"]),
    "encoding": st.sampled_from(["auto", "auto", "utf-8", "gb18030"]),
    "on_bad_line": st.sampled_from(["error", "skip"]),
})


@st.composite
def tsv_like(draw: st.DrawFn) -> bytes:
    """A valid `label<TAB>text` corpus (2-3 labels, 3-8 documents each) with random damage:
    junk lines, missing separators, odd labels, duplicates, CSV headers, mixed line endings,
    in a random encoding. Roughly half the examples stay ingestible."""
    rows = []
    for label in draw(st.sampled_from([["pos", "neg"], ["pos", "neg", "中性"], ["a", "b"]])):
        for i in range(draw(st.integers(3, 8))):
            rows.append((label, "\t", f"{label} {i} {draw(clean_texts)}", draw(line_endings)))
    junk = st.tuples(labels, st.sampled_from(["\t", "", ",", "\t\t"]), texts, line_endings)
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else 0):
        rows.insert(draw(st.integers(0, len(rows))), draw(junk))
    if rows and draw(st.booleans()):
        rows.append(rows[draw(st.integers(0, len(rows) - 1))])  # a duplicate
    body = "".join(f"{label}{sep}{text}{end}" for label, sep, text, end in rows)
    if draw(st.integers(0, 4)) == 0:
        body = "label,text\n" + body  # sometimes a CSV header, for the CSV reader
    encoding = draw(encodings)
    return body.encode(encoding, errors="replace" if encoding == "gb18030" else "surrogatepass")


def check_ingest(payload: bytes, suffix: str, options: dict) -> None:
    """Ingest `payload` as a file named `corpus<suffix>`; it must succeed with consistent
    outputs or raise `DataError` (an `RnnpipeError`) having written nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / f"corpus{suffix}"
        source.write_bytes(payload)
        data, summary_path = root / "data", root / "ingest.json"
        try:
            summary = ingest(IngestParams(source=str(source), **options), data, summary_path)
        except DataError as exc:
            assert isinstance(exc, RnnpipeError) and str(exc)
            assert not summary_path.exists()
            assert not data.exists() or not any(data.iterdir())
            return
        splits = {name: read_split(data / f"{name}.tsv") for name in SPLITS}
        assert {name: len(split[0]) for name, split in splits.items()} == summary["splits"]
        assert sum(summary["splits"].values()) == summary["documents_kept"]
        assert set(summary["classes"]) == set(splits["train"][0])
        for name in SPLITS:  # every label in every split, every line label<TAB>text
            assert set(splits[name][0]) == set(summary["classes"])
            assert all(label.strip() and text.strip() for label, text in zip(*splits[name],
                                                                              strict=True))
        assert summary_path.exists() and summary["encoding"]


@SETTINGS
@given(payload=st.binary(max_size=400), suffix=st.sampled_from([".tsv", ".csv", ".txt"]),
       options=params)
def test_random_bytes_succeed_or_raise_data_error(payload: bytes, suffix: str,
                                                  options: dict) -> None:
    check_ingest(payload, suffix, options)


@SETTINGS
@given(payload=tsv_like(), suffix=st.sampled_from([".tsv", ".csv"]), options=params)
def test_tsv_like_text_succeeds_or_raises_data_error(payload: bytes, suffix: str,
                                                     options: dict) -> None:
    check_ingest(payload, suffix, options)


@st.composite
def archives(draw: st.DrawFn) -> tuple[bytes, str]:
    """A zip or tar holding a TSV-like member, or random bytes that claim to be an archive."""
    suffix = draw(st.sampled_from([".zip", ".tar", ".tar.gz", ".tgz"]))
    if draw(st.booleans()):
        return draw(st.binary(max_size=200)), suffix
    member = draw(st.sampled_from(["corpus.tsv", "wrap/corpus.tsv", "a/b.txt", "x.csv"]))
    content = draw(tsv_like())
    buffer = io.BytesIO()
    if suffix == ".zip":
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr(member, content)
    else:
        mode = "w" if suffix == ".tar" else "w:gz"
        with tarfile.open(fileobj=buffer, mode=mode) as tf:
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    payload = buffer.getvalue()
    if draw(st.booleans()):  # truncated or bit-flipped
        cut = draw(st.integers(0, len(payload)))
        payload = payload[:cut] + bytes(b ^ 0xFF for b in payload[cut:cut + 3])
    return payload, suffix


@settings(max_examples=max(1, EXAMPLES // 2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(archive=archives(), options=params)
def test_random_archives_succeed_or_raise_data_error(archive: tuple[bytes, str],
                                                     options: dict) -> None:
    payload, suffix = archive
    check_ingest(payload, suffix, options)
