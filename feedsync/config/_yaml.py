"""The configuration file as YAML, and ``${VAR}`` expansion in its strings.

One mapping, no anchors or aliases, no key given twice, and ``${VAR}``
(``${VAR:-default}``, ``$$`` for a literal ``$``) in string values read from
the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from feedsync.config import rules as configrules
from feedsync.config._reader import join, kind
from feedsync.errors import ConfigError

_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|(\{))")
# "${VAR}" is no plain YAML scalar in a flow mapping ({password: ${P}}): the parser
# sees its braces as private-use characters, which expand turns back.
_BRACED = re.compile(r"\$\{([^{}\n]*)\}")
_HIDDEN = str.maketrans("\ue000\ue001", "{}")


class _Loader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a config never needs them, and a few
    hundred bytes of nested aliases expand into gigabytes ("billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (&name, *name) are not allowed in a feedsync"
                " config; write the value out, or quote a string that starts with & or *",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def read_yaml(text: str, source: str) -> dict[Any, Any]:
    loader = _Loader(_BRACED.sub("$\ue000\\1\ue001", text))
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("", f"{source}: the file is empty; expected cybertrace: and feeds:")
        _refuse_duplicate_keys(node, "")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        where = _where(source, exc.problem_mark)
        context = (
            f" ({exc.context} at line {exc.context_mark.line + 1})" if exc.context_mark else ""
        )
        hint = configrules.yaml_hint(exc.problem or "", exc.context or "")
        raise ConfigError("", f"{where}: {exc.problem}{context}; hint: {hint}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{source}: {exc}") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        message = f"expected a mapping of settings, got {kind(data)}"
        raise ConfigError("", f"{_where(source, node.start_mark)}: {message}")
    return data


def _refuse_duplicate_keys(node: yaml.Node, path: str) -> None:
    # PyYAML silently keeps the last of two equal keys; a config must not lose one that way.
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{index}]")
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[tuple[str, str], yaml.Node] = {}
    for key, value in node.value:
        here = join(path, key.value if isinstance(key, yaml.ScalarNode) else "?")
        if isinstance(key, yaml.ScalarNode):
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                lines = f"lines {earlier.start_mark.line + 1} and {key.start_mark.line + 1}"
                raise ConfigError(here, f"key given twice ({lines})")
        _refuse_duplicate_keys(value, here)


def _where(source: str, mark: yaml.Mark | None) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source


def expand(
    value: Any, path: str, env: Mapping[str, str], literal: set[str], unset: dict[str, str] | None
) -> Any:
    """``value`` with variables replaced; ``literal`` gets the paths of strings without any.
    With ``unset`` given, an unset variable reads as "" and ``unset`` gets its path."""
    if isinstance(value, str):
        value = value.translate(_HIDDEN)
        expanded = _VARIABLE.sub(lambda match: _variable(match, path, env, unset), value)
        if not any(match.group(2) for match in _VARIABLE.finditer(value)):
            literal.add(path)
        return expanded
    if isinstance(value, dict):
        value = {k.translate(_HIDDEN) if isinstance(k, str) else k: v for k, v in value.items()}
        return {k: expand(item, join(path, k), env, literal, unset) for k, item in value.items()}
    if isinstance(value, list):
        return [expand(item, f"{path}[{i}]", env, literal, unset) for i, item in enumerate(value)]
    return value


def _variable(
    match: re.Match[str], path: str, env: Mapping[str, str], unset: dict[str, str] | None
) -> str:
    dollar, name, default, malformed = match.groups()
    if dollar:
        return "$"
    if malformed:
        # The text may be a secret: say what is wrong without showing it.
        raise ConfigError(path, "bad ${...}: write ${NAME}, ${NAME:-default}, or $$ for a $")
    # As in the shell, ${NAME:-default} also replaces a variable set to "".
    if default is not None and not env.get(name):
        return default.replace("$$", "$")
    if name not in env:
        hint = _UNSET_HINTS.get(name, "")
        if unset is not None:
            unset[path] = f"environment variable {name} is not set{hint}"
            return ""
        raise ConfigError(path, f"environment variable {name} is not set{hint}")
    return env[name]


_UNSET_HINTS = {
    # The unit's secrets: `feedsync check` run by hand has no LoadCredential= of its own.
    "CREDENTIALS_DIRECTORY": " (systemd sets it in a unit with LoadCredential=; outside the"
    " unit, set it to the directory of the credential files, as in"
    " CREDENTIALS_DIRECTORY=/etc/feedsync/credentials feedsync check)",
}
