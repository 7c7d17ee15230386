"""The SFU: encoded RTP from publishers to subscribers; nothing here decodes or encodes."""
