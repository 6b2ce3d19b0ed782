"""Print the licences of what recond installs, read from the installed packages' own metadata.

docs/licences.md holds this table for a reader who has nothing installed; regenerate it after a
dependency changes, from an environment with every extra installed:

    .venv/bin/python scripts/licences.py > /tmp/licences-table.md

It follows recond's requirements (and those of each extra) through the installed distributions'
Requires-Dist, as pip resolved them, and gives each distribution's License-Expression, else the
licence trove classifiers, else the first line of its License field (importlib.metadata).
"""

from __future__ import annotations

import importlib.metadata as metadata
import re

from packaging.requirements import Requirement

EXTRAS = ("ray", "docs", "test")


def licence_of(dist: metadata.Distribution) -> str:
    """License-Expression (PEP 639), else the licence trove classifiers, else the License field's
    first line when it is a name (some packages put a whole licence text or a copyright there)."""
    fields = dist.metadata
    if fields.get("License-Expression"):
        return str(fields["License-Expression"])
    classifiers = [c.split(" :: ")[-1] for c in fields.get_all("Classifier") or []
                   if c.startswith("License ::")]
    if classifiers:
        return ", ".join(classifiers)
    licence = (fields.get("License") or "").strip().splitlines()
    if licence and len(licence[0]) <= 80 and licence[0].strip().upper() != "UNKNOWN":
        return licence[0].strip()
    return "not stated in its metadata (see its licence file)"


def requirements(dist: metadata.Distribution, extra: str = "") -> list[str]:
    """The distributions ``dist`` requires on this machine (markers evaluated), with ``extra``."""
    names = []
    for line in dist.requires or []:
        requirement = Requirement(line)
        environment = {"extra": extra}
        if requirement.marker is None or requirement.marker.evaluate(environment):
            if requirement.marker is not None and "extra" in str(requirement.marker) and not extra:
                continue
            names.append(requirement.name)
    return names


def closure(roots: list[str]) -> dict[str, metadata.Distribution]:
    found: dict[str, metadata.Distribution] = {}
    waiting = list(roots)
    while waiting:
        name = re.sub(r"[-_.]+", "-", waiting.pop()).lower()
        if name in found or name == "recond":
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency pip did not install here
        waiting += requirements(found[name])
    return found


def main() -> None:
    recond = metadata.distribution("recond")
    base = closure(requirements(recond))
    print("| Package | Version | Licence (from its metadata) | Installed by |")
    print("|---|---|---|---|")
    seen = set(base)
    groups = [("recond", base)]
    for extra in EXTRAS:
        more = {name: dist for name, dist in closure(requirements(recond, extra)).items()
                if name not in seen}
        seen |= set(more)
        groups.append((f"[{extra}] extra", more))
    for group, dists in groups:
        for name, dist in sorted(dists.items()):
            print(f"| {dist.metadata['Name']} | {dist.version} | {licence_of(dist)} | {group} |")


if __name__ == "__main__":
    main()
