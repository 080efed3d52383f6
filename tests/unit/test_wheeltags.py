"""Which wheels fit the runtime image, and how a resolution without one is explained."""

from __future__ import annotations

import json
import subprocess
import sys

import packaging.tags
import pytest

from lambdad.build import pipdiagnosis
from lambdad.build.limits import BuildLimits
from lambdad.build.pipdiagnosis import PipResult
from lambdad.build.wheeltags import PROBE, TargetPlatform, parse_probe
from lambdad.errors import BuildFailed

BOOKWORM = TargetPlatform(python=(3, 11), machine="x86_64", libc="glibc", libc_version=(2, 36))


def test_glibc_takes_every_older_manylinux_with_the_legacy_aliases_in_place() -> None:
    tags = BOOKWORM.platform_tags()
    assert tags[:2] == ["manylinux_2_36_x86_64", "manylinux_2_35_x86_64"]
    at = tags.index("manylinux_2_17_x86_64")
    assert tags[at + 1] == "manylinux2014_x86_64"
    assert tags[tags.index("manylinux_2_12_x86_64") + 1] == "manylinux2010_x86_64"
    assert tags[-3:] == ["manylinux_2_5_x86_64", "manylinux1_x86_64", "any"]
    assert len(tags) == (36 - 5 + 1) + 3 + 1


def test_arm_and_other_64_bit_machines_stop_at_manylinux2014() -> None:
    arm = TargetPlatform(python=(3, 12), machine="aarch64", libc="glibc", libc_version=(2, 28))
    tags = arm.platform_tags()
    assert tags[0] == "manylinux_2_28_aarch64"
    assert tags[-3:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "any"]
    assert arm.abis() == ["cp312", "abi3", "none"]


def test_musl_takes_every_older_musllinux() -> None:
    alpine = TargetPlatform(python=(3, 11), machine="x86_64", libc="musl", libc_version=(1, 2))
    assert alpine.platform_tags() == ["musllinux_1_2_x86_64", "musllinux_1_1_x86_64",
                                      "musllinux_1_0_x86_64", "any"]


def test_pip_options_name_the_interpreter_and_every_tag() -> None:
    options = BOOKWORM.pip_options()
    assert options[:4] == ["--python-version", "3.11", "--implementation", "cp"]
    assert [options[i + 1] for i, o in enumerate(options) if o == "--abi"] == [
        "cp311", "abi3", "none"]
    assert [options[i + 1] for i, o in enumerate(options) if o == "--platform"] == \
        BOOKWORM.platform_tags()


def test_the_probe_on_this_host_gives_the_platforms_packaging_tags_derives() -> None:
    # The same probe the builder runs in the runtime image, run here: the list must be
    # the one packaging.tags computes for this very interpreter.
    output = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE], capture_output=True,
                            text=True, check=True).stdout
    host = parse_probe(output)
    assert host.python == sys.version_info[:2]
    ours = set(host.platform_tags()) - {"any"}
    theirs = {tag.platform for tag in packaging.tags.sys_tags()} - {"any"}
    theirs = {p for p in theirs if not p.startswith("linux_")}  # not portable: never on PyPI
    assert ours == theirs
    assert host.abis()[0] == next(packaging.tags.sys_tags()).abi


@pytest.mark.parametrize(("found", "why"), [
    ({"python": [3, 11], "implementation": "pypy", "machine": "x86_64", "bits": 64,
      "libc": "glibc", "libc_version": "2.36"}, "not CPython"),
    ({"python": [3, 11], "implementation": "cpython", "machine": "x86_64", "bits": 64,
      "libc": "", "libc_version": ""}, "neither glibc nor musl"),
    ({"python": [3, 11]}, "could not be read"),
])
def test_an_image_that_cannot_take_wheels_is_refused_with_the_reason(
    found: dict[str, object], why: str,
) -> None:
    with pytest.raises(BuildFailed, match=why):
        parse_probe(json.dumps(found))
    with pytest.raises(BuildFailed, match="could not be read"):
        parse_probe("Traceback (most recent call last):")


