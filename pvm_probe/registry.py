"""One registry per kind of extension: suites, probes and remedies, each the one source of its names.

    SUITES    pvm_probe.suites     what to ask a model and how to score it (`suites.base.Suite`)
    PROBES    pvm_probe.probes     what rides along `generate` and how it is reported (`probes.protocol.Probe`)
    REMEDIES  pvm_probe.remedies   training-free methods, as context managers (`remedies.base.Remedy`)

The built-ins are named here as "module:attribute" strings; another distribution adds its own through the
entry-point group of the same name, e.g. in its pyproject.toml:

    [project.entry-points."pvm_probe.remedies"]
    my_remedy = "my_package.remedy:MyRemedy"

Names are known without importing anything (the command line's choices and `--help` stay light); a class
is imported the first time it is asked for. A plug-in may not take a built-in's name. In a notebook, a class
can be registered without packaging it: `PROBES.add("mine", MyProbe)`.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from .errors import InputError


class Registry:
    """The names and classes of one kind of extension: the built-ins, then the plug-ins of entry-point `group`."""

    def __init__(self, group: str, kind: str, builtin: dict[str, str]):
        self.group, self.kind = group, kind
        self._targets = dict(builtin)  # name -> "module:attribute", or the class once imported
        self._plugins: list[str] | None = None  # names read from entry points (None: not read yet)

    def _read_plugins(self) -> None:
        if self._plugins is not None:
            return
        self._plugins = []
        for point in entry_points(group=self.group):
            if point.name in self._targets:
                raise InputError(f"entry point {point.name!r} in {self.group} ({point.value}) takes the name of "
                                 f"a registered {self.kind}: rename it")
            self._targets[point.name] = point.value
            self._plugins.append(point.name)

    def refresh(self) -> None:
        """Forget the plug-ins read so far; the next lookup reads the entry points again."""
        for name in self._plugins or []:
            del self._targets[name]
        self._plugins = None

    def names(self) -> list[str]:
        self._read_plugins()
        return list(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str):
        """The class registered under `name` (imported now if it was named by a string)."""
        if name not in self:
            raise InputError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        target = self._targets[name]
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = self._targets[name] = getattr(import_module(module), attribute)
        return target

    def items(self):
        return [(name, self.get(name)) for name in self.names()]

    def add(self, name: str, target) -> None:
        """Register a class in this process (a notebook's own probe, say); entry points do it for a package."""
        if name in self:
            raise InputError(f"a {self.kind} named {name!r} is already registered")
        self._targets[name] = target

    def remove(self, name: str) -> None:
        """Forget a class registered with `add`."""
        self._targets.pop(name)


SUITES = Registry("pvm_probe.suites", "suite", {
    "world": "pvm_probe.suites.world.suite:WorldSuite",
    "scenes": "pvm_probe.suites.scenes.suite:ScenesSuite",
    "images": "pvm_probe.suites.images:ImagesSuite",
    "chair": "pvm_probe.suites.chair:ChairSuite",
    "pope": "pvm_probe.suites.pope:PopeSuite",
    "amber": "pvm_probe.suites.amber:AmberSuite",
})
"""The suites (`suites.base.Suite`): `--suite`'s choices."""
PROBES = Registry("pvm_probe.probes", "probe", {  # in record order: later probes may read earlier sections
    "mass": "pvm_probe.probes.builtin.mass:AttentionMassProbe",
    "lens": "pvm_probe.probes.builtin.lens:LogitLensProbe",
    "tuned_lens": "pvm_probe.probes.builtin.lens:TunedLensProbe",
    "pvm": "pvm_probe.probes.builtin.pvm:PVMProbe",
})
"""The probes (`probes.protocol.Probe`), in record order: `--probes`' choices."""
REMEDIES = Registry("pvm_probe.remedies", "remedy", {
    "vcd": "pvm_probe.remedies.vcd:VCD",
    "pai": "pvm_probe.remedies.pai:PAI",
    "memvr": "pvm_probe.remedies.memvr:MemVR",
    "dola": "pvm_probe.remedies.dola:DoLa",
    "vista": "pvm_probe.remedies.vista:VISTA",
    "sparc": "pvm_probe.remedies.sparc:SPARC",
    "opera": "pvm_probe.remedies.opera:OPERA",
})
"""The training-free remedies (`remedies.base.Remedy`): `--remedy`'s choices."""
