"""Read an Ascend HCCL rank table (``RANK_TABLE_FILE``) and tell which devices run on a server.

Two layouts are understood:

* v1.0 (what ``hccl_tools.py`` writes)::

    {"version": "1.0", "server_count": "1", "status": "completed",
     "server_list": [{"server_id": "10.0.0.1", "host_nic_ip": "reserve",
                      "device": [{"device_id": "0", "device_ip": "192.1.27.6", "rank_id": "0"}, ...]}]}

  The cluster-wide variant that nests several of those under ``"server_group_list"`` is read too.

* v0.x (older MindSpore releases): ranks are "instances" grouped under ``"group_list"``::

    {"group_count": "1", "status": "completed",
     "group_list": [{"instance_count": "8", "instance_list": [
         {"rank_id": "0", "server_id": "10.0.0.1",
          "devices": [{"device_id": "0", "device_ip": "192.1.27.6"}]}, ...]}]}

Every problem is reported as a :class:`RankTableError` (a ``ValueError``) whose message names the
file and what is wrong with it.

Command line (used by ``scripts/run_distribute_train_ascend.sh``)::

    python -m src.model_utils.rank_table FILE [--server SERVER_ID]
        [--count | --ranks | --world-size | --servers]

prints, on one line, the device ids of the server in rank order (default), how many devices it has
(``--count``), their global rank ids in the same order (``--ranks``), the number of ranks in the
whole table (``--world-size``) or the server ids (``--servers``). Without ``--server`` the first
server is used, unless the table lists several and one of them is this host (matched by IP address
or host name). Errors go to stderr with exit status 1.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from typing import Any, Iterable, NamedTuple, Sequence

from src.errors import UserError


class RankTableError(UserError, ValueError):
    """The rank table file cannot be read or is not a valid rank table."""


class RankEntry(NamedTuple):
    """One rank of the table: which server and which device of that server runs it."""

    server_id: str
    device_id: int
    rank_id: int


def _to_int(value: Any, what: str, source: str) -> int:
    """Parse a non-negative integer stored as int or decimal string (rank tables use strings)."""
    if isinstance(value, bool):
        raise RankTableError(f"{source}: {what} must be a non-negative integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise RankTableError(f"{source}: {what} must be a non-negative integer, got {value!r}")
    if number < 0:
        raise RankTableError(f"{source}: {what} must be a non-negative integer, got {value!r}")
    return number


def _require(mapping: Any, key: str, where: str, source: str) -> Any:
    """Return ``mapping[key]``; raise naming the missing key and where it was expected."""
    if not isinstance(mapping, dict):
        raise RankTableError(f"{source}: {where} must be a JSON object, got {type(mapping).__name__}")
    if key not in mapping:
        raise RankTableError(f"{source}: missing key '{key}' in {where}")
    return mapping[key]


def _require_list(mapping: Any, key: str, where: str, source: str) -> list:
    value = _require(mapping, key, where, source)
    if not isinstance(value, list):
        raise RankTableError(f"{source}: '{key}' in {where} must be a list, got {type(value).__name__}")
    return value


def _server_id(mapping: dict, where: str, source: str) -> str:
    value = _require(mapping, "server_id", where, source)
    if not isinstance(value, str) or not value.strip():
        raise RankTableError(f"{source}: 'server_id' in {where} must be a non-empty string, got {value!r}")
    return value.strip()


def _parse_server_list(servers: list, where: str, source: str) -> list[RankEntry]:
    """Entries of a v1.0 ``server_list``."""
    entries: list[RankEntry] = []
    for s_index, server in enumerate(servers):
        s_where = f"{where}[{s_index}]"
        server_id = _server_id(server, s_where, source)
        devices = _require_list(server, "device", s_where, source)
        if not devices:
            raise RankTableError(f"{source}: server '{server_id}' ({s_where}) has an empty 'device' list")
        for d_index, device in enumerate(devices):
            d_where = f"{s_where}.device[{d_index}]"
            device_id = _to_int(_require(device, "device_id", d_where, source), f"device_id in {d_where}", source)
            rank_id = _to_int(_require(device, "rank_id", d_where, source), f"rank_id in {d_where}", source)
            entries.append(RankEntry(server_id, device_id, rank_id))
    return entries


def _parse_v1(data: dict, source: str) -> list[RankEntry]:
    servers = _require_list(data, "server_list", "the top-level object", source)
    if not servers:
        raise RankTableError(f"{source}: 'server_list' is empty")
    if "server_count" in data:
        count = _to_int(data["server_count"], "server_count", source)
        if count != len(servers):
            raise RankTableError(
                f"{source}: server_count is {count} but server_list has {len(servers)} server(s)")
    return _parse_server_list(servers, "server_list", source)


def _parse_server_groups(data: dict, source: str) -> list[RankEntry]:
    groups = _require_list(data, "server_group_list", "the top-level object", source)
    if not groups:
        raise RankTableError(f"{source}: 'server_group_list' is empty")
    entries: list[RankEntry] = []
    for g_index, group in enumerate(groups):
        where = f"server_group_list[{g_index}]"
        servers = _require_list(group, "server_list", where, source)
        entries.extend(_parse_server_list(servers, f"{where}.server_list", source))
    return entries


def _parse_v0(data: dict, source: str) -> list[RankEntry]:
    groups = _require_list(data, "group_list", "the top-level object", source)
    if not groups:
        raise RankTableError(f"{source}: 'group_list' is empty")
    entries: list[RankEntry] = []
    for g_index, group in enumerate(groups):
        g_where = f"group_list[{g_index}]"
        instances = _require_list(group, "instance_list", g_where, source)
        if "instance_count" in group:
            count = _to_int(group["instance_count"], f"instance_count in {g_where}", source)
            if count != len(instances):
                raise RankTableError(f"{source}: instance_count in {g_where} is {count} but "
                                     f"instance_list has {len(instances)} instance(s)")
        for i_index, instance in enumerate(instances):
            i_where = f"{g_where}.instance_list[{i_index}]"
            server_id = _server_id(instance, i_where, source)
            rank_id = _to_int(_require(instance, "rank_id", i_where, source), f"rank_id in {i_where}", source)
            devices = _require_list(instance, "devices", i_where, source)
            if len(devices) != 1:
                raise RankTableError(f"{source}: {i_where} must list exactly one device, "
                                     f"found {len(devices)}")
            d_where = f"{i_where}.devices[0]"
            device_id = _to_int(_require(devices[0], "device_id", d_where, source),
                                f"device_id in {d_where}", source)
            entries.append(RankEntry(server_id, device_id, rank_id))
    return entries


def _validate(entries: list[RankEntry], source: str) -> list[RankEntry]:
    """Check rank ids are unique and 0..N-1, and devices are not reused on a server."""
    seen_ranks: dict[int, RankEntry] = {}
    for entry in entries:
        if entry.rank_id in seen_ranks:
            other = seen_ranks[entry.rank_id]
            raise RankTableError(
                f"{source}: duplicate rank_id {entry.rank_id} (server '{other.server_id}' device "
                f"{other.device_id} and server '{entry.server_id}' device {entry.device_id})")
        seen_ranks[entry.rank_id] = entry
    missing = sorted(set(range(len(entries))) - set(seen_ranks))
    if missing:
        raise RankTableError(
            f"{source}: rank ids are not contiguous: {len(entries)} rank(s) must be numbered "
            f"0..{len(entries) - 1}, but {', '.join(map(str, missing))} "
            f"{'is' if len(missing) == 1 else 'are'} missing (found {sorted(seen_ranks)})")
    seen_devices: set[tuple[str, int]] = set()
    for entry in entries:
        key = (entry.server_id, entry.device_id)
        if key in seen_devices:
            raise RankTableError(
                f"{source}: device_id {entry.device_id} appears twice on server '{entry.server_id}'")
        seen_devices.add(key)
    return sorted(entries, key=lambda e: e.rank_id)


def parse_rank_table(data: Any, source: str = "<rank table>") -> list[RankEntry]:
    """Validate a decoded rank table and return its ranks sorted by rank id.

    ``source`` names the table in error messages (normally the file path).
    """
    if not isinstance(data, dict):
        raise RankTableError(f"{source}: the rank table must be a JSON object, got {type(data).__name__}")
    status = data.get("status")
    if status is not None and status != "completed":
        raise RankTableError(f"{source}: status is {status!r}, expected 'completed' (the table is not ready)")
    if "server_list" in data:
        entries = _parse_v1(data, source)
    elif "server_group_list" in data:
        entries = _parse_server_groups(data, source)
    elif "group_list" in data:
        entries = _parse_v0(data, source)
    else:
        raise RankTableError(
            f"{source}: missing key 'server_list' (v1.0 rank table) or 'group_list' (v0.x rank table) "
            f"in the top-level object; found keys: {', '.join(sorted(data)) or 'none'}")
    return _validate(entries, source)


def load_rank_table(path: str) -> list[RankEntry]:
    """Read and validate the rank table file at ``path``; return its ranks sorted by rank id."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise RankTableError(f"{path}: cannot read rank table file: {e.strerror or e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RankTableError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    return parse_rank_table(data, path)


def server_ids(entries: Iterable[RankEntry]) -> list[str]:
    """Server ids in the order of their lowest rank."""
    return list(dict.fromkeys(e.server_id for e in sorted(entries, key=lambda e: e.rank_id)))


def server_entries(entries: Iterable[RankEntry], server_id: str) -> list[RankEntry]:
    """Ranks of one server, sorted by rank id."""
    return sorted((e for e in entries if e.server_id == server_id), key=lambda e: e.rank_id)


def local_addresses() -> set[str]:
    """IP addresses and host names of this machine, best effort (never raises)."""
    names: set[str] = set()
    try:
        hostname = socket.gethostname()
        names.update({hostname, socket.getfqdn()})
        try:
            _, aliases, addresses = socket.gethostbyname_ex(hostname)
            names.update(aliases)
            names.update(addresses)
        except OSError:
            pass
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(hostname, None))
        except OSError:
            pass
    except OSError:
        pass
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False)
        if out.returncode == 0:
            names.update(out.stdout.split())
    except (OSError, subprocess.SubprocessError):
        pass
    names.discard("")
    return names


