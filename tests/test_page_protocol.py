"""The page's modules against the server's tables and the page's own layout rules (read from the files
themselves; the browser tests exercise what they do)."""

from __future__ import annotations

import re
from pathlib import Path

from protocol import CloseCode

WEB = Path(__file__).resolve().parent.parent / "clients" / "web"
MODULES = sorted(WEB.glob("*.js"))


def test_the_pages_close_codes_are_the_servers() -> None:
    text = (WEB / "connection.js").read_text()
    table = re.search(r"export const CLOSE = Object\.freeze\(\{(.*?)\}\);", text, re.S)
    assert table is not None, "connection.js names its close codes in one CLOSE table"
    named = {name: int(code) for name, code in re.findall(r"([A-Z_]+): (\d+)", table.group(1))}
    assert named == {code.name: code.value for code in CloseCode}


def test_no_close_code_is_a_bare_number_outside_the_table() -> None:
    for path in MODULES:
        text = path.read_text()
        if path.name == "connection.js":
            text = re.sub(r"export const CLOSE = Object\.freeze\(\{.*?\}\);", "", text, flags=re.S)
        code_only = "\n".join(line.split("//")[0] for line in text.splitlines())
        assert not re.findall(r"\bcode\s*[!=]==?\s*\d{4}\b|\b40\d\d\b", code_only), path.name


def test_the_only_mutable_module_state_is_the_app_object() -> None:
    assert {p.name for p in MODULES} >= {"app.js", "state.js", "connection.js", "media.js", "stage.js", "chat.js",
                                         "shop.js", "studio.js", "call.js", "live.js", "pages.js", "i18n.js"}
    for path in MODULES:
        top_level = [line for line in path.read_text().splitlines() if re.match(r"(export )?(let|var) ", line)]
        assert top_level == [], f"{path.name}: module-level variables {top_level}"
    state = (WEB / "state.js").read_text()
    assert re.findall(r"^export const (\w+)", state, re.M) == ["app"]


def test_every_module_is_reached_from_the_entry_point() -> None:
    imports = {p.name: set(re.findall(r'from "\./([\w.]+)"', p.read_text())) for p in MODULES}
    reached: set[str] = set()
    todo = re.findall(r'<script type="module" src="/static/([\w.]+)"', (WEB / "index.html").read_text())
    assert todo == ["boot.js", "app.js"]  # the page's entry points
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(imports.get(name, ()))
    assert reached == set(imports), set(imports) - reached
