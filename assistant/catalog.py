"""What the assistant knows: the host's catalog/FAQ (YAML, JSON or Markdown) and the live product cards.

YAML or JSON::

    products:
      - {id: jade-1, title: Jade bracelet, price: "199.00", currency: CNY, description: ..., sizes: "S, M"}
    faq:
      - {q: How long is shipping?, a: We ship within 48 hours.}

Markdown: every heading starts an entry; the heading is the question (or topic), the text under it the
answer. Live cards (what the host pushed) are always part of it and always win on facts: price, currency,
stock, countdown and link come from the card, never from the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_CATALOG_BYTES = 64 * 1024  # kept in the room store, read on every join
MAX_DEPTH = 8  # products: [ {sizes: [..]} ] is four deep
MAX_NODES = 20_000  # values in the parsed catalog, counted after parsing (YAML aliases are refused anyway)
MAX_TEXT_CHARS = 256 * 1024  # characters of all its strings together
_HEADING = re.compile(r"^#{1,6}\s+(.*\S)\s*$")
CARD_FACTS = ("price", "currency", "stock", "countdown_s", "url", "title")


@dataclass
class Product:
    id: str
    title: str
    facts: dict[str, Any] = field(default_factory=dict)  # from the catalog: description, sizes, ...

    def text(self) -> str:
        return " ".join([self.title, *(f"{k} {v}" for k, v in self.facts.items() if k not in ("url", "image"))])


@dataclass
class Faq:
    question: str
    answer: str


@dataclass
class Catalog:
    products: dict[str, Product] = field(default_factory=dict)
    faq: list[Faq] = field(default_factory=list)


class CatalogError(ValueError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name``, where a few hundred bytes expand to gigabytes: the
    "billion laughs") and with a bound on nesting, checked as the document is composed."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a catalog",
                                              event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_shape(data: Any) -> None:
    """Depth, number of values and characters of what was parsed, whatever the parser. Raises CatalogError."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = chars = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise CatalogError(f"nested deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            raise CatalogError(f"more than {MAX_NODES} values")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            chars += sum(len(str(k)) for k in value)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            chars += len(value)
        if chars > MAX_TEXT_CHARS:
            raise CatalogError(f"more than {MAX_TEXT_CHARS // 1024} K characters of text")


def parse_catalog(text: str, fmt: str) -> Catalog:
    """A catalog from ``text`` in ``fmt`` (yaml, json or markdown). Raises CatalogError with a reason.
    Bounded in time and memory by its input: 64 KiB, no YAML aliases, at most ``MAX_DEPTH`` deep."""
    if len(text.encode()) > MAX_CATALOG_BYTES:
        raise CatalogError(f"catalog larger than {MAX_CATALOG_BYTES // 1024} KiB")
    if fmt == "markdown":
        return _markdown(text)
    try:
        data = json.loads(text) if fmt == "json" else yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise CatalogError(f"not valid {fmt}: nested too deep") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise CatalogError(f"not valid {fmt}: {' '.join(str(exc).split())[:160]}") from None
    _check_shape(data)
    if data is None:
        return Catalog()
    if not isinstance(data, dict):
        raise CatalogError("a catalog is a map with 'products' and/or 'faq'")
    catalog = Catalog()
    for item in data.get("products") or []:
        if not isinstance(item, dict) or not item.get("id") or not item.get("title"):
            raise CatalogError("every product needs an id and a title")
        facts = {str(k): v for k, v in item.items() if k not in ("id", "title")}
        catalog.products[str(item["id"])] = Product(str(item["id"]), str(item["title"]), facts)
    for item in data.get("faq") or []:
        if not isinstance(item, dict) or not item.get("q") or not item.get("a"):
            raise CatalogError("every faq entry needs q and a")
        catalog.faq.append(Faq(str(item["q"]), str(item["a"])))
    return catalog


def _markdown(text: str) -> Catalog:
    catalog = Catalog()
    heading: str | None = None
    body: list[str] = []

    def flush() -> None:
        answer = "\n".join(body).strip()
        if heading and answer:
            catalog.faq.append(Faq(heading, answer))

    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            flush()
            heading, body = match.group(1), []
        else:
            body.append(line)
    flush()
    return catalog
