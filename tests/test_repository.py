"""The repository stands alone: a clone with nothing beside it is complete.

No tracked file points outside the repository (a sibling folder, a machine path, a design or
style file that is not here, "the issue" a reader has never seen); every relative markdown link
of the docs resolves to a file in the repository; every ``§N`` citation of
docs/upbit-protocol.md names a section that exists; no test or source reads a path outside the
repository root; and the test suite collects in a bare copy of the tracked files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "docs" / "upbit-protocol.md"

# Folders that are never part of a checkout's content (used only when git is not available).
_NOT_CONTENT = {".git", ".venv", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache"}


@cache
def tracked_files() -> tuple[str, ...]:
    """Repository-relative paths of the tracked files (every file, outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [
            p.relative_to(ROOT).as_posix()
            for p in ROOT.rglob("*")
            if p.is_file()
            and not _NOT_CONTENT.intersection(p.relative_to(ROOT).parts)
            and not p.name.endswith((".egg-info", ".pyc"))
            and ".pytest_cache" not in p.parts
        ]
    return tuple(sorted(n for n in names if (ROOT / n).is_file()))


@cache
def text_of(name: str) -> str | None:
    """The file's text, or None for a binary file."""
    data = (ROOT / name).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_files() -> list[tuple[str, str]]:
    return [(n, t) for n in tracked_files() if (t := text_of(n)) is not None]


SELF = "tests/test_repository.py"
"""This guard names what it forbids, so the pattern checks skip it."""


def hits(pattern: re.Pattern[str], *, skip: frozenset[str] = frozenset()) -> list[str]:
    """``path:line: text`` for every line of a tracked text file matching ``pattern``."""
    found = []
    for name, text in text_files():
        if name in skip or name == SELF:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    return found


# ---------------------------------------------------------------------------------------------
# 1. Nothing refers to anything outside the repository.

# Machine paths that exist on some machine, not in a checkout. Not preceded by a word character,
# a dot or a slash, so URLs (https://host/home/...) and relative paths (a/tmp/b) do not count.
MACHINE_PATH = re.compile(r"(?<![\w./-])/(?:work|home|root|tmp|Users|mnt|srv)(?:/|\b)")

# Lines allowed to match a check below: (file, the exact text of the line, why). Keep it short;
# every entry needs a reason, and an entry whose line changed fails the stale check.
ALLOWED: tuple[tuple[str, str, str], ...] = (
    (
        "bench/collector_throughput.py",
        'out = "/tmp/collector_throughput.prof"',
        "a machine path the code needs at run time: the --profile output of a bench run, a "
        "scratch file that no test reads",
    ),
    (
        "tests/cli/test_demo_own_redis.py",
        'for entry in Path("/proc").iterdir():',
        "the kernel's process table, read to prove the demo's own redis-server process is gone",
    ),
)

OUTSIDE_REFERENCES: dict[str, re.Pattern[str]] = {
    "a sibling folder (../shared)": re.compile(r"\.\./shared|\bshared/upbit-"),
    "a design or style file that is not in the repository": re.compile(r"\b(?:DESIGN|STYLE)\.md"),
    "a document a reader has never seen": re.compile(
        r"design card|\bthe issue(?:'s| says)|\bissue #\d|\bthe brief\b", re.IGNORECASE
    ),
}


@pytest.mark.parametrize(
    ("line", "caught"),
    [
        ('SAMPLES = ROOT.parent / "shared" / "upbit-samples"', False),  # the climb check's job
        ("frames as in ../shared/upbit-samples/trade.jsonl", True),
        ("the contract of DESIGN.md, 'Payloads'", True),
        ("(STYLE.md: pure core)", True),
        ("The issue's targets are not met", True),
        ("rules (issue #3)", True),
        ("as the design card asks", True),
        ("a file in /work/shared/upbit-samples", True),
        ('out = "/tmp/x.prof"', True),
        ("cd /home/me/upbit-fanout", True),
        ("the clock, shared by every process", False),
        ("https://docs.upbit.com/kr/reference/auth", False),
        ("https://example.com/home/page", False),
        ("tests/data/upbit-samples/*.jsonl", False),
        ("fixes the issue where a reconnect lost events", False),
    ],
)
def test_the_patterns_catch_what_they_should(line: str, caught: bool) -> None:
    patterns = [*OUTSIDE_REFERENCES.values(), MACHINE_PATH]
    assert any(p.search(line) for p in patterns) is caught


def not_allowed(found: list[str]) -> list[str]:
    allowed = {(name, text) for name, text, _reason in ALLOWED}
    return [hit for hit in found if (hit.split(":", 1)[0], hit.split(": ", 1)[1]) not in allowed]


@pytest.mark.parametrize("what", sorted(OUTSIDE_REFERENCES))
def test_no_tracked_file_refers_outside_the_repository(what: str) -> None:
    found = not_allowed(hits(OUTSIDE_REFERENCES[what]))
    assert not found, f"{len(found)} line(s) refer to {what}:\n" + "\n".join(found)


def test_no_machine_paths() -> None:
    found = not_allowed(hits(MACHINE_PATH))
    assert not found, "machine paths in tracked files:\n" + "\n".join(found)


def test_allow_list_is_not_stale() -> None:
    """Every allow-list entry still matches its line: a fixed line must leave the list too."""
    for name, text, reason in ALLOWED:
        assert reason
        content = text_of(name) or ""
        assert any(line.strip() == text for line in content.splitlines()), (name, text)


# ---------------------------------------------------------------------------------------------
# 2. The protocol reference is cited one way, and every cited section exists.

SECTION_CITE = re.compile(r"§(\d+(?:\.\d+)*)")
# Other ways of citing the protocol reference than ``docs/upbit-protocol.md §N``.
OTHER_CITATION = re.compile(
    r"(?<!docs/)(?<!\]\()upbit-protocol\.md|protocol reference \d|upbit-protocol\.md section",
    re.IGNORECASE,
)


def protocol_sections() -> set[str]:
    """Section ids of docs/upbit-protocol.md: headings ``## N.`` / ``### N.M``, and the items of
    numbered lists directly under a ``## N.`` heading (``§10.6`` is item 6 of section 10)."""
    sections: set[str] = set()
    current: str | None = None
    in_code = False
    for line in PROTOCOL.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = re.match(r"#{2,4} (\d+(?:\.\d+)*)\.? ", line)
        if heading:
            sections.add(heading.group(1))
            current = heading.group(1) if line.startswith("## ") else None
            continue
        item = re.match(r"(\d+)\. ", line)
        if item and current is not None:
            sections.add(f"{current}.{item.group(1)}")
    return sections


def test_protocol_reference_has_its_sections() -> None:
    sections = protocol_sections()
    # what code and docs cite today; a renumbering would break them
    for must in ("1", "2.1", "2.7", "3", "4.1", "4.7", "5", "6", "7", "8", "9", "10.15", "11"):
        assert must in sections, must
    assert {"12.1", "12.9", "13.1", "13.2", "13.3", "13.4"} <= sections


def test_every_section_citation_exists() -> None:
    sections = protocol_sections()
    wrong = []
    for name, text in text_files():
        for number, line in enumerate(text.splitlines(), 1):
            for match in SECTION_CITE.finditer(line):
                if match.group(1) not in sections:
                    wrong.append(f"{name}:{number}: §{match.group(1)} in: {line.strip()}")
    assert not wrong, "citations of sections that docs/upbit-protocol.md lacks:\n" + "\n".join(
        wrong
    )


def test_section_citations_say_what_they_cite() -> None:
    """A file with a bare ``§N`` names docs/upbit-protocol.md somewhere (it is what § means)."""
    unnamed = [
        name
        for name, text in text_files()
        if SECTION_CITE.search(text)
        and name != "docs/upbit-protocol.md"
        and "docs/upbit-protocol.md" not in text
        and "(upbit-protocol.md" not in text
    ]
    assert not unnamed, "files citing §N without naming docs/upbit-protocol.md: " + ", ".join(
        unnamed
    )


def test_protocol_reference_is_cited_one_way() -> None:
    found = hits(OTHER_CITATION, skip=frozenset({"docs/upbit-protocol.md"}))
    assert not found, "cite it as `docs/upbit-protocol.md §N`:\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------
# 3. Relative markdown links resolve inside the repository.

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def markdown_anchors(path: Path) -> set[str]:
    """GitHub-style anchors of the headings of a markdown file."""
    anchors = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_markdown_links_resolve() -> None:
    tracked = set(tracked_files())
    broken = []
    for name in sorted(n for n in tracked if n.endswith(".md")):
        text = text_of(name) or ""
        for number, line in enumerate(text.splitlines(), 1):
            for match in LINK.finditer(line):
                target = match.group(1) or match.group(2)
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                    continue
                path_part, _, anchor = target.partition("#")
                here = ROOT / name
                dest = (here.parent / path_part).resolve() if path_part else here
                rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else None
                if rel is None or not (rel in tracked or (dest.is_dir() and rel != ".")):
                    broken.append(f"{name}:{number}: {target} (not a file of the repository)")
                elif anchor and dest.suffix == ".md" and anchor not in markdown_anchors(dest):
                    broken.append(f"{name}:{number}: {target} (no heading #{anchor})")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


# ---------------------------------------------------------------------------------------------
# 4. `make test` needs nothing beside the checkout.

# A path climbing out of the file's own folder: ``Path(__file__)...parents[N]`` or ``.parent``
# chains, and a root variable followed by ``.parent``.
FILE_PARENTS = re.compile(
    r"Path\(__file__\)(?:\.resolve\(\))?(?P<chain>\.parents\[(?P<n>\d+)\]|(?:\.parent(?!s))+)"
    r"(?P<more>(?:\.parent(?!s))*)"
)
ROOT_VARIABLE = re.compile(r"^(\w+)\s*(?::[^=]+)?=\s*Path\(__file__\)", re.MULTILINE)
HOME_OR_ABSOLUTE = re.compile(
    r"expanduser\(|Path\.home\(|[\"']~/|(?:Path|open)\(\s*f?[\"']/(?!proc/)"
)


def climbs_out(name: str, text: str) -> list[str]:
    depth = len(Path(name).parts) - 1  # folders between the repository root and the file
    found: list[str] = []
    roots: list[str] = []
    for m in FILE_PARENTS.finditer(text):
        # folders climbed from the file's own folder: parents[N] climbs N, .parent k times k - 1
        up = int(m.group("n")) if m.group("n") else m.group("chain").count(".parent") - 1
        up += m.group("more").count(".parent")
        if up > depth:
            found.append(f"{name}: {m.group(0)} leaves the repository")
        line_start = text.rfind("\n", 0, m.start()) + 1
        assigned = ROOT_VARIABLE.match(text, line_start)
        if assigned and up == depth:
            roots.append(assigned.group(1))
    for root in roots:
        if re.search(rf"\b{root}\.parent\b|\b{root}\s*/\s*[\"']\.\.", text):
            found.append(f"{name}: {root}.parent leaves the repository")
    for hit in HOME_OR_ABSOLUTE.finditer(text):
        line = text[text.rfind("\n", 0, hit.start()) + 1 : text.find("\n", hit.start())]
        found.append(f"{name}: {line.strip()}")
    return found


def test_no_code_reads_outside_the_repository() -> None:
    found = []
    for name, text in text_files():
        if name.endswith(".py") and name != SELF:
            found += climbs_out(name, text)
    found = not_allowed(found)
    assert not found, "paths outside the repository root:\n" + "\n".join(found)


def test_the_guard_sees_a_climb() -> None:
    """The check above catches the shapes it is meant to catch (and passes the repo's own root)."""
    ok = 'ROOT = Path(__file__).resolve().parents[1]\nX = ROOT / "tests"\n'
    assert climbs_out("bench/x.py", ok) == []
    assert climbs_out("bench/x.py", ok + 'S = ROOT.parent / "shared"\n')
    assert climbs_out("tests/x.py", 'S = Path(__file__).parent.parent.parent / "s"\n')
    assert climbs_out("tests/a/x.py", "P = Path(__file__).resolve().parents[3]\n")
    assert climbs_out("tests/x.py", 'P = Path("/srv/samples")\n')
    assert climbs_out("tests/x.py", 'P = Path("~/x").expanduser()\n')


@pytest.mark.slow
@pytest.mark.timeout(300)  # a second pytest imports every test module: slow on a loaded machine
def test_suite_collects_in_a_bare_copy(tmp_path: Path) -> None:
    """A copy of the tracked files alone, nothing beside it, collects every test module."""
    if not shutil.which("git"):
        pytest.skip("needs git to list the tracked files")
    copy = tmp_path / "checkout"
    for name in tracked_files():
        dest = copy / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "error" not in result.stdout.lower().splitlines()[-1], result.stdout[-4000:]
