"""``config.yaml``, the resolved configuration every run keeps, in OmegaConf's YAML, written fast
enough for a 10,000-run sweep."""

from __future__ import annotations

import functools
from typing import Any

from omegaconf import DictConfig

from gdexp.config import resolved


def config_yaml(cfg: DictConfig | dict[str, Any]) -> str:
    """The resolved configuration as the ``config.yaml`` every run keeps, in OmegaConf's YAML;
    without the tracking URI, which may hold credentials."""
    import yaml

    plain = dict(resolved(cfg))
    plain["tracking"] = {k: v for k, v in (plain.get("tracking") or {}).items() if k != "uri"}
    return yaml.dump(plain, Dumper=_yaml_dumper(), default_flow_style=False, allow_unicode=True, sort_keys=False)


@functools.cache
def _yaml_dumper() -> Any:
    """OmegaConf's YAML dumper on libyaml's C emitter where PyYAML has one, its rule for quoting a
    string remembered per string: the same text (checked in ``tests/test_record.py``), a tenth of
    the time (3.5 ms a run otherwise)."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    if not getattr(yaml, "__with_libyaml__", False):
        return get_omega_conf_dumper()
    from omegaconf._utils import is_float, is_int, yaml_is_bool

    @functools.lru_cache(maxsize=4096)  # a sweep's configs repeat their strings: keys and values
    def quoted(text: str) -> bool:
        return bool(yaml_is_bool(text) or is_int(text) or is_float(text))

    def str_representer(dumper: Any, data: str) -> Any:  # OmegaConfDumper.str_representer's rule
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="'" if quoted(data) else None)

    dumper: Any = type("OmegaConfCDumper", (yaml.CDumper,), {})
    dumper.add_representer(str, str_representer)
    return dumper
