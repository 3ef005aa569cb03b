"""Firefox pages for the browser scenarios: Debian's firefox-esr, headless, over WebDriver BiDi (puppeteer-core
in tests/interop/firefox_driver.mjs, one Node process per browser). A ``FirefoxPage`` answers ``evaluate``,
``click``, ``fill`` and ``screenshot`` as a Playwright page does, so the scenarios' helpers (``wait_for``) take
either. ``async with await Firefox.launch() as firefox:`` closes the browser at the block's end."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).resolve().parent / "interop" / "firefox_driver.mjs"


class FirefoxError(RuntimeError):
    pass


class Firefox:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()  # one command at a time: answers come back in order

    @classmethod
    async def launch(cls) -> Firefox:
        proc = await asyncio.create_subprocess_exec("node", str(DRIVER), stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024)
        return cls(proc)

    async def command(self, op: str, timeout: float = 60.0, **args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        async with self._lock:
            command_id = next(self._ids)
            self._proc.stdin.write((json.dumps({"id": command_id, "op": op, **args}) + "\n").encode())
            await self._proc.stdin.drain()
            line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        if not line:
            raise FirefoxError(f"the Firefox driver ended (exit {await self._proc.wait()}) during {op}")
        answer = json.loads(line)
        if "error" in answer:
            raise FirefoxError(f"{op}: {answer['error']}")
        return answer["result"]

    async def __aenter__(self) -> Firefox:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def new_page(self, url: str, viewport: dict[str, int] | None = None) -> FirefoxPage:
        return FirefoxPage(self, await self.command("open", url=url, viewport=viewport))

    async def close(self) -> None:
        try:
            await self.command("close", timeout=20)
        except (FirefoxError, TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


class FirefoxPage:
    def __init__(self, browser: Firefox, page: int) -> None:
        self.browser = browser
        self.page = page

    async def evaluate(self, expression: str) -> Any:
        return await self.browser.command("eval", page=self.page, expr=expression)

    async def click(self, selector: str) -> None:
        await self.browser.command("click", page=self.page, selector=selector)

    async def fill(self, selector: str, text: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).value = ''")
        await self.browser.command("type", page=self.page, selector=selector, text=text)

    async def text_content(self, selector: str) -> str:
        return str(await self.evaluate(f"document.querySelector({json.dumps(selector)}).textContent"))

    async def screenshot(self, *, path: str) -> None:
        await self.browser.command("screenshot", page=self.page, path=path)

    async def errors(self) -> list[str]:
        return list(await self.browser.command("errors", page=self.page))
