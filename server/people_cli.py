"""``python -m server people ...``: a person's data rights from the node's own machine (issue 15).

``export IDENTITY [-o FILE]`` writes the person's subject access archive; ``correct IDENTITY --name NEW``
corrects their display name (and ``--title``, ``--affiliation``, ``--pronouns``, ``--locale``);
``erase IDENTITY`` erases them on every node and prints the erasure's proof (JSON, docs/recording.md
"Erasure"); ``erasure IDENTITY ERASURE_ID`` prints that proof again.

Each asks the running node (``--url``, default the configuration's ``url``) with a short-lived
platform token signed by the configured API key: the node does what its API does (the archive
streamed, the live rename, the people ledger's record, the webhook), so the command and the API never
differ. Exit codes: 0 done, 1 refused by the node (its problem's code on stderr), 2 bad arguments or
configuration, 3 the node cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

from rooms.text import bad_text_message, find_bad_text
from server.auth import Authenticator, parse_keys

PLATFORM = "platform-cli"  # the ``by`` of what the command does, in the ledger and the webhooks
TTL_S = 600


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m server people",
        description="A person's data rights, done by the running node (docs/protocol.md, People).",
    )
    commands = top.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("export", "write the person's subject access archive (a tar; docs/recording.md)"),
        ("correct", "correct the person's display name or profile fields"),
        ("erase", "erase the person on every node (docs/protocol.md, People)"),
        ("erasure", "print the proof of an erasure made on this node"),
    ):
        sub = commands.add_parser(name, help=help_)
        sub.add_argument("identity", help="the person (a token subject)")
        sub.add_argument("--url", help="the node (default: the configuration's url)")
        sub.add_argument("--config", help="TOML configuration file (for its api_keys and url)")
        if name == "export":
            sub.add_argument("-o", "--output", help="the archive's file (default: medstage-<export id>.tar)")
        elif name == "erasure":
            sub.add_argument("erasure_id")
        elif name == "correct":
            for field in ("name", "title", "affiliation", "pronouns", "locale"):
                sub.add_argument(f"--{field}")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    where = find_bad_text({k: v for k, v in vars(args).items() if isinstance(v, str)})
    if where is not None:
        print(bad_text_message(f"--{where}"), file=sys.stderr)
        return 2
    from server.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    token = Authenticator(parse_keys(config.api_keys)).mint(PLATFORM, admin=True, ttl_s=TTL_S)
    url = (args.url or config.url).rstrip("/")
    path = f"{url}/api/people/{quote(args.identity, safe='')}"
    if args.command == "export":
        return asyncio.run(_export(path + "/export", token, args.output))
    if args.command == "erase":
        return asyncio.run(_show("POST", path + "/erase", token))
    if args.command == "erasure":
        return asyncio.run(_show("GET", f"{path}/erasures/{quote(args.erasure_id, safe='')}", token))
    fields = ("name", "title", "affiliation", "pronouns", "locale")
    changes = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    if not changes:
        print("nothing to correct: give --name or another field", file=sys.stderr)
        return 2
    return asyncio.run(_correct(path + "/profile", token, changes))


async def _refused(response: object) -> int:
    import aiohttp

    assert isinstance(response, aiohttp.ClientResponse)
    try:
        problem = await response.json(content_type=None)
        print(f"refused ({response.status} {problem.get('code')}): {problem.get('detail')}", file=sys.stderr)
    except ValueError:
        print(f"refused ({response.status})", file=sys.stderr)
    return 1


async def _export(url: str, token: str, output: str | None) -> int:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
            if r.status != 200:
                return await _refused(r)
            target = Path(output or f"medstage-{r.headers.get('X-Export-Id', 'export')}.tar")
            partial = target.with_name(f".{target.name}.partial")
            digest, size = hashlib.sha256(), 0
            with open(partial, "wb") as f:  # noqa: ASYNC230 - a command line tool: nothing else waits
                async for chunk in r.content.iter_chunked(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            partial.replace(target)
    except aiohttp.ClientError as exc:
        print(f"the node cannot be reached at {url}: {exc}", file=sys.stderr)
        return 3
    print(f"{target}  {size} bytes  sha256 {digest.hexdigest()}")
    return 0


async def _correct(url: str, token: str, changes: dict[str, str]) -> int:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as http, http.patch(url, json=changes, headers=headers) as r:
            if r.status != 200:
                return await _refused(r)
            body = await r.json()
    except aiohttp.ClientError as exc:
        print(f"the node cannot be reached at {url}: {exc}", file=sys.stderr)
        return 3
    fields, entry = ", ".join(body["fields"]), body["ledger_index"]
    print(f"corrected {fields} of {body['identity']} (people ledger entry {entry})")
    return 0


async def _show(method: str, url: str, token: str) -> int:
    """An erasure (it may take minutes: every recording is gone through) or its proof, printed."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(method, url, headers=headers) as r,
        ):
            if r.status != 200:
                return await _refused(r)
            body = await r.json()
    except aiohttp.ClientError as exc:
        print(f"the node cannot be reached at {url}: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(body, indent=1, ensure_ascii=False))
    return 0