def test_a_32_bit_userland_gets_its_own_tags() -> None:
    found = parse_probe(json.dumps({"python": [3, 11], "implementation": "cpython",
                                    "machine": "x86_64", "bits": 32, "libc": "glibc",
                                    "libc_version": "2.31"}))
    assert found.machine == "i686" and found.platform_tags()[0] == "manylinux_2_31_i686"


# What pip 23 printed for `Flask>=3` when no markupsafe wheel fit (trimmed).
CONFLICT = [
    "ERROR: Cannot install flask==3.1.1, flask==3.1.2 and flask==3.1.3 because these "
    "package versions have conflicting dependencies.",
    "The conflict is caused by:",
    "    flask 3.1.3 depends on markupsafe>=2.1.1",
    "    flask 3.1.2 depends on markupsafe>=2.1.1",
    "    jinja2 3.1.6 depends on MarkupSafe>=2.0",
    "    flask 3.1.1 depends on werkzeug>=3.1",
    "To fix this you could try to:",
    "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/...",
]


def test_conflict_causes_name_each_needed_package_once() -> None:
    assert pipdiagnosis.conflict_causes(CONFLICT) == [
        ("markupsafe>=2.1.1", "flask 3.1.3"), ("werkzeug>=3.1", "flask 3.1.1")]
    assert pipdiagnosis.conflict_causes(["ERROR: something else"]) == []


# Requires-Dist values a published wheel may carry: valid to `packaging`, and each of them
# something pip, given it as an argument, would open (a path, an archive) or refuse.
HOSTILE_CAUSES = [
    "helper===/../../../code/evil", "helper===../../code/evil", "helper===/etc/passwd",
    "helper==1.0+x.whl", "evil.tar.gz", "evil.whl>=1", "helper@", "helper===1.0",
]


@pytest.mark.parametrize("requirement", HOSTILE_CAUSES)
def test_conflict_causes_keep_no_requirement_pip_would_open_as_a_file(
    requirement: str,
) -> None:
    tail = ["The conflict is caused by:", f"    pathdep 1.1 depends on {requirement}",
            "    pathdep 1.0 depends on markupsafe>=2; python_version >= \"3\""]
    assert pipdiagnosis.conflict_causes(tail) == [("markupsafe>=2", "pathdep 1.0")]


def test_a_direct_requirement_without_a_wheel_is_named_with_the_platform() -> None:
    tail = ["ERROR: Could not find a version that satisfies the requirement psycopg2 "
            "(from versions: none)", "ERROR: No matching distribution found for psycopg2"]
    message = pipdiagnosis.explain_failure(PipResult(1, tail, False), BuildLimits(), BOOKWORM)
    assert message.startswith("requirements.txt: no version of psycopg2 has a wheel for "
                              "CPython 3.11 on glibc 2.36 (x86_64)")
    assert "manylinux_2_36_x86_64 down to manylinux1_x86_64" in message
    assert "conflicting" not in message


def test_a_dependency_found_without_a_wheel_replaces_pips_conflict_message() -> None:
    message = pipdiagnosis.explain_failure(PipResult(1, CONFLICT, False), BuildLimits(), BOOKWORM,
                                      [("markupsafe>=2.1.1", "flask 3.1.3")])
    assert "no version of markupsafe>=2.1.1 (needed by flask 3.1.3) has a wheel" in message
    assert "conflicting" not in message
    # A real conflict (every package has wheels) keeps pip's own words.
    real = pipdiagnosis.explain_failure(PipResult(1, CONFLICT, False), BuildLimits(), BOOKWORM)
    assert "conflicting dependencies" in real


def test_a_dependency_pip_itself_found_no_wheel_for_names_who_needs_it() -> None:
    tail = ["ERROR: Could not find a version that satisfies the requirement muslonly>=1 "
            "(from usesmusl) (from versions: none)",
            "ERROR: No matching distribution found for muslonly>=1"]
    assert pipdiagnosis.missing_wheel(tail) == ("muslonly>=1", "usesmusl")
    message = pipdiagnosis.explain_failure(PipResult(1, tail, False), BuildLimits(), BOOKWORM)
    assert "no version of muslonly>=1 (needed by usesmusl) has a wheel" in message
