"""Which wheels fit the runtime image: its Python, ABI and every platform tag its libc runs.

pip's `--platform` matches literally (it widens only the legacy `manylinux2014`/`2010`
aliases), so naming the image's own glibc (`manylinux_2_36`) alone rejects every compiled
wheel on PyPI, which targets older glibcs (`manylinux_2_17`, `manylinux2014`). The list
here is the one `packaging.tags` derives for an interpreter running on that libc:
glibc 2.N runs wheels for every 2.M with M <= N (down to 2.17, or 2.5 on x86), and
musl 1.N every musllinux_1_M with M <= N.

What the image has is measured in the image (`PROBE`, run by the builder in a throwaway
container); everything else is pure and tested in memory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from lambdad.errors import BuildFailed

# Printed by the image's own python3: what `packaging.tags` reads of a running interpreter.
PROBE = r"""
import json, os, platform, subprocess, sys
libc, version = "", ""
try:
    name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
    libc = "glibc" if name == "glibc" else ""
except (AttributeError, OSError, ValueError):
    pass
if not libc:
    import glob
    for loader in sorted(glob.glob("/lib/ld-musl-*.so.1")):
        out = subprocess.run([loader], capture_output=True, text=True).stderr
        for line in out.splitlines():
            if line.startswith("Version "):
                libc, version = "musl", line.split()[1]
        break
print(json.dumps({"python": list(sys.version_info[:2]),
                  "implementation": sys.implementation.name,
                  "machine": platform.machine(), "bits": 64 if sys.maxsize > 2**32 else 32,
                  "libc": libc, "libc_version": version}))
"""

# glibc before these is too old for any manylinux wheel of the architecture.
_OLDEST_GLIBC_MINOR = {"x86_64": 5, "i686": 5}
_OLDEST_GLIBC_MINOR_OTHER = 17
# PEP 600: the legacy names are aliases of these glibc versions.
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
# uname's name of a 32-bit x86 or ARM userland on a 64-bit kernel, as wheel tags spell it.
_THIRTY_TWO_BIT = {"x86_64": "i686", "aarch64": "armv7l"}
_VERSION = re.compile(r"(\d+)\.(\d+)")


@dataclass(frozen=True)
class TargetPlatform:
    """The runtime image's interpreter and libc, as wheel tags see them."""

    python: tuple[int, int]  # (3, 11)
    machine: str  # as wheel tags spell it: x86_64, aarch64, i686, armv7l, ppc64le, s390x
    libc: str  # "glibc" or "musl"
    libc_version: tuple[int, int]

    @property
    def python_version(self) -> str:
        return f"{self.python[0]}.{self.python[1]}"

    def abis(self) -> list[str]:
        """Most specific first: the interpreter's own ABI, the stable ABI, pure Python."""
        return [f"cp{self.python[0]}{self.python[1]}", "abi3", "none"]

    def platform_tags(self) -> list[str]:
        """Every platform tag a wheel may carry to run here, newest libc first, then `any`."""
        major, newest = self.libc_version
        tags: list[str] = []
        if self.libc == "glibc":
            oldest = _OLDEST_GLIBC_MINOR.get(self.machine, _OLDEST_GLIBC_MINOR_OTHER)
            for minor in range(newest, oldest - 1, -1):
                tags.append(f"manylinux_{major}_{minor}_{self.machine}")
                if major == 2 and minor in _LEGACY_MANYLINUX:
                    tags.append(f"{_LEGACY_MANYLINUX[minor]}_{self.machine}")
        else:
            tags += [f"musllinux_{major}_{minor}_{self.machine}"
                     for minor in range(newest, -1, -1)]
        return [*tags, "any"]

    def describe(self) -> str:
        """How errors name the platform: 'CPython 3.11 on glibc 2.36 (x86_64)'."""
        return (f"CPython {self.python_version} on {self.libc} "
                f"{self.libc_version[0]}.{self.libc_version[1]} ({self.machine})")

    def describe_tags(self) -> str:
        """The tag range, for a deployer to compare with a package's files on its index."""
        tags = [t for t in self.platform_tags() if t != "any"]
        return f"{tags[0]} down to {tags[-1]}, or py3-none-any"

    def pip_options(self) -> list[str]:
        """pip's target options: wheels for exactly this interpreter and these platforms."""
        options = ["--python-version", self.python_version, "--implementation", "cp"]
        for abi in self.abis():
            options += ["--abi", abi]
        for tag in self.platform_tags():
            options += ["--platform", tag]
        return options


def parse_probe(output: str) -> TargetPlatform:
    """The probe's JSON line as a TargetPlatform; BuildFailed if the image cannot take wheels."""
    try:
        found = json.loads(output.strip().splitlines()[-1])
        python = (int(found["python"][0]), int(found["python"][1]))
        implementation, machine = str(found["implementation"]), str(found["machine"])
        libc, version_text = str(found["libc"]), str(found["libc_version"])
        bits = int(found["bits"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BuildFailed(f"the runtime image's platform could not be read ({exc!r}): is "
                          "python3 its interpreter?") from None
    if implementation != "cpython":
        raise BuildFailed(f"the runtime image runs {implementation}, not CPython: wheels "
                          "cannot be chosen for it")
    version = _VERSION.match(version_text)
    if libc not in ("glibc", "musl") or version is None:
        raise BuildFailed("the runtime image's C library is neither glibc nor musl "
                          f"({libc or 'unknown'} {version_text}): no manylinux or musllinux "
                          "wheel is known to run on it")
    if bits == 32:
        machine = _THIRTY_TWO_BIT.get(machine, machine)
    machine = machine.replace("armv8l", "armv7l")
    return TargetPlatform(python=python, machine=machine, libc=libc,
                          libc_version=(int(version.group(1)), int(version.group(2))))
