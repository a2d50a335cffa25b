"""The recipe: which method and scheme apply to which modules, as validated data.

```yaml
method: gptq                 # or "awq+gptq": transforms first, then the method
transforms: [awq]            # block transforms run before quantizing (or {name: awq, grid: 10})
scheme: w4g128               # may quantize activations too: w8a8, w4g128a8 (suffix a<bits>)
kv_cache: kv8                # optional: quantized keys and values (kv8, kv4, kv4h, kvfp8)
method_args: {damp: 0.01, act_order: true}
overrides:
  - {pattern: "down_proj", scheme: w8}      # regex searched in the full module name
  - {pattern: "layers\\.0\\.", skip: true}   # keep float
```
Later overrides win. Unknown keys are errors, so typos never pass silently.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmpress.errors import LmpressError
from lmpress.formats.scheme import Scheme, parse_scheme
from lmpress.methods import get_method
from lmpress.methods.base import Needs
from lmpress.nn.kv_cache import KVScheme, parse_kv
from lmpress.transforms import get_transform

_RECIPE_KEYS = {"method", "scheme", "method_args", "overrides", "transforms", "kv_cache"}
_OVERRIDE_KEYS = {"pattern", "scheme", "method", "method_args", "skip"}


@dataclass(frozen=True)
class ModulePlan:
    """What happens to one linear layer."""

    method: str
    scheme: Scheme
    method_args: dict[str, Any]

    @property
    def needs(self) -> Needs:
        """What the pipeline must provide this module's method."""
        return get_method(self.method).needs(self.method_args)

    @property
    def needs_hessian(self) -> bool:
        """Whether the method needs calibration statistics for this module."""
        return self.needs.data


@dataclass
class Override:
    pattern: str
    scheme: Scheme | None = None
    method: str | None = None
    method_args: dict[str, Any] | None = None
    skip: bool = False


