"""Typed media errors; same shape as rooms.errors (a stable code, a message for people)."""

from __future__ import annotations


class MediaError(Exception):
    code = "media_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadSdp(MediaError):
    code = "bad_sdp"


class NoMedia(MediaError):
    code = "no_media"


class UnsupportedCodec(MediaError):
    code = "unsupported_codec"


class NoOffer(MediaError):
    code = "no_offer"
