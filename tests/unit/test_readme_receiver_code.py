"""The Ed25519 receiver code the README shows is the code the integration tests run in Node
(tests/support/verify_v1a.js, between its README markers), so the documented check is the tested one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_the_v1a_receiver_code_the_tests_run() -> None:
    script = (ROOT / "tests" / "support" / "verify_v1a.js").read_text()
    region = script.split("// README begin\n")[1].split("// README end\n")[0]
    assert "crypto.verify(null, signed, publicKey" in region
    assert region in (ROOT / "README.md").read_text()