@dataclass
class TransformStep:
    """One block transform and its options (defaults filled in)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: "str | dict[str, Any] | TransformStep") -> "TransformStep":
        if isinstance(spec, TransformStep):
            return spec
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise LmpressError(f"transform {spec!r} must be a name or a mapping with 'name'")
        name = str(spec["name"])
        args = {k: v for k, v in spec.items() if k != "name"}
        return cls(name, get_transform(name).options(args, name))


@dataclass
class Recipe:
    method: str = "rtn"
    scheme: Scheme = field(default_factory=lambda: parse_scheme("w4g128"))
    method_args: dict[str, Any] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    transforms: list[TransformStep] = field(default_factory=list)
    kv_cache: KVScheme | None = None

    def __post_init__(self) -> None:
        self.scheme = parse_scheme(self.scheme)
        if self.kv_cache is not None:
            self.kv_cache = parse_kv(self.kv_cache)
        *prefix, self.method = str(self.method).split("+")
        # "awq+gptq": the names before the method are transforms, run in that order
        steps = [TransformStep.parse(t) for t in [*prefix, *self.transforms]]
        self.transforms = list({t.name: t for t in steps}.values())
        get_method(self.method).options(self.method_args, self.method)
        for o in self.overrides:
            try:
                re.compile(o.pattern)
            except re.error as e:
                raise LmpressError(
                    f"override pattern {o.pattern!r} is not a valid regex: {e}"
                ) from e
            if o.method and "+" in o.method:
                raise LmpressError(
                    f"override {o.pattern!r}: method {o.method!r} combines transforms, which "
                    "apply to the whole recipe; put them in the recipe's 'transforms'"
                )
            if o.method or o.method_args:
                m = o.method or self.method
                get_method(m).options(o.method_args, m)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        unknown = set(d) - _RECIPE_KEYS
        if unknown:
            raise LmpressError(
                f"unknown recipe key(s) {sorted(unknown)}; allowed: {sorted(_RECIPE_KEYS)}"
            )
        overrides = []
        given = d.get("overrides") or []
        if not isinstance(given, list) or not all(isinstance(o, dict) for o in given):
            raise LmpressError(
                "recipe 'overrides' must be a list of mappings, e.g. "
                "[{pattern: down_proj, scheme: w8}]"
            )
        for o in given:
            bad = set(o) - _OVERRIDE_KEYS
            if bad or "pattern" not in o:
                raise LmpressError(
                    f"override {o} must have 'pattern' and only keys {sorted(_OVERRIDE_KEYS)}"
                )
            scheme = parse_scheme(o["scheme"]) if o.get("scheme") is not None else None
            overrides.append(
                Override(
                    o["pattern"],
                    scheme,
                    o.get("method"),
                    o.get("method_args"),
                    bool(o.get("skip", False)),
                )
            )
        method_args = d.get("method_args") or {}
        if not isinstance(method_args, dict):
            raise LmpressError(f"recipe 'method_args' must be a mapping, got {method_args!r}")
        transforms = d.get("transforms") or []
        if not isinstance(transforms, list):
            raise LmpressError(f"recipe 'transforms' must be a list, got {transforms!r}")
        return cls(
            method=d.get("method", "rtn"),
            scheme=parse_scheme(d.get("scheme", "w4g128")),
            method_args=dict(method_args),
            overrides=overrides,
            transforms=transforms,
            kv_cache=d.get("kv_cache"),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        p = Path(path)
        if not p.is_file():
            raise LmpressError(f"recipe file {path} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise LmpressError(f"recipe file {path} is not UTF-8 text") from None
        except yaml.YAMLError as e:
            raise LmpressError(f"recipe file {path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise LmpressError(f"recipe file {path} must hold a mapping")
        try:
            return cls.from_dict(data)
        except LmpressError as e:
            raise LmpressError(f"recipe file {path}: {e}") from None
        except (TypeError, AttributeError, ValueError, KeyError) as e:
            raise LmpressError(
                f"recipe file {path}: malformed ({type(e).__name__}: {e}); see docs/recipes.md"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "transforms": [{"name": t.name, **t.args} for t in self.transforms],
            "scheme": self.scheme.to_dict(),
            "method_args": self.method_args,
            "overrides": [
                {
                    "pattern": o.pattern,
                    "scheme": o.scheme.to_dict() if o.scheme else None,
                    "method": o.method,
                    "method_args": o.method_args,
                    "skip": o.skip,
                }
                for o in self.overrides
            ],
            **({"kv_cache": self.kv_cache.to_dict()} if self.kv_cache else {}),
        }

    def plan_for(self, name: str) -> ModulePlan | None:
        """The plan for module ``name`` (full dotted name), or None to keep it float."""
        method, scheme, args = self.method, self.scheme, self.method_args
        for o in self.overrides:
            if re.search(o.pattern, name):
                if o.skip:
                    return None
                if o.method:
                    method, args = o.method, (o.method_args or {})
                elif o.method_args:
                    args = {**args, **o.method_args}
                scheme = o.scheme or scheme
        spec = get_method(method)
        spec.check_format(scheme, method)
        for t in self.transforms:
            get_transform(t.name).check_format(scheme, t.name)
        return ModulePlan(method, scheme, spec.options(args, method))

    def check_overrides_match(self, names: list[str]) -> None:
        """Every override must match at least one quantizable module: typos are errors."""
        for o in self.overrides:
            if not any(re.search(o.pattern, n) for n in names):
                raise LmpressError(
                    f"override pattern {o.pattern!r} matches no quantizable module; lmpress "
                    f"quantizes the linear layers of decoder blocks, e.g. {names[0]!r}"
                )

    @property
    def label(self) -> str:
        """``awq+gptq`` style: transforms then method."""
        return "+".join([t.name for t in self.transforms] + [self.method])

    @property
    def needs_calibration(self) -> bool:
        if any(get_transform(t.name).needs_data for t in self.transforms):
            return True
        schemes = [self.scheme, *(o.scheme for o in self.overrides if o.scheme)]
        if any(s.act is not None and not s.act.dynamic for s in schemes):
            return True
        combos = [(self.method, self.method_args)]
        for o in self.overrides:
            if o.method:
                combos.append((o.method, o.method_args or {}))
            elif o.method_args:
                combos.append((self.method, {**self.method_args, **o.method_args}))
        return any(get_method(m).uses_hessian(get_method(m).options(a, m)) for m, a in combos)
