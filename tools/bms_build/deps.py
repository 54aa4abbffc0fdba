"""The firmware's one outside module: micropython-lib's MQTT client,
`umqtt.simple`, which the build compiles beside lib/bms.

On a board the usual ways in are `mpremote mip install umqtt.simple` or
`require("umqtt.simple")` in firmware/manifest.py (both from micropython-lib).
Here, with only the package registries in reach, the build takes the copy
micropython-lib published on PyPI as `micropython-umqtt.simple` (UMQTT_PIN):
an old upip-style source archive that pip downloads and unpacks but will
not install, so pip is run with --no-clean in a private temporary directory
and the module is taken from what it unpacked. The file must have the
pinned sha256 (UMQTT_SHA256): a different file is refused, not used.

BMS_UMQTT_SIMPLE=/path/to/umqtt/simple.py uses that file instead (a
micropython-lib checkout, say), unchecked: the firmware uses only the
MQTTClient API every umqtt.simple release has (bms.uplink).
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, "build", "deps")
UMQTT_PIN = "micropython-umqtt.simple==1.3.4"
UMQTT_SHA256 = "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5"
UMQTT_REL = "umqtt/simple.py"  # where it goes on the board's path (lib/umqtt/simple.mpy)
ENV_UMQTT = "BMS_UMQTT_SIMPLE"


class DepError(RuntimeError):
    pass


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def umqtt_simple():
    """The path of umqtt/simple.py to compile: BMS_UMQTT_SIMPLE, or the
    pinned PyPI copy (fetched once into build/deps)."""
    given = os.environ.get(ENV_UMQTT)
    if given:
        if not os.path.isfile(given):
            raise DepError("%s=%s: no such file (point it at umqtt/simple.py, or unset it)" % (ENV_UMQTT, given))
        return given
    cached = os.path.join(CACHE, UMQTT_REL)
    if os.path.isfile(cached) and sha256_of(cached) == UMQTT_SHA256:
        return cached
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bms-deps-")
    try:
        env = dict(os.environ, TMPDIR=tmp)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-clean", "--no-binary", ":all:",
             "--disable-pip-version-check", "-d", os.path.join(tmp, "dl"), UMQTT_PIN],
            capture_output=True, text=True, env=env, timeout=300)
        found = [p for p in glob.glob(os.path.join(tmp, "**", "umqtt", "simple.py"), recursive=True)]
        if not found:
            raise DepError("cannot get %s from the package index (pip says: %s); on a machine without it, "
                           "set %s=/path/to/micropython-lib/micropython/umqtt.simple/umqtt/simple.py"
                           % (UMQTT_PIN, (proc.stderr or proc.stdout).strip().splitlines()[-1:] or "nothing",
                              ENV_UMQTT))
        got = sha256_of(found[0])
        if got != UMQTT_SHA256:
            raise DepError("%s: umqtt/simple.py has sha256 %s, not the pinned %s: refusing it"
                           % (UMQTT_PIN, got, UMQTT_SHA256))
        part = "%s.%d.tmp" % (cached, os.getpid())
        shutil.copyfile(found[0], part)
        os.replace(part, cached)
        return cached
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        print(umqtt_simple())
    except DepError as e:
        raise SystemExit("bms_build.deps: %s" % e)
