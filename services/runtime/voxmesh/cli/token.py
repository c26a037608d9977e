"""``voxmesh token``: mint a LiveKit room join token, optionally dispatching the Voxmesh agent.

The token lets one participant join one room. With ``--agent`` it also carries a room
configuration that dispatches that LiveKit agent (the Voxmesh LiveKit edge registers as
``voxmesh`` by default) when the participant's join creates the room, so joining the room is
enough to start a call. ``--voxmesh-agent`` picks the Voxmesh agent that answers (the edge's
``VOXMESH_LIVEKIT_AGENT`` otherwise).

The key pair comes from ``--api-key``/``--api-secret``, else ``VOXMESH_LIVEKIT_API_KEY``/
``VOXMESH_LIVEKIT_API_SECRET``, else LiveKit's ``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET``. The
secret is never printed. Bad arguments exit with status 2 and a one-line error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from collections.abc import Sequence

#: LiveKit's default token lifetime.
DEFAULT_TTL = "6h"
#: Longest lifetime accepted: a join token is for one session, not a credential to keep.
MAX_TTL = datetime.timedelta(days=30)
#: Key of the dispatch metadata naming the Voxmesh agent (read by the LiveKit edge).
METADATA_AGENT_KEY = "agent"
#: Voxmesh agent names become part of a NATS subject (same rule as the edge and worker).
_VOXMESH_AGENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TTL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


class TokenError(Exception):
    """An argument is missing or invalid; the message says which and how to fix it."""


def parse_ttl(text: str) -> datetime.timedelta:
    """Parses a lifetime: ``90`` or ``90s``, ``15m``, ``6h``, ``1d``.

    Raises:
        TokenError: Not a positive duration of at most 30 days.
    """
    match = _TTL_RE.match(text)
    if match is None:
        raise TokenError(f"--ttl {text!r} is not a duration; use e.g. 90s, 15m, 6h or 1d")
    ttl = datetime.timedelta(seconds=float(match.group(1)) * _TTL_UNITS[match.group(2)])
    if ttl < datetime.timedelta(seconds=1):
        raise TokenError(f"--ttl {text!r} must be at least 1 second")
    if ttl > MAX_TTL:
        raise TokenError(f"--ttl {text!r} is longer than the maximum of 30 days")
    return ttl


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds the ``token`` options to a (sub)parser."""
    parser.add_argument("--room", required=True, help="room to join")
    parser.add_argument("--identity", required=True, help="participant identity (unique in "
                        "the room)")
    parser.add_argument("--name", default="", help="participant display name")
    parser.add_argument("--ttl", default=DEFAULT_TTL,
                        help=f"token lifetime: 90s, 15m, 6h, 1d ({DEFAULT_TTL})")
    parser.add_argument("--agent", default="", metavar="AGENT_NAME",
                        help="LiveKit agent to dispatch when the room is created "
                             "(the Voxmesh LiveKit edge registers as 'voxmesh')")
    parser.add_argument("--voxmesh-agent", default="", metavar="NAME",
                        help="Voxmesh agent that answers (dispatch metadata; needs --agent)")
    parser.add_argument("--api-key", default="", help="LiveKit API key (default: "
                        "VOXMESH_LIVEKIT_API_KEY or LIVEKIT_API_KEY)")
    parser.add_argument("--api-secret", default="", help="LiveKit API secret (default: "
                        "VOXMESH_LIVEKIT_API_SECRET or LIVEKIT_API_SECRET; prefer the "
                        "variable: arguments show in the process list)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON object (token, room, identity, expires_at, url)")


def _key_from(flag: str, flag_value: str, variables: Sequence[str]) -> str:
    value = flag_value.strip() or next(
        (os.environ[v].strip() for v in variables if os.environ.get(v, "").strip()), "")
    if not value:
        raise TokenError(f"no LiveKit API {flag.removeprefix('--api-')}: pass {flag} or set "
                         + " or ".join(variables))
    return value


def mint(args: argparse.Namespace) -> dict[str, str]:
    """Mints the token described by parsed arguments.

    Returns:
        ``token``, ``room``, ``identity``, ``expires_at`` (ISO 8601, UTC) and ``url`` (from
        ``VOXMESH_LIVEKIT_URL`` or ``LIVEKIT_URL``, empty when neither is set).

    Raises:
        TokenError: An argument is missing or invalid.
    """
    room = args.room.strip()
    identity = args.identity.strip()
    if not room:
        raise TokenError("--room must not be empty")
    if not identity:
        raise TokenError("--identity must not be empty")
    ttl = parse_ttl(args.ttl)
    dispatch = args.agent.strip()
    voxmesh_agent = args.voxmesh_agent.strip()
    if voxmesh_agent and not dispatch:
        raise TokenError("--voxmesh-agent needs --agent (the LiveKit agent to dispatch)")
    if voxmesh_agent and not _VOXMESH_AGENT_RE.match(voxmesh_agent):
        raise TokenError(f"--voxmesh-agent {voxmesh_agent!r} may only contain letters, "
                         "digits, - and _")
    api_key = _key_from("--api-key", args.api_key,
                        ("VOXMESH_LIVEKIT_API_KEY", "LIVEKIT_API_KEY"))
    api_secret = _key_from("--api-secret", args.api_secret,
                           ("VOXMESH_LIVEKIT_API_SECRET", "LIVEKIT_API_SECRET"))

    from livekit import api  # imported here: the rest of the CLI does not need it

    token = (api.AccessToken(api_key, api_secret)
             .with_identity(identity)
             .with_ttl(ttl)
             .with_grants(api.VideoGrants(room_join=True, room=room)))
    if args.name:
        token = token.with_name(args.name)
    if dispatch:
        metadata = json.dumps({METADATA_AGENT_KEY: voxmesh_agent}) if voxmesh_agent else ""
        token = token.with_room_config(api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=dispatch, metadata=metadata)]))
    expires = datetime.datetime.now(datetime.UTC) + ttl
    url = (os.environ.get("VOXMESH_LIVEKIT_URL", "").strip()
           or os.environ.get("LIVEKIT_URL", "").strip())
    return {"token": token.to_jwt(), "room": room, "identity": identity,
            "expires_at": expires.replace(microsecond=0).isoformat(), "url": url}


def run(args: argparse.Namespace) -> int:
    """Runs ``voxmesh token`` with parsed arguments; returns the exit status."""
    try:
        minted = mint(args)
    except TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(minted, indent=2) if args.json else minted["token"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """``voxmesh token`` on its own (``python -m voxmesh.cli.token``)."""
    parser = argparse.ArgumentParser(prog="voxmesh token",
                                     description="Mint a LiveKit room join token.")
    configure_parser(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
