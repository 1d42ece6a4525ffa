#!/usr/bin/env python3
"""Conformance report: which OASIS MQTT normative statements are cited by tests.

Usage:
    python3 scripts/conformance.py            # writes docs/conformance.md
    python3 scripts/conformance.py --check    # same, exit 1 on unknown/malformed ids
    python3 scripts/conformance.py --check --strict   # also exit 1 on ambiguous citations
    python3 scripts/conformance.py --stdout   # print the report instead of writing it

Statement tables (one row per statement id, tab separated: id, section, kind, text):
    docs/spec/mqtt-v5-statements.tsv     MQTT Version 5.0 (OASIS Standard, 7 March 2019)
    docs/spec/mqtt-v311-statements.tsv   MQTT Version 3.1.1 (OASIS Standard, 29 October 2014)

Citation syntax (anywhere on a line, in comments, doc comments or docstrings):
    v5 [MQTT-3.1.2-4]                  a v5 statement
    v3.1.1 [MQTT-3.1.2-4]              a v3.1.1 statement (ids are reused across versions!)
    v5 [MQTT-3.3.1-12], [MQTT-3.3.1-13]
                                       a version prefix applies to every following id on
                                       the same line until the next prefix
    v5/v3.1.1 [MQTT-4.7.2-1]           both versions ("v5 and v3.1.1" works too)
    [MQTT-4.7.2-1]                     no prefix on the line: both versions (counted for
                                       each version whose table has the id)
    [MQTT-3.3.2-3] (v5)                a "(v5)" / "(v3.1.1)" right after an id applies to it
    [MQTT-3.3.2-15] .. [MQTT-3.3.2-20] ranges ("..", "to") and [MQTT-3.3.2-15..18] expand
A prefix that ends a line with no id after it carries over to the next line (wrapped
docstrings such as "... (v3.1.1\\n [MQTT-3.3.1-9])").

What counts as a TEST citation:
  * any citation in a Rust file below a `tests/` directory (integration tests, their
    helpers in tests/common are reported with a "(helper)" suffix);
  * any citation inside a `#[cfg(test)] mod ... { }` block of any other Rust file;
  * any citation in a Python file `test_*.py` below a `tests/` directory.
The test name is the fn that follows a comment block (doc comment above a #[test] fn),
otherwise the enclosing fn; for Python the enclosing `def test_*`.
Other citations in Rust files below a `src/` directory are IMPLEMENTATION references.
Citations anywhere else (.rs/.py) are only checked for unknown ids.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "conformance.md"
TABLES = {
    "v5": ROOT / "docs" / "spec" / "mqtt-v5-statements.tsv",
    "v3.1.1": ROOT / "docs" / "spec" / "mqtt-v311-statements.tsv",
}
VERSIONS = ("v5", "v3.1.1")
# Sections copied into the report: the choices the specifications leave open (written by
# hand) and the engine's protocol state table (rendered by its test, see the file).
INCLUDED = [
    ("Choices the specifications leave open", ROOT / "docs" / "spec" / "choices.md"),
    ("Protocol state table: every packet in every state", ROOT / "docs" / "spec" / "protocol-table.md"),
]
TITLES = {"v5": "MQTT 5.0", "v3.1.1": "MQTT 3.1.1"}

# Ids as printed in the specifications themselves (typos in the OASIS text, or Appendix
# numbering that differs from the body). A citation of the alias counts for the canonical id.
ALIASES = {
    "v3.1.1": {
        "MQTT-3.1.2.7": "MQTT-3.1.2-7",  # body and Appendix B print "[MQTT-3.1.2.7]"
        "MQTT-3-8.3-4": "MQTT-3.8.3-4",  # body and Appendix B print "[MQTT-3-8.3-4]"
        "MQTT-3.3.1.-1": "MQTT-3.3.1-1",  # body prints "[MQTT-3.3.1.-1]"
        "MQTT-3.2.21": "MQTT-3.2.2-1",  # body prints "[MQTT-3.2.21]"
    },
    "v5": {
        "MQTT-4.2.0-1": "MQTT-4.2-1",  # Appendix B numbering; the body says [MQTT-4.2-1]
    },
}

SKIP_DIRS = {".git", "target", "node_modules", "__pycache__", ".venv", "venv", "docs", "corpus"}
SELF = Path(__file__).resolve()

ID_RE = re.compile(r"MQTT-\d[\d.\-]*(?:\d|\?)(?:\.\.\d+)?")
# Version markers. "v5/v3.1.1", "v5 and v3.1.1", "v3.1.1/v5" mean both.
VER_RE = re.compile(
    r"(?<![\w.])(?:"
    r"(?P<both>v5(?:\.0)?\s*(?:/|and|&|,)\s*v3\.1\.1|v3\.1\.1\s*(?:/|and|&|,)\s*v5(?:\.0)?)"
    r"|(?P<v5>v5(?:\.0)?)|(?P<v311>v3\.1\.1|v311))(?![\w])"
)
POSTFIX_RE = re.compile(r"^\]?\s*\(\s*(v5(?:\.0)?|v3\.1\.1)\s*\)")
RANGE_GAP_RE = re.compile(r"^\]?\s*(?:\.\.\.?|to|through|–|—)\s*\[?$")
# A line that ends with an id (then only "]", ",", ";", ")" or spaces) continues a list when the
# next line starts (after comment markers / quotes / "(") with an id.
LIST_TAIL_RE = re.compile(r"^\]?[\s,;)]*$")
LIST_HEAD_RE = re.compile(r"^[\s/*#!\"'(]*\[?$")

# Ids that state the same requirement in 3.1.1 and 5.0. Any other id present in both tables means
# something different in each version, so citing it without a version prefix (or for both
# versions at once) is reported as ambiguous.
SAME_MEANING = set("""
MQTT-3.1.0-1 MQTT-3.1.0-2 MQTT-3.1.2-1 MQTT-3.1.2-2 MQTT-3.1.2-3 MQTT-3.1.2-9 MQTT-3.1.2-10
MQTT-3.1.3-1 MQTT-3.1.3-2 MQTT-3.1.3-3 MQTT-3.1.3-4 MQTT-3.1.3-5 MQTT-3.1.3-6 MQTT-3.1.4-1
MQTT-3.3.1-1 MQTT-3.3.1-2 MQTT-3.3.1-3 MQTT-3.3.1-4 MQTT-3.3.1-5 MQTT-3.3.2-1 MQTT-3.3.2-2
MQTT-3.3.2-3 MQTT-3.3.4-1 MQTT-3.6.1-1 MQTT-3.8.1-1 MQTT-3.8.3-1 MQTT-3.8.4-1 MQTT-3.8.4-2
MQTT-3.8.4-3 MQTT-3.9.3-1 MQTT-3.9.3-2 MQTT-3.10.1-1 MQTT-3.10.3-1 MQTT-3.10.3-2 MQTT-3.10.4-1
MQTT-3.10.4-2 MQTT-3.10.4-3 MQTT-3.10.4-4 MQTT-3.10.4-5 MQTT-3.10.4-6 MQTT-3.12.4-1
MQTT-3.14.1-1 MQTT-3.14.4-3 MQTT-4.1.0-1 MQTT-4.3.1-1 MQTT-4.4.0-1 MQTT-4.5.0-1 MQTT-4.5.0-2
MQTT-4.6.0-1 MQTT-4.6.0-2 MQTT-4.6.0-3 MQTT-4.6.0-4 MQTT-4.7.2-1 MQTT-4.7.3-1 MQTT-4.7.3-2
MQTT-4.7.3-3 MQTT-4.7.3-4 MQTT-6.0.0-1 MQTT-6.0.0-2 MQTT-6.0.0-3 MQTT-6.0.0-4
""".split())


class SoftCarry:
    def __init__(self, versions):
        self.versions = versions


# ----------------------------------------------------------------------------- tables


def id_key(sid: str):
    """Numeric sort key: MQTT-1.5.4-1 < MQTT-3.1.2-2 < MQTT-3.1.2-10 < MQTT-3.10.1-1."""
    m = re.fullmatch(r"MQTT-([\d.]+)-(\d+)", sid)
    if not m:
        return ((10**6,), sid)
    return (tuple(int(x) for x in m.group(1).split(".")) + (-1, int(m.group(2))), sid)


@dataclass
class Statement:
    sid: str
    section: str
    kind: str
    text: str
    tests: list = field(default_factory=list)  # (file, name)
    impl: list = field(default_factory=list)  # (file, line)


def load_table(path: Path) -> dict[str, Statement]:
    rows: dict[str, Statement] = {}
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:4] != ["id", "section", "kind", "text"]:
            sys.exit(f"{path}: unexpected header {header}")
        for n, line in enumerate(f, 2):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                sys.exit(f"{path}:{n}: expected 4 tab-separated fields")
            sid, section, kind, text = parts
            if sid in rows:
                sys.exit(f"{path}:{n}: duplicate id {sid}")
            rows[sid] = Statement(sid, section, kind, text)
    return rows


# ----------------------------------------------------------------------------- citations


@dataclass
class Citation:
    path: str  # relative to ROOT
    line: int
    raw: str  # as written
    versions: frozenset  # versions the citation is attributed to
    explicit: bool  # a version prefix/postfix applied (False: bare id, both versions)
    context: str


def expand(raw: str) -> list[str]:
    """MQTT-3.3.2-15..18 -> 15,16,17,18; anything else unchanged."""
    m = re.fullmatch(r"(MQTT-[\d.]+-)(\d+)\.\.(\d+)", raw)
    if m:
        a, b = int(m.group(2)), int(m.group(3))
        if a < b <= a + 40:
            return [f"{m.group(1)}{i}" for i in range(a, b + 1)]
        return [f"{m.group(1)}{a}", f"{m.group(1)}{b}"]
    return [raw]


def parse_line(text: str, carry):
    """Returns ([(raw_id, versions|None, explicit)], carry_for_next_line)."""
    tokens = []
    for m in VER_RE.finditer(text):
        if m.group("both"):
            v = frozenset(VERSIONS)
        elif m.group("v5"):
            v = frozenset({"v5"})
        else:
            v = frozenset({"v3.1.1"})
        tokens.append((m.start(), m.end(), "ver", v))
    for m in ID_RE.finditer(text):
        tokens.append((m.start(), m.end(), "id", m.group(0)))
    tokens.sort(key=lambda t: t[0])
    # Walk the tokens left to right: a marker sets the running prefix, an id takes it (or a
    # "(v5)" written right after it); a marker used as such a postfix is consumed.
    out = []
    if isinstance(carry, SoftCarry):
        first = ID_RE.search(text)
        carry = carry.versions if first and LIST_HEAD_RE.match(text[: first.start()]) else None
    current = carry
    last_kind = None
    consumed = set()
    prev_id = None  # (index in out, end position)
    for i, (start, end, kind, val) in enumerate(tokens):
        if i in consumed:
            continue
        if kind == "ver":
            current = val
            last_kind = "ver"
            continue
        versions, explicit = current, current is not None
        pm = POSTFIX_RE.match(text[end:])
        if pm:
            versions = frozenset({"v5"}) if pm.group(1).startswith("v5") else frozenset({"v3.1.1"})
            explicit = True
            # the marker token inside the postfix must not change the running prefix
            for j in range(i + 1, len(tokens)):
                if tokens[j][2] == "ver" and tokens[j][0] < end + pm.end():
                    consumed.add(j)
        # range "[A] .. [B]"
        if prev_id is not None and RANGE_GAP_RE.match(text[prev_id[1]:start]):
            a_raw = out[prev_id[0]][0]
            ma = re.fullmatch(r"(MQTT-[\d.]+-)(\d+)", a_raw)
            mb = re.fullmatch(r"(MQTT-[\d.]+-)(\d+)", val)
            if ma and mb and ma.group(1) == mb.group(1):
                a, b = int(ma.group(2)), int(mb.group(2))
                if a + 1 < b <= a + 40:
                    pv, pe = out[prev_id[0]][1], out[prev_id[0]][2]
                    for k in range(a + 1, b):
                        out.append((f"{ma.group(1)}{k}", pv, pe))
        out.append((val, versions, explicit))
        prev_id = (len(out) - 1, end)
        last_kind = "id"
    if last_kind == "ver":
        next_carry = current  # dangling prefix: "... (v3.1.1\n [MQTT-3.3.1-9])"
    elif last_kind == "id" and current is not None and LIST_TAIL_RE.match(text[prev_id[1]:]):
        next_carry = SoftCarry(current)  # a wrapped list of ids: applies if the next line starts with one
    else:
        next_carry = None
    return out, next_carry


# ----------------------------------------------------------------------------- rust


def blank_rust(src: str) -> str:
    """Replaces comments and string/char literal contents by spaces (newlines kept), so
    that braces and `fn` can be found in code only."""
    out = list(src)
    n = len(src)
    i = 0

    def blank(a, b):
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if c == "/" and i + 1 < n and src[i + 1] == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif c == "/" and i + 1 < n and src[i + 1] == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "rb" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'(?:br|r)(#*)"', src[i:])
            if m:
                close = '"' + m.group(1)
                j = src.find(close, i + m.end())
                j = n if j < 0 else j + len(close)
                blank(i, j)
                i = j
            elif src.startswith('b"', i):
                j = skip_string(src, i + 2)
                blank(i, j)
                i = j
            elif src.startswith("b'", i):
                j = skip_char(src, i + 1)
                blank(i, j)
                i = j
            else:
                i += 1
        elif c == '"':
            j = skip_string(src, i + 1)
            blank(i, j)
            i = j
        elif c == "'":
            j = skip_char(src, i)
            if j > i + 1:
                blank(i, j)
                i = j
            else:
                i += 1  # lifetime or label
        else:
            i += 1
    return "".join(out)


def skip_string(src: str, j: int) -> int:
    n = len(src)
    while j < n:
        if src[j] == "\\":
            j += 2
        elif src[j] == '"':
            return j + 1
        else:
            j += 1
    return n


def skip_char(src: str, i: int) -> int:
    """i at a quote; returns the end of a char literal, or i+1 for a lifetime."""
    n = len(src)
    if i + 1 < n and src[i + 1] == "\\":
        j = i + 2
        while j < n and j < i + 12 and src[j] != "'":
            j += 1
        return j + 1 if j < n and src[j] == "'" else i + 1
    if i + 2 < n and src[i + 2] == "'" and src[i + 1] != "\n":
        return i + 3
    return i + 1


@dataclass
class RustFile:
    lines: list  # original lines
    code: list  # blanked lines
    fns: list  # (name, decl_line, end_line, is_test) 1-based, inclusive
    test_spans: list  # (start_line, end_line) of #[cfg(test)] mod blocks
    external_test_mods: list  # names of `#[cfg(test)] mod x;`


def analyse_rust(src: str) -> RustFile:
    code_text = blank_rust(src)
    lines = src.split("\n")
    code = code_text.split("\n")
    line_of = []  # char index -> line number (1-based)
    for ln, l in enumerate(code, 1):
        line_of.extend([ln] * (len(l) + 1))
    # brace pairs
    pair = {}
    stack = []
    for idx, ch in enumerate(code_text):
        if ch == "{":
            stack.append(idx)
        elif ch == "}" and stack:
            pair[stack.pop()] = idx
    n = len(code_text)

    def body_after(pos):
        """First '{' (body) or ';' (no body) after pos, at paren depth 0."""
        depth = 0
        for k in range(pos, n):
            ch = code_text[k]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif ch == ";" and depth <= 0:
                return None
            elif ch == "{" and depth <= 0:
                return k
        return None

    fns = []
    for m in re.finditer(r"\bfn\s+([A-Za-z_]\w*)", code_text):
        open_ = body_after(m.end())
        decl = line_of[m.start()]
        if open_ is None:
            continue
        close = pair.get(open_)
        end = line_of[close] if close is not None else len(code)
        fns.append([m.group(1), decl, end, attrs_mention_test(lines, code, decl)])
    test_spans = []
    ext = []
    for m in re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]\s*(?:#\s*\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([{;])", code_text):
        if m.group(2) == ";":
            ext.append(m.group(1))
            continue
        open_ = m.end() - 1
        close = pair.get(open_)
        test_spans.append((line_of[m.start()], line_of[close] if close is not None else len(code)))
    return RustFile(lines, code, [tuple(f) for f in fns], test_spans, ext)


def attrs_mention_test(lines, code, decl) -> bool:
    """Looks upwards from a fn declaration over attributes, comments and blank lines for an
    attribute naming a test (#[test], #[tokio::test], #[rstest], #[test_case(..)], ...)."""
    head = code[decl - 1]
    text = head[: head.find("fn")] if "fn" in head else ""
    k = decl - 2
    while k >= 0:
        c = code[k].strip()
        if c.endswith(("}", ";", "{")) and not c.startswith("#"):
            break  # the end of the previous item
        text = c + " " + text
        k -= 1
    return bool(re.search(r"#\s*\[\s*(?:\w+::)*\w*test\w*", text))


def rust_context(rf: RustFile, ln: int):
    """(fn name or None, is_test_fn) for a citation at line ln (1-based)."""
    if rf.lines[ln - 1].lstrip().startswith(("//!", "/*!")):
        return None, False  # inner (module) documentation
    if rf.code[ln - 1].strip() == "":
        # comment-only line: the next item, if it is a fn
        k = ln
        while k < len(rf.code):
            c = rf.code[k].strip()
            if c == "" or c.startswith("#[") or c.startswith("#!["):
                k += 1
                continue
            m = re.search(r"\bfn\s+([A-Za-z_]\w*)", c)
            if m:
                for f in rf.fns:
                    if f[1] == k + 1 and f[0] == m.group(1):
                        return f[0], f[3]
                return m.group(1), False
            break
    best = None
    for f in rf.fns:
        if f[1] <= ln <= f[2] and (best is None or f[1] >= best[1]):
            best = f
    if best:
        # report the outermost test fn if the innermost is a nested helper
        if not best[3]:
            for f in rf.fns:
                if f[3] and f[1] <= ln <= f[2]:
                    return f[0], True
        return best[0], best[3]
    return None, False


# ----------------------------------------------------------------------------- python


def python_context(lines, ln):
    """Name of the enclosing `def test_*` (or None) for line ln (1-based), by indentation."""
    line = lines[ln - 1]
    limit = len(line) - len(line.lstrip())
    for k in range(ln - 2, -1, -1):
        if limit == 0:
            return None  # module level
        l = lines[k]
        if not l.strip():
            continue
        ind = len(l) - len(l.lstrip())
        if ind >= limit:
            continue
        m = re.match(r"\s*(?:async\s+)?def\s+(\w+)", l)
        if m and m.group(1).startswith("test"):
            return m.group(1)
        limit = ind  # some other enclosing block (helper def, class, with, ...): keep looking
    return None


# ----------------------------------------------------------------------------- scan


def classify(rel: Path):
    parts = rel.parts
    if rel.suffix == ".rs":
        if "tests" in parts[:-1]:
            return "test-file"
        if "src" in parts[:-1]:
            return "src"
        return "other"
    if rel.suffix == ".py":
        if "tests" in parts[:-1] and rel.name.startswith("test_"):
            return "test-file"
        return "other"
    return None


def iter_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.resolve() == SELF:
                continue
            if p.suffix in (".rs", ".py"):
                yield p


@dataclass
class Hit:
    cit: Citation
    role: str  # "test" | "impl" | "other"
    test_name: str | None


def scan():
    hits: list[Hit] = []
    ext_test_files = set()
    rust_cache = {}
    files = list(iter_files())
    # first pass: external `#[cfg(test)] mod x;` files
    for p in files:
        if p.suffix == ".rs":
            try:
                src = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if "MQTT-" not in src and "cfg(test)" not in src:
                continue
            rf = analyse_rust(src)
            rust_cache[p] = rf
            for name in rf.external_test_mods:
                base = p.parent if p.name in ("mod.rs", "lib.rs", "main.rs") else p.parent / p.stem
                ext_test_files.add((base / f"{name}.rs").resolve())
                ext_test_files.add((base / name / "mod.rs").resolve())
    for p in files:
        rel = p.relative_to(ROOT)
        kind = classify(rel)
        if kind is None:
            continue
        try:
            src = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "MQTT-" not in src:
            continue
        lines = src.split("\n")
        rf = rust_cache.get(p) if p.suffix == ".rs" else None
        whole_file_test = kind == "test-file" or p.resolve() in ext_test_files
        carry = None
        for ln, text in enumerate(lines, 1):
            if "MQTT-" not in text and not VER_RE.search(text):
                carry = None
                continue
            ids, carry = parse_line(text, carry)
            if not ids:
                continue
            role, name = "other", None
            if p.suffix == ".rs" and rf is not None:
                in_test_mod = any(a <= ln <= b for a, b in rf.test_spans)
                if whole_file_test or in_test_mod:
                    role = "test"
                    fname, is_test = rust_context(rf, ln)
                    if fname is None:
                        name = "<module>"
                    else:
                        name = fname if is_test else f"{fname} (helper)"
                elif kind == "src":
                    role = "impl"
            elif p.suffix == ".py" and kind == "test-file":
                role = "test"
                name = python_context(lines, ln) or "<module>"
            for raw, versions, explicit in ids:
                for one in expand(raw):
                    cit = Citation(
                        str(rel), ln, one,
                        versions if versions is not None else frozenset(VERSIONS),
                        explicit, text.strip(),
                    )
                    hits.append(Hit(cit, role, name))
    return hits


# ----------------------------------------------------------------------------- report


def resolve(raw: str, version: str, table):
    if raw in table:
        return raw
    alias = ALIASES.get(version, {}).get(raw)
    if alias and alias in table:
        return alias
    return None


def shorten(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def md_cell(s: str) -> str:
    return s.replace("|", "\\|")


def build(hits, tables):
    unknown = []  # (hit, reason)
    aliased = []  # (hit, version, canonical)
    ambiguous = []  # (hit, id): attributed to both versions, but the id means different things
    for h in hits:
        c = h.cit
        if len(c.versions) == len(VERSIONS):
            ids = {resolve(c.raw, v, tables[v]) for v in VERSIONS}
            if len(ids) == 1 and None not in ids and next(iter(ids)) not in SAME_MEANING:
                ambiguous.append((h, next(iter(ids))))
        matched_any = False
        for v in VERSIONS:
            if v not in c.versions:
                continue
            sid = resolve(c.raw, v, tables[v])
            if sid is None:
                continue
            matched_any = True
            if sid != c.raw:
                aliased.append((h, v, sid))
            st = tables[v][sid]
            if h.role == "test":
                key = (c.path, h.test_name)
                if key not in st.tests:
                    st.tests.append(key)
            elif h.role == "impl":
                key = (c.path, c.line)
                if key not in st.impl:
                    st.impl.append(key)
        if c.explicit:
            # every explicitly named version must know the id
            for v in sorted(c.versions):
                if resolve(c.raw, v, tables[v]) is None:
                    other = [o for o in VERSIONS if o != v and resolve(c.raw, o, tables[o])]
                    why = "placeholder / malformed id" if "?" in c.raw or not re.fullmatch(r"MQTT-[\d.]+-\d+", c.raw) and not other else f"not a {v} statement"
                    if other:
                        why += f" (exists in the {other[0]} table: wrong version prefix?)"
                    unknown.append((h, v, why))
        elif not matched_any:
            why = "placeholder / malformed id" if "?" in c.raw or not re.fullmatch(r"MQTT-[\d.]+-\d+", c.raw) else "in neither table"
            unknown.append((h, "v5+v3.1.1", why))
    return unknown, aliased, ambiguous


def render(tables, hits, unknown, aliased, ambiguous) -> str:
    out = []
    w = out.append
    n_test_hits = sum(1 for h in hits if h.role == "test")
    n_impl_hits = sum(1 for h in hits if h.role == "impl")
    w("# MQTT conformance: normative statements vs. tests")
    w("")
    w("Generated by `python3 scripts/conformance.py` (do not edit by hand; "
      "`python3 scripts/conformance.py --check` exits 1 when a citation names an unknown id).")
    w("")
    w("The statement lists are `docs/spec/mqtt-v5-statements.tsv` (MQTT Version 5.0, OASIS Standard "
      "7 March 2019) and `docs/spec/mqtt-v311-statements.tsv` (MQTT Version 3.1.1, OASIS Standard "
      "29 October 2014), one row per `[MQTT-x.x.x-y]` id of the specification text. The same id "
      "means different things in the two versions, so cite with a version prefix: "
      "`v5 [MQTT-3.1.2-4]`, `v3.1.1 [MQTT-3.1.2-6]`; a prefix applies to the following ids on the "
      "line; an id with no prefix on its line counts for both versions (for each version whose "
      "table has it).")
    w("")
    w("A citation is a **test** citation when it is in a Rust file below a `tests/` directory, "
      "inside a `#[cfg(test)] mod` of a Rust source file, or in a `tests/**/test_*.py` file; the "
      "test named is the fn following the comment (or the enclosing fn / `def test_*`; helpers are "
      "marked \"(helper)\"). Other citations in Rust files below `src/` are **implementation** "
      "references. `kind` is `server` when the statement constrains the Server (alone, or both "
      "sides, or the Server's handling of the packet) and `client` when it constrains only the Client.")
    w("")
    w(f"Scanned: {n_test_hits} test citations, {n_impl_hits} implementation citations.")
    w("")
    w("## Summary")
    w("")
    w("| Version | Scope | Statements | Covered by a test | Implementation reference only | Neither |")
    w("|---|---|---:|---:|---:|---:|")
    for v in VERSIONS:
        for scope in ("server-side", "all"):
            rows = [s for s in tables[v].values() if scope == "all" or s.kind == "server"]
            tested = sum(1 for s in rows if s.tests)
            impl_only = sum(1 for s in rows if not s.tests and s.impl)
            neither = sum(1 for s in rows if not s.tests and not s.impl)
            pct = f" ({100 * tested // len(rows)}%)" if rows else ""
            w(f"| {TITLES[v]} | {scope} | {len(rows)} | {tested}{pct} | {impl_only} | {neither} |")
    w("")
    w(f"Citations of unknown ids: **{len(unknown)}**; ambiguous citations (no version, id means "
      f"different things in 3.1.1 and 5.0): **{len(ambiguous)}** (see the sections at the end).")
    w("")
    for title, path in INCLUDED:
        w(f"## {title}")
        w("")
        w(f"(From `{path.relative_to(ROOT)}`.)")
        w("")
        w(path.read_text(encoding="utf-8").rstrip("\n"))
        w("")
    for v in VERSIONS:
        w(f"## {TITLES[v]} ({v})")
        w("")
        w("| id | section | kind | tests | implementation | statement |")
        w("|---|---|---|---|---|---|")
        for sid in sorted(tables[v], key=id_key):
            s = tables[v][sid]
            if s.tests:
                t = [f"`{f}::{n}`" for f, n in s.tests[:3]]
                if len(s.tests) > 3:
                    t.append(f"+{len(s.tests) - 3}")
                tests = "<br>".join(t)
            else:
                tests = "**not covered**"
            if s.impl:
                im = [f"`{f}:{l}`" for f, l in s.impl[:2]]
                if len(s.impl) > 2:
                    im.append(f"+{len(s.impl) - 2}")
                impl = "<br>".join(im)
            else:
                impl = ""
            w(f"| {sid} | {s.section} | {s.kind} | {md_cell(tests)} | {md_cell(impl)} | {md_cell(shorten(s.text, 110))} |")
        w("")
    w("## Citations of unknown ids")
    w("")
    if not unknown:
        w("None.")
    else:
        w("Each of these names an id that the statement table of the cited version does not have: "
          "a typo, a placeholder, or the wrong version prefix (ids are reused between 3.1.1 and 5.0 "
          "with different meanings).")
        w("")
        w("| where | cited | version | problem | line |")
        w("|---|---|---|---|---|")
        for h, v, why in sorted(unknown, key=lambda x: (x[0].cit.path, x[0].cit.line, x[0].cit.raw)):
            c = h.cit
            w(f"| `{c.path}:{c.line}` | `{c.raw}` | {v} | {md_cell(why)} | {md_cell(shorten(c.context, 100))} |")
    w("")
    w("## Ambiguous citations (same id, different statement in 3.1.1 and 5.0)")
    w("")
    if not ambiguous:
        w("None.")
    else:
        w("These ids are cited with no version prefix on the line (or for both versions at once), "
          "but the id names a different requirement in each version; the citation is counted for "
          "both, which is almost certainly wrong for one of them. Add `v5` or `v3.1.1` in front.")
        w("")
        w("| where | cited | 5.0 meaning | 3.1.1 meaning | line |")
        w("|---|---|---|---|---|")
        for h, sid in sorted(ambiguous, key=lambda x: (x[0].cit.path, x[0].cit.line, id_key(x[1]))):
            c = h.cit
            w(f"| `{c.path}:{c.line}` | `{c.raw}` | {md_cell(shorten(tables['v5'][sid].text, 70))} | "
              f"{md_cell(shorten(tables['v3.1.1'][sid].text, 70))} | {md_cell(shorten(c.context, 80))} |")
    w("")
    if aliased:
        w("## Citations of ids as printed in the specification")
        w("")
        w("These use the spelling the OASIS text itself prints (a typo in the specification); they "
          "are counted for the canonical id.")
        w("")
        w("| where | cited | version | counted as |")
        w("|---|---|---|---|")
        seen = set()
        for h, v, sid in sorted(aliased, key=lambda x: (x[0].cit.path, x[0].cit.line)):
            k = (h.cit.path, h.cit.line, h.cit.raw, v)
            if k in seen:
                continue
            seen.add(k)
            w(f"| `{h.cit.path}:{h.cit.line}` | `{h.cit.raw}` | {v} | {sid} |")
        w("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a citation has an unknown id")
    ap.add_argument("--strict", action="store_true",
                    help="with --check, also exit 1 on ambiguous (version-less) citations")
    ap.add_argument("--stdout", action="store_true", help="print the report instead of writing it")
    args = ap.parse_args(argv)
    tables = {v: load_table(p) for v, p in TABLES.items()}
    hits = scan()
    unknown, aliased, ambiguous = build(hits, tables)
    report = render(tables, hits, unknown, aliased, ambiguous)
    if args.stdout:
        sys.stdout.write(report + "\n")
    else:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(report + "\n", encoding="utf-8")
        print(f"wrote {OUT.relative_to(ROOT)}: {len(hits)} citations, {len(unknown)} unknown, "
              f"{len(ambiguous)} ambiguous")
    if unknown:
        for h, v, why in sorted(unknown, key=lambda x: (x[0].cit.path, x[0].cit.line)):
            print(f"{h.cit.path}:{h.cit.line}: {h.cit.raw} ({v}): {why}", file=sys.stderr)
    if args.check and (unknown or (args.strict and ambiguous)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
