"""Regenerate trackd_links/url_tables.py: which host code points Node 20 refuses while idna / ada accept.

Run: .venv/bin/python tests/tools/node_host_table.py > /tmp/table.txt (needs `node`; ~3 minutes).
Each code point is tried as "https://a<c>b.com/" and "https://<c>.com/" in ONE node process; a code
point goes in the table when idna (uts46) or ada-url accept a host Node refuses or reads differently.
"""

from __future__ import annotations

import json
import subprocess

import ada_url
import idna

_NODE = r"""
const cps = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = [];
for (const c of cps) {
  const ch = String.fromCodePoint(c);
  out.push(["a" + ch + "b.com", ch + ".com"].map((h) => {
    try { return new URL("https://" + h + "/").hostname; } catch (e) { return null; }
  }));
}
process.stdout.write(JSON.stringify(out));
"""


def _ours(host: str) -> list[str | None]:
    try:
        mapped: str | None = idna.encode(host, uts46=True).decode("ascii")
    except UnicodeError:
        mapped = None
    try:
        ada: str | None = ada_url.parse_url(f"https://{host}/", attributes=("hostname",))["hostname"]
    except ValueError:
        ada = None
    return [mapped, ada]


def main() -> None:
    cps = [c for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    node = json.loads(
        subprocess.run(["node", "-e", _NODE], input=json.dumps(cps), capture_output=True, text=True, check=True).stdout
    )
    bad = []
    for c, answers in zip(cps, node, strict=True):
        ch = chr(c)
        for host, from_node in zip(("a" + ch + "b.com", ch + ".com"), answers, strict=True):
            if any(ours is not None and ours != from_node for ours in _ours(host)):
                bad.append(c)
                break
    ranges: list[list[int]] = []
    for c in bad:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    for a, b in ranges:
        print(f"    (0x{a:04X}, 0x{b:04X}),")


if __name__ == "__main__":
    main()
