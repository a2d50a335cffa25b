"""Exporters: write a compressed model in another ecosystem's format. One registry.

An exporter is registered as an :class:`ExporterSpec`: its function, what it
writes, and the options it takes, each declared with a default (whose type a value
must have) and, where only some values are valid, its choices; so options are checked
at the edge the way method options are (:func:`lmpress.registry.validate_options`),
and the CLI builds its flags from them.

The function is ``fn(model, tokenizer, out, options) -> summary`` where ``model``
is a loaded lmpress model (``QLinear`` modules), ``out`` a path that does not exist
yet (files are written under a temporary name and renamed at the end), ``options``
the validated options completed with their defaults plus the run's context
(:data:`CONTEXT_KEYS`), and ``summary`` a JSON-able dict: what was written, and for
every tensor whether it is exact or how far it moved.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lmpress.errors import LmpressError
from lmpress.nn.qlinear import QLinear, refuse_online_parts
from lmpress.outputs import atomic_output
from lmpress.registry import Limits, Registry, validate_options

ExportFn = Callable[[nn.Module, Any, Path, dict[str, Any]], dict[str, Any]]

# What :func:`lmpress.api.export_model` adds to every exporter's options: facts of the
# run (show progress bars; where the tokenizer files and the source model are), not
# choices a user makes, so no exporter may declare an option of these names.
CONTEXT_KEYS = ("progress", "tokenizer_dir", "source_model")


@dataclass(frozen=True)
class ExportOption:
    """One option an exporter takes: its default (whose type values must have), what it
    does (for ``--help``) and, where only some values are valid, which."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class ExporterSpec:
    """A registered exporter: ``fn`` (see the module docstring), a one-line
    ``description``, its ``declared`` options, and ``suffix``: the file suffix of a
    format written as one file (``".gguf"``), ``None`` for one written as a directory;
    ``magic``: the first bytes of such a file, by which ``--overwrite`` knows a file it
    may replace."""

    fn: ExportFn
    description: str
    declared: dict[str, ExportOption] = field(default_factory=dict)
    suffix: str | None = None
    magic: bytes | None = None

    @property
    def writes_directory(self) -> bool:
        return self.suffix is None

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: opt.default for name, opt in self.declared.items()}

    @property
    def limits(self) -> Limits:
        """Each option with choices, as a ``validate_options`` limit."""
        return {
            name: (_one_of(opt.choices), "one of " + ", ".join(map(str, opt.choices)))
            for name, opt in self.declared.items()
            if opt.choices is not None
        }

    def options(self, given: dict[str, Any] | None, name: str) -> dict[str, Any]:
        """``given`` checked (names, types, choices) and completed with the defaults."""
        return validate_options(given, self.defaults, self.limits, f"export format {name!r}")


def exportable_modules(
    model: nn.Module,
    exporter: str,
    formats: tuple[str, ...] = ("int",),
    activations: bool = False,
) -> list[tuple[str, QLinear]]:
    """The model's quantized modules, each checked to be writable by ``exporter``: its
    format among ``formats`` and no optional component (mask, low-rank factors, ...),
    which no target format stores; anything else is refused in one line.
    ``activations``: the exporter checks quantized activations itself."""
    refuse_online_parts(model, f"{exporter} export", activations=not activations)
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, QLinear)]
    for name, m in mods:
        if m.scheme.format not in formats:
            raise LmpressError(
                f"{exporter} export writes {', '.join(formats)} formats; {name} is "
                f"{m.scheme.name} (format {m.scheme.format!r})"
            )
        extra = m.packed().optional_components()
        if extra:
            raise LmpressError(
                f"{exporter} export cannot store the {', '.join(extra)} component(s) of {name}; "
                "export a model without them"
            )
    return mods


def _one_of(choices: tuple[Any, ...]) -> Callable[[Any], bool]:
    return lambda value: value in choices


EXPORTERS: Registry[ExporterSpec] = Registry("export format")


def register_exporter(
    name: str,
    description: str,
    suffix: str | None = None,
    magic: bytes | None = None,
    **declared: ExportOption,
) -> Callable[[ExportFn], ExportFn]:
    """Register ``fn`` as the exporter ``name`` taking the ``declared`` options."""
    clash = sorted(set(declared) & set(CONTEXT_KEYS))
    if clash:
        raise ValueError(f"exporter {name!r}: options {clash} are reserved for the run's context")
    for key, opt in declared.items():
        if opt.choices is not None and opt.default not in opt.choices:
            raise ValueError(f"exporter {name!r}: default {key}={opt.default!r} is no choice")

    def deco(fn: ExportFn) -> ExportFn:
        EXPORTERS.register(name)(ExporterSpec(fn, description, declared, suffix, magic))
        return fn

    return deco


__all__ = [
    "CONTEXT_KEYS",
    "EXPORTERS",
    "ExportFn",
    "ExportOption",
    "ExporterSpec",
    "atomic_output",
    "exportable_modules",
    "register_exporter",
]