def select_server(entries: Sequence[RankEntry], server: str | None = None,
                  local: Iterable[str] | None = None, source: str = "<rank table>") -> str:
    """Pick the server whose devices this host should drive.

    An explicit ``server`` must be in the table. Otherwise a table with one server gives that
    server; with several, the one whose id is one of ``local`` (default: this host's addresses),
    else the first one.
    """
    ids = server_ids(entries)
    if server is not None:
        if server not in ids:
            raise RankTableError(f"{source}: server '{server}' is not in the rank table "
                                 f"(servers: {', '.join(ids)})")
        return server
    if len(ids) > 1:
        local_set = set(local_addresses() if local is None else local)
        for candidate in ids:
            if candidate in local_set:
                return candidate
    return ids[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m src.model_utils.rank_table",
        description="Print the device ids (in rank order) that a server runs according to an "
                    "Ascend rank table.")
    parser.add_argument("file", help="rank table JSON file (RANK_TABLE_FILE)")
    parser.add_argument("--server", default=None,
                        help="server_id to report (default: this host if listed, else the first server)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--count", action="store_true", help="print the number of devices of the server")
    what.add_argument("--ranks", action="store_true", help="print the global rank ids of the server's devices")
    what.add_argument("--world-size", action="store_true", help="print the number of ranks in the whole table")
    what.add_argument("--servers", action="store_true", help="print the server ids of the table")
    args = parser.parse_args(argv)
    try:
        entries = load_rank_table(args.file)
        if args.world_size:
            print(len(entries))
            return 0
        if args.servers:
            print(" ".join(server_ids(entries)))
            return 0
        chosen = select_server(entries, args.server, source=args.file)
    except RankTableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    mine = server_entries(entries, chosen)
    if args.count:
        print(len(mine))
    elif args.ranks:
        print(" ".join(str(e.rank_id) for e in mine))
    else:
        print(" ".join(str(e.device_id) for e in mine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
