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


def parse_catalog(text: str, fmt: str) -> Catalog:
    """A catalog from ``text`` in ``fmt`` (yaml, json or markdown). Raises CatalogError with a reason."""
    if len(text.encode()) > MAX_CATALOG_BYTES:
        raise CatalogError(f"catalog larger than {MAX_CATALOG_BYTES // 1024} KiB")
    if fmt == "markdown":
        return _markdown(text)
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CatalogError(f"not valid {fmt}: {str(exc)[:120]}") from None
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
