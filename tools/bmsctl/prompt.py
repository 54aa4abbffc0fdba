"""Asking the person at the terminal: whether one can be asked, yes/no,
a PIN without echo, a value until it parses.
"""
import getpass
import sys

from bmsctl import config as CF
from bmsctl.client import CtlError
from bmsctl.writes import pin_value


def interactive():
    """True when a person can be asked (stdin is a terminal)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def confirm(question):
    try:
        return input(question + " [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def ask_pin(what="PIN"):
    if not interactive():
        raise CtlError("no PIN given: pass --pin PIN (1234 on a new BMS), or run this in a terminal to be asked")
    try:
        return pin_value(getpass.getpass("%s: " % what))
    except (EOFError, KeyboardInterrupt):
        raise CtlError("no PIN given; nothing was written") from None


def ask(question, default, parse):
    """Ask until `parse` takes the answer (empty = default)."""
    while True:
        try:
            ans = input("%s%s: " % (question, " [%s]" % default if default is not None else "")).strip()
        except EOFError:
            raise CtlError("setup cancelled; nothing was written") from None
        if not ans and default is not None:
            ans = str(default)
        try:
            return parse(ans)
        except (CtlError, CF.ConfigError, ValueError) as e:
            print("  %s" % e)


def secret(prompt):
    """A PIN typed without echo: an int, or None for an empty answer."""
    while True:
        try:
            t = getpass.getpass(prompt).strip()
        except EOFError:
            raise CtlError("setup cancelled; nothing was written") from None
        if not t:
            return None
        try:
            return pin_value(t)
        except CtlError as e:
            print("  %s" % e)
