"""Build `dihal/compile/vega/offline.html`: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined.

`dvc plots show` fills an HTML page whose `{scripts}` placeholder receives three `<script src=…>` tags
pointing at a CDN, so on a machine without internet the page stays blank. DVC lets a project name its own
page (`plots.html_template`); this page has no `{scripts}` placeholder and carries the three libraries
itself, so the CDN tags have nowhere to go and the page renders offline. `dihal.compile.dvc_views` copies it
into each project.

A maintainer's tool, run once per upgrade (it needs `npm` and the npm registry, nothing else):

    python -m dihal.compile.vendor_vega

It fetches the exact versions below with `npm pack`, checks that each minified build can sit inside a
`<script>` element unchanged, and writes the page and `NOTICE.md` (versions, npm integrity, sha256 of each
inlined file, licences). `tests/test_dvc_views.py` holds the committed page to that notice.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from dihal.utils.atomic import write_atomic

HERE = Path(__file__).parent / "vega"
PAGE = HERE / "offline.html"
NOTICE = HERE / "NOTICE.md"

# Vega 5 / Vega-Lite 5 / Vega-Embed 6: the major versions DVC's own page loads (vega@5.20.2, vega-lite@5.2.0,
# vega-embed@6.18.2) and DVC's built-in templates are written for; the newest release of each line.
LIBRARIES = (
    (
        "vega",
        "5.33.1",
        "package/build/vega.min.js",
        "Copyright (c) 2015-2023, University of Washington Interactive Data Lab",
    ),
    (
        "vega-lite",
        "5.23.0",
        "package/build/vega-lite.min.js",
        "Copyright (c) 2015, University of Washington Interactive Data Lab.",
    ),
    (
        "vega-embed",
        "6.29.0",
        "package/build/vega-embed.min.js",
        "Copyright (c) 2015, University of Washington Interactive Data Lab",
    ),
)
# What the three builds bundle from outside Vega (all permissive): named so the page carries their notices too.
BUNDLED = (
    "vega bundles d3 modules (ISC licence, Copyright 2010-2023 Mike Bostock)",
    "vega-lite and vega-embed bundle json-stringify-pretty-compact (MIT licence, Copyright Simon Lydell) and tslib (0BSD, Microsoft)",
    "vega-embed bundles fast-json-patch (MIT licence, Copyright Joachim Wester), semver (ISC licence, Copyright Isaac Z. Schlueter "
    "and Contributors), vega-themes, vega-tooltip and vega-schema-url-parser (BSD-3-Clause, University of Washington Interactive Data Lab)",
)
BSD3 = """Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its contributors
   may be used to endorse or promote products derived from this software
   without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE."""
# The page's own markup around the scripts. `{refresh_tag}` and `{plot_divs}` are DVC's placeholders
# (dvc_render.html.HTML); `{scripts}`, where DVC puts its CDN tags, is left out on purpose.
STYLE = """body { font-family: system-ui, sans-serif; margin: 16px; }
    body > div { display: inline-block; vertical-align: top; margin: 0 24px 24px 0; }"""
# DVC replaces its placeholders anywhere in the page; a library containing one would be corrupted.
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")


def _fetch(name: str, version: str, member: str, work: Path) -> tuple[str, str]:
    """(the file's text, the npm tarball's integrity) of `member` in `name@version`, via `npm pack`."""
    proc = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", str(work)],
        capture_output=True,
        text=True,
        check=True,
    )
    meta = json.loads(proc.stdout)[0]
    with tarfile.open(work / meta["filename"]) as tar:
        f = tar.extractfile(member)
        if f is None:
            raise SystemExit(f"{name}@{version}: {member} is not a file in the package")
        return f.read().decode("utf-8"), meta["integrity"]


def check_inlinable(name: str, text: str) -> None:
    """A script can sit in a `<script>` element unchanged only without `</script`, `<!--` or DVC's placeholders."""
    for bad in ("</script", "<!--", *PLACEHOLDERS):
        haystack = text.lower() if bad.startswith("<") else text  # HTML tags match in any case
        if bad in haystack:
            raise SystemExit(f"{name}: its build contains {bad!r}, so it cannot be inlined as it is")


def page(scripts: list[tuple[str, str, str, str]]) -> str:
    """The HTML template: a licence comment, the three scripts (name, version, copyright, text) and DVC's placeholders."""
    names = ", ".join(f"{n} {v}" for n, v, _, _ in scripts)
    copyrights = "\n".join(f"{n} {v}: {c}" for n, v, c, _ in scripts)
    bundled = "\n".join(f"- {b}" for b in BUNDLED)
    comment = (
        f"dihal's page for `dvc plots show`: {names} inlined (from the npm registry, unmodified),\n"
        "so the plots render without a network connection. Each is under the BSD-3-Clause licence:\n\n"
        f"{copyrights}\nAll rights reserved.\n\n{BSD3}\n\nThird-party code inside these builds:\n{bundled}"
    )
    tags = "\n".join(f"<script>/* {n} {v} (BSD-3-Clause) */\n{t}\n</script>" for n, v, _, t in scripts)
    return (
        f'<!DOCTYPE html>\n<!--\n{comment}\n-->\n<html>\n<head>\n<meta charset="utf-8">\n{{refresh_tag}}\n'
        f"<title>DVC plots</title>\n{tags}\n<style>\n    {STYLE}\n</style>\n</head>\n<body>\n{{plot_divs}}\n"
        "</body>\n</html>\n"
    )


def notice(rows: list[tuple[str, str, str, str, str]]) -> str:
    """NOTICE.md: what `offline.html` inlines, from where, its digests and licences."""
    table = "\n".join(f"| {n} | {v} | `{m}` | `{i}` | `{s}` |" for n, v, m, i, s in rows)
    copyrights = "\n".join(f"- {n} {v}: {c}" for n, v, c in [(r[0], r[1], lib[3]) for r, lib in zip(rows, LIBRARIES)])
    bundled = "\n".join(f"- {b}" for b in BUNDLED)
    return (
        "# Vega, Vega-Lite and Vega-Embed in `offline.html`\n\n"
        "`offline.html` is the page `dvc plots show` fills in a dihal project (`plots.html_template`); it carries\n"
        "these builds, unmodified, so the plots render offline. Written by `python -m dihal.compile.vendor_vega`;\n"
        "`tests/test_dvc_views.py` checks the page against the sha256 column.\n\n"
        "| package | version | file | npm tarball integrity | sha256 of the file |\n|---|---|---|---|---|\n"
        f"{table}\n\n## Licences\n\nAll three are under the BSD-3-Clause licence:\n\n{copyrights}\n\n"
        f"All rights reserved.\n\n```\n{BSD3}\n```\n\nThird-party code inside these builds:\n\n{bundled}\n"
    )


def main() -> None:
    scripts, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, member, copyright_line in LIBRARIES:
            text, integrity = _fetch(name, version, member, Path(tmp))
            check_inlinable(name, text)
            scripts.append((name, version, copyright_line, text))
            rows.append(
                (name, version, member.removeprefix("package/"), integrity, hashlib.sha256(text.encode()).hexdigest())
            )
    write_atomic(PAGE, page(scripts))
    write_atomic(NOTICE, notice(rows))
    print(f"wrote {PAGE} ({PAGE.stat().st_size:,} bytes) and {NOTICE}", file=sys.stderr)


if __name__ == "__main__":
    main()
