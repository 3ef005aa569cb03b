"""Reading viewers' comments: words (Chinese segmented with jieba, other text in lower-case words), whether a
comment is a question, what it asks about, and a key that makes the same question asked twice look alike."""

from __future__ import annotations

import re
import threading

import jieba

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*", re.IGNORECASE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_init_lock = threading.Lock()
_initialized = False

# Question words and endings, English and Chinese. A comment with a question mark is a question; without
# one, it is when it starts with a question word or carries a Chinese question particle.
_EN_QUESTION_START = ("how", "what", "which", "when", "where", "why", "who", "is", "are", "do", "does", "can",
                      "could", "will", "would", "any", "price", "pls", "please")
_ZH_QUESTION = ("吗", "呢", "多少", "什么", "怎么", "几", "有没有", "哪", "能不能", "可以吗", "是不是", "咋", "啥",
                "多久", "多大", "有货", "还有")

# What a question is about: the intents answered straight from a live product card.
INTENTS: dict[str, tuple[str, ...]] = {
    "price": ("price", "cost", "how much", "多少钱", "价格", "价钱", "几块", "多少米", "优惠", "便宜"),
    "stock": ("stock", "left", "available", "sold out", "库存", "还有", "有货", "剩", "卖完"),
    "link": ("link", "buy", "where can i", "order", "链接", "怎么买", "在哪买", "下单", "购买"),
    # ("how long" and "多久" are left out: "how long is shipping?" is not about the offer's end)
    "countdown": ("until when", "offer end", "ends", "deadline", "截止", "结束", "倒计时"),
}

_STOP = {"the", "a", "an", "is", "are", "it", "this", "that", "do", "does", "you", "i", "to", "of", "for", "in",
         "and", "or", "please", "pls", "there", "any", "have", "can", "will", "me", "my", "your",
         "吗", "呢", "的", "了", "啊", "吧", "呀", "这个", "那个", "请问", "？", "?"}


def _ensure_jieba() -> None:
    global _initialized  # jieba's dictionary is process-wide: load it once, not per question
    if not _initialized:
        with _init_lock:
            if not _initialized:
                jieba.setLogLevel(60)
                jieba.initialize()
                _initialized = True


def warm_up() -> None:
    """Load the Chinese dictionary now (about half a second), not on the first question."""
    _ensure_jieba()


def tokens(text: str) -> list[str]:
    """Words of ``text`` for retrieval: Chinese runs segmented by jieba, other words lower-cased."""
    text = text.lower()
    out = _WORD.findall(text)
    if _CJK.search(text):
        _ensure_jieba()
        for run in _CJK_RUN.findall(text):
            out.extend(w for w in jieba.lcut_for_search(run) if w.strip())
    return [t for t in out if t not in _STOP]


def is_question(text: str) -> bool:
    stripped = text.strip()
    if not stripped:
        return False
    if "?" in stripped or "？" in stripped:
        return True
    lowered = stripped.lower()
    first = _WORD.match(lowered)
    if first and first.group(0) in _EN_QUESTION_START:
        return True
    if any(word in lowered for word in ("how much", "is there", "do you have", "any chance")):
        return True
    return any(q in stripped for q in _ZH_QUESTION)


def intents(text: str) -> list[str]:
    lowered = text.lower()
    return [name for name, cues in INTENTS.items() if any(cue in lowered for cue in cues)]


def question_key(text: str) -> str:
    """The same question, however it is spelled: its sorted distinct words."""
    return " ".join(sorted(set(tokens(text))))
