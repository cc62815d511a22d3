from __future__ import annotations

import pytest

from responsenet.errors import UsageError
from responsenet.registry import Registry, import_target


def test_lazy_lookup_and_did_you_mean():
    reg: Registry = Registry("metric")
    reg.register("meteor", "json:dumps")
    reg.register("rouge_l", "json:loads")
    reg.plan("fvd", "needs the video metrics release")
    assert reg.get("meteor") is __import__("json").dumps
    with pytest.raises(UsageError) as info:
        reg.get("meteorr")
    assert str(info.value) == ("Unknown metric 'meteorr'. Did you mean 'meteor'? "
                               "Available: meteor, rouge_l.")
    with pytest.raises(UsageError, match=r"^not available yet: metric 'fvd' \(needs the video"):
        reg.get("fvd")
    assert reg.is_planned("fvd") and not reg.is_planned("meteor")


def test_names_are_declared_once():
    reg: Registry = Registry("stage")
    reg.register("a", "json:dumps")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "json:loads")


@pytest.mark.parametrize("spec, fragment", [
    ("json", "expected 'package.module:Name'"),
    ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
    ("json:nope", "has no attribute 'nope'"),
])
def test_import_target_errors(spec, fragment):
    with pytest.raises(UsageError, match=fragment):
        import_target(spec)


def test_import_target_dotted_attribute():
    assert import_target("os:path.join") is __import__("os").path.join
