"""Every close code the node sends is listed once in server/closecodes.py and in docs/protocol.md."""

from __future__ import annotations

import re
from pathlib import Path

from server.closecodes import RECONNECT, CloseCode

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _documented() -> dict[int, str]:
    text = PROTOCOL.read_text()
    section = text[text.index("## WebSocket close codes") :]
    section = section[: section.index("\n## ", 3)]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d{4}) \| (.+) \|$", section, re.M)}


def test_every_close_code_is_documented_and_every_documented_code_exists() -> None:
    documented = _documented()
    ours = {int(code) for code in CloseCode}
    # 1006 is not sent by anyone: it is what a client sees when the TCP connection drops.
    assert ours == set(documented) - {1006}


def test_the_reconnect_list_matches_the_protocol_text() -> None:
    text = PROTOCOL.read_text()
    line = re.search(r"A client reconnects after ([\d, and]+), with backoff", text)
    assert line is not None
    said = {int(c) for c in re.findall(r"\d{4}", line.group(1))}
    assert said - {1006} == {int(c) for c in RECONNECT}
