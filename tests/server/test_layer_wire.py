"""``layer.set`` on the wire: bounded and validated like every request (server/wire.py)."""

from __future__ import annotations

import pytest

from server import wire


def test_a_layer_preference_decodes_with_or_without_a_speaker() -> None:
    message = wire.decode('{"type": "layer.set", "id": 6, "preference": "audio"}')
    assert isinstance(message, wire.LayerSet)
    assert (message.preference, message.participant_id, message.id) == ("audio", None, 6)
    message = wire.decode('{"type": "layer.set", "preference": "high", "participant_id": "p-1"}')
    assert isinstance(message, wire.LayerSet) and message.participant_id == "p-1"


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "layer.set", "id": 1, "preference": "4k"}',
        '{"type": "layer.set", "id": 1}',
        '{"type": "layer.set", "id": 1, "preference": 3}',
        '{"type": "layer.set", "id": 1, "preference": "low", "participant_id": ""}',
        '{"type": "layer.set", "id": 1, "preference": "low", "participant_id": "' + "x" * 65 + '"}',
    ],
)
def test_a_bad_layer_preference_is_invalid_message_with_its_id(frame: str) -> None:
    with pytest.raises(wire.WireError) as refused:
        wire.decode(frame)
    assert (refused.value.code, refused.value.request_id) == ("invalid_message", 1)
