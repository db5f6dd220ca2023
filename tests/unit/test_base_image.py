"""images/base-image.sh takes the Debian mirror from the host's apt sources, as apt
does, and names none itself (its --print-mirror mode: no root, no debootstrap)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers.study import REPO

SCRIPT = REPO / "images" / "base-image.sh"

DEB822 = """\
Types: deb
# http://old.example.invalid/debian (a comment, not the source)
URIs: http://security.example.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://source.example.invalid/debian
Suites: bookworm

Types: deb
URIs: http://off.example.invalid/debian
Suites: bookworm
Enabled: no

Types: deb
URIs: http://mirror.example.invalid/debian
Suites: bookworm bookworm-updates
Components: main
"""


def _mirror(apt: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DEBIAN_MIRROR"}
    return subprocess.run(
        ["bash", str(SCRIPT), "--print-mirror"],
        capture_output=True,
        text=True,
        env={**environ, "APT_ETC": str(apt), **env},
        timeout=60,
    )


def test_the_mirror_comes_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list").write_text(
        "deb http://later.example.invalid/debian bookworm main\n"
    )
    proc = _mirror(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "http://mirror.example.invalid/debian"


def test_the_mirror_comes_from_a_one_line_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example.invalid/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://sec.example.invalid/d bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example.invalid/debian bookworm main\n"
    )
    proc = _mirror(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "http://one.example.invalid/debian"
    # DEBIAN_MIRROR, when set, wins.
    chosen = _mirror(tmp_path, DEBIAN_MIRROR="http://mine.example.invalid/debian")
    assert chosen.stdout.strip() == "http://mine.example.invalid/debian"


def test_no_source_is_an_error_saying_where_it_looked(tmp_path: Path) -> None:
    proc = _mirror(tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "no Debian mirror found" in proc.stderr
    assert f"{tmp_path}/sources.list.d/*.sources or {tmp_path}/sources.list" in proc.stderr
    assert "set DEBIAN_MIRROR" in proc.stderr


def test_the_script_names_no_mirror_address() -> None:
    text = SCRIPT.read_text()
    assert "http://" not in text and "https://" not in text
