"""Which process a command is about: a pid, or ``--match REGEX`` (the
processes whose command line or name it finds).

A command takes both with ``add_arguments(parser)`` and gets the pids with
``resolve(args)``: exactly one of the two is a usage error otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, List, Set

import psutil

from ._errors import Error
from .processes import command_line, matching

#: The matches an error lists at most, when one process was wanted.
LISTED = 10


def pid_number(text: str) -> int:
    """argparse type: a process id, 1 or more (0 and negative numbers name
    process groups to kill(2), never one process)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a process id is 1 or more, not {text!r}")
    return value


def regex(text: str) -> str:
    """argparse type: a valid regular expression."""
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {err}") from None
    return text


def add_arguments(parser: argparse.ArgumentParser, several: bool = False, type: Any = pid_number,
                  metavar: str = "PID", help: str = "the process id") -> None:
    """The optional ``pid`` positional (its ``type``, ``metavar`` and
    ``help``) and ``--match REGEX``; ``several``: every process matched is
    a target, else only one may match."""
    parser.add_argument("pid", nargs="?", type=type, metavar=metavar, help=f"{help} (or --match)")
    parser.add_argument("--match", type=regex, metavar="REGEX",
                        help="instead of a pid: the process whose command line or name REGEX finds"
                             + (" (every one)" if several else " (only one may)"))
    parser.set_defaults(several=several, usage_error=parser.error)


def resolve(args: argparse.Namespace) -> List[int]:
    """The pids ``args`` name (add_arguments): the pid given, or those
    --match finds. Raises Error where none matches, or several do for a
    command about one process."""
    if (args.pid is None) == (args.match is None):
        args.usage_error(f"give a PID or --match REGEX{', not both' if args.match is not None else ''}")
    if args.match is None:
        return [args.pid]
    found = matching(args.match, _launchers())
    if not found:
        raise Error(f"no process matches {args.match}")
    if len(found) > 1 and not args.several:
        listed = ", ".join(f"{pid} ({command})" for pid, command in found[:LISTED])
        more = f" and {len(found) - LISTED} more" if len(found) > LISTED else ""
        raise Error(f"{len(found)} processes match {args.match}: {listed}{more}; "
                    "give one pid, or a narrower REGEX")
    return [pid for pid, _ in found]


def _launchers() -> Set[int]:
    """memscan's ancestors that ran it with these very arguments (sudo,
    timeout, sh -c ...): their command lines hold REGEX too, yet they are
    not what the user means."""
    own = " ".join(sys.argv[1:])
    out: Set[int] = set()
    for parent in psutil.Process().parents() if own else ():
        try:
            if own in command_line(parent.pid):
                out.add(parent.pid)
        except (Error, OSError):
            continue  # gone since
    return out
