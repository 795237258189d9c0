"""Exact prompt-token counts, image tokens and USD cost for OpenAI chat requests, fully offline.

BPE ranks come from the gzipped files shipped in the `bpe_openai` wheel (checked against the
sha256 that the installed `tiktoken_ext.openai_public` pins); nothing here opens a socket.
Message overhead and tool definitions follow the OpenAI cookbook ("How to count tokens with
tiktoken"); image tokens follow the "Images and vision" guide, with the open points decided as
recorded in tests/fixtures/token_cases.py. All functions are pure and thread-safe.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import importlib.util
import math
import struct
import threading
import types
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

import tiktoken
from tiktoken.load import check_hash
from tiktoken_ext import openai_public

# --- model -> encoding ---------------------------------------------------------------------------

# Longest matching prefix of the bare model name wins; anything unknown is a modern o200k model.
ENCODING_BY_PREFIX: dict[str, str] = {
    **dict.fromkeys(("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5"), "o200k_base"),
    **dict.fromkeys(("o1", "o3", "o4", "computer-use"), "o200k_base"),
    **dict.fromkeys(("gpt-4", "gpt-3.5", "gpt-35"), "cl100k_base"),  # gpt-35: Azure spelling
    **dict.fromkeys(("text-embedding-3", "text-embedding-ada-002"), "cl100k_base"),
}
DEFAULT_ENCODING = "o200k_base"

_LOCK = threading.Lock()
_ENCODINGS: dict[str, tiktoken.Encoding] = {}


def _bare(model: str) -> str:
    """`openai/GPT-4o ` -> `gpt-4o`: drop a provider prefix, case and spaces."""
    return model.strip().lower().rsplit("/", 1)[-1]


def _lookup(table: dict[str, Any], model: str, default: Any) -> Any:
    """The value of the longest key of `table` that prefixes the bare model name."""
    name = _bare(model)
    best = max((k for k in table if name.startswith(k)), key=len, default=None)
    return default if best is None else table[best]


def _bundled_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """tiktoken's load_tiktoken_bpe, but reading the copy shipped in bpe_openai, never `url`."""
    spec = importlib.util.find_spec("bpe_openai")  # locate only: its native library stays unloaded
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("bpe_openai is not installed")
    name = url.rsplit("/", 1)[-1] + ".gz"
    data = gzip.decompress(Path(spec.submodule_search_locations[0], "data", name).read_bytes())
    if expected_hash and not check_hash(data, expected_hash):
        raise ValueError(f"{name}: sha256 differs from tiktoken's expected hash {expected_hash}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _load_encoding(name: str) -> tiktoken.Encoding:
    """Run tiktoken_ext's own constructor (pat_str, special tokens, hash) with the bundled ranks."""
    ctor = openai_public.ENCODING_CONSTRUCTORS[name]
    # A copy of the constructor whose global `load_tiktoken_bpe` is ours: no shared state patched.
    offline = types.FunctionType(
        ctor.__code__, {**ctor.__globals__, "load_tiktoken_bpe": _bundled_ranks}, ctor.__name__
    )
    return tiktoken.Encoding(**offline())


def encoding_name(model: str) -> str:
    """The tiktoken encoding name used for `model` (o200k_base when the model is unknown)."""
    return _lookup(ENCODING_BY_PREFIX, model, DEFAULT_ENCODING)


def get_encoding(model: str) -> tiktoken.Encoding:
    """The cached tiktoken Encoding for `model`, loaded once from the bundled files."""
    name = encoding_name(model)
    enc = _ENCODINGS.get(name)
    if enc is None:
        with _LOCK:
            enc = _ENCODINGS.get(name)
            if enc is None:
                enc = _ENCODINGS[name] = _load_encoding(name)
    return enc


def count_text(text: str, model: str) -> int:
    """Number of tokens in `text` for `model` (special-token strings count as plain text)."""
    return len(get_encoding(model).encode_ordinary(text))


# --- chat messages and tools (cookbook rules) ----------------------------------------------------

# (tokens per message, tokens per name); the cookbook's older edition for gpt-3.5-turbo-0301.
MESSAGE_OVERHEAD: dict[str, tuple[int, int]] = {"gpt-3.5-turbo-0301": (4, -1)}
DEFAULT_MESSAGE_OVERHEAD = (3, 1)
REPLY_PRIMER = 3  # every reply is primed with <|start|>assistant<|message|>
TOOL_CALL_OVERHEAD = 3  # not in the cookbook: name + arguments + 3 per call is our estimate
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text", "refusal"})
IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})


class ToolRule(NamedTuple):
    """The cookbook's per-encoding constants for function definitions."""

    func_init: int
    prop_init: int = 3
    prop_key: int = 3
    enum_init: int = -3
    enum_item: int = 3
    func_end: int = 12


TOOL_RULES: dict[str, ToolRule] = {"o200k_base": ToolRule(7), "cl100k_base": ToolRule(10)}


def _strip_dot(text: Any) -> str:
    text = "" if text is None else str(text)
    return text[:-1] if text.endswith(".") else text


def count_tools(tools: list[dict], model: str) -> int:
    """Prompt tokens added by `tools` (cookbook rule: nested schemas beyond it are not counted)."""
    if not tools:
        return 0
    enc = get_encoding(model)
    rule = TOOL_RULES[enc.name]
    n = rule.func_end
    for tool in tools:
        fn = tool.get("function") or tool  # chat tools nest the definition; flat ones do not
        n += rule.func_init
        n += len(enc.encode_ordinary(f"{fn.get('name', '')}:{_strip_dot(fn.get('description'))}"))
        props = (fn.get("parameters") or {}).get("properties") or {}
        if props:
            n += rule.prop_init
        for key, prop in props.items():
            prop = prop if isinstance(prop, dict) else {}
            n += rule.prop_key
            if "enum" in prop:
                n += rule.enum_init
                for item in prop["enum"]:
                    n += rule.enum_item + len(enc.encode_ordinary(str(item)))
            line = f"{key}:{prop.get('type', '')}:{_strip_dot(prop.get('description'))}"
            n += len(enc.encode_ordinary(line))
    return n


def _content_tokens(content: Any, enc: tiktoken.Encoding, model: str) -> int:
    if isinstance(content, str):
        return len(enc.encode_ordinary(content))
    n = 0
    for part in content if isinstance(content, list) else ():
        kind = part.get("type")
        if kind in TEXT_PART_TYPES:
            n += len(enc.encode_ordinary(part.get("text") or part.get("refusal") or ""))
        elif kind in IMAGE_PART_TYPES:
            n += _image_part_tokens(part, model)
    return n  # audio and file parts are not counted


def _tool_call_tokens(calls: Any, enc: tiktoken.Encoding) -> int:
    n = 0
    for call in calls if isinstance(calls, list) else [calls]:
        fn = call.get("function") or call  # tool_calls entries, or a legacy function_call
        for value in (fn.get("name"), fn.get("arguments")):
            n += len(enc.encode_ordinary(value)) if isinstance(value, str) else 0
        n += TOOL_CALL_OVERHEAD
    return n


def count_messages(messages: list[dict], model: str, *, tools: list[dict] | None = None) -> int:
    """Prompt tokens of a chat request; http(s) images: width/height hints, else worst case."""
    enc = get_encoding(model)
    per_message, per_name = _lookup(MESSAGE_OVERHEAD, model, DEFAULT_MESSAGE_OVERHEAD)
    n = REPLY_PRIMER
    for message in messages:
        n += per_message
        for key, value in message.items():
            if key == "content":
                n += _content_tokens(value, enc, model)
            elif key in ("tool_calls", "function_call"):
                n += _tool_call_tokens(value, enc) if value else 0
            elif isinstance(value, str):  # role, name, tool_call_id: the cookbook counts all
                n += len(enc.encode_ordinary(value))
            if key == "name":
                n += per_name
    return n + count_tools(tools or [], model)


# --- image tokens --------------------------------------------------------------------------------


class Tiles(NamedTuple):
    """Tile-based image pricing: base tokens plus tokens per 512 px tile."""

    base: int
    tile: int


class Patches(NamedTuple):
    """Patch-based image pricing: 32 px patches under a budget, times a multiplier."""

    multiplier: Decimal
    budget: int = 1536
    max_side: int = 2048
    original_budget: int = 0  # detail "original" (gpt-5.4+); 0 = not offered, counted as high
    original_max_side: int = 0


_UNDOCUMENTED = Decimal(1)  # the guide gives no multiplier for gpt-5.2 / gpt-5.4+
IMAGE_RULES: dict[str, Tiles | Patches] = {
    **dict.fromkeys(("gpt-5", "gpt-5-chat-latest"), Tiles(70, 140)),
    **dict.fromkeys(("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5"), Tiles(85, 170)),
    "gpt-4o-mini": Tiles(2833, 5667),
    **dict.fromkeys(("o1", "o3"), Tiles(75, 150)),  # o1-pro via the o1 prefix
    "computer-use-preview": Tiles(65, 129),
    **dict.fromkeys(("gpt-5-mini", "gpt-4.1-mini"), Patches(Decimal("1.62"))),
    **dict.fromkeys(("gpt-5-nano", "gpt-4.1-nano"), Patches(Decimal("2.46"))),
    "o4-mini": Patches(Decimal("1.72")),
    **dict.fromkeys(("gpt-5.1-codex", "gpt-5.2", "gpt-5.3"), Patches(_UNDOCUMENTED)),
    **dict.fromkeys(("gpt-5.4", "gpt-5.5"), Patches(_UNDOCUMENTED, 2500, 2048, 10000, 6000)),
}
DEFAULT_IMAGE_RULE = Tiles(85, 170)  # unknown models: the gpt-4o / gpt-4.1 rates
TILE, FIT_SIDE, SHORT_SIDE, PATCH = 512, 2048, 768, 32
MAX_TILES = 8  # the most a resized image can have: 768x2048 -> 2 x 4 tiles


def _scale(w: int, h: int, target: int, side: int) -> tuple[int, int]:
    """Scale so that `side` becomes `target`, rounding to the nearest pixel (forum-measured)."""
    return max(1, round(w * target / side)), max(1, round(h * target / side))


def _tile_size(width: int, height: int) -> tuple[int, int]:
    """Size a tile model sees at detail high: fit 2048 square, shortest side 768, no upscale."""
    w, h = width, height
    if max(w, h) > FIT_SIDE:
        w, h = _scale(w, h, FIT_SIDE, max(w, h))
    if min(w, h) > SHORT_SIDE:
        w, h = _scale(w, h, SHORT_SIDE, min(w, h))
    return w, h


def _patch_size(width: int, height: int, budget: int, max_side: int) -> tuple[float, float]:
    """The size a patch model sees: longest side capped, then shrunk to fit the patch budget.

    The cap keeps fractional pixels (2049x513 -> 2048x512.75 -> 17 patch rows, as the worked
    sizes in tests/fixtures/token_cases.py do); only the budget shrink resizes to whole pixels."""
    w, h = float(width), float(height)
    if max(w, h) > max_side:  # the 2048 cap; only with it does 4000x1474 give the measured 1536
        w, h = w * max_side / max(width, height), h * max_side / max(width, height)
    if math.ceil(w / PATCH) * math.ceil(h / PATCH) > budget:
        shrink = math.sqrt(PATCH * PATCH * budget / (w * h))
        fw, fh = w * shrink / PATCH, h * shrink / PATCH
        adjusted = shrink * min(math.floor(fw) / fw, math.floor(fh) / fh)
        w, h = float(int(w * adjusted + 1e-9)), float(int(h * adjusted + 1e-9))
    return w, h


def _patches(width: int, height: int, budget: int = 1536, max_side: int = 2048) -> int:
    w, h = _patch_size(width, height, budget, max_side)
    return min(budget, math.ceil(w / PATCH) * math.ceil(h / PATCH))


def _bill(patches: int, multiplier: Decimal) -> int:
    # Rounding undocumented: 1536 * 1.62 = 2488.32 billed 2488 fits floor and round; we round.
    return int((patches * multiplier).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _patch_limits(rule: Patches, detail: str) -> tuple[int, int]:
    if detail == "original" and rule.original_budget:
        return rule.original_budget, rule.original_max_side
    return rule.budget, rule.max_side


def image_tokens(width: int, height: int, *, model: str, detail: str = "auto") -> int:
    """Prompt tokens of one width x height image for `model` at detail low/high/auto/original."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rule = _lookup(IMAGE_RULES, model, DEFAULT_IMAGE_RULE)
    detail = (detail or "auto").lower()
    if isinstance(rule, Tiles):
        if detail == "low":
            return rule.base
        w, h = _tile_size(width, height)  # auto and original count as high (upper bound)
        return rule.base + rule.tile * math.ceil(w / TILE) * math.ceil(h / TILE)
    # Patch models: "low" is undocumented and "auto" is the model's choice; both count as high.
    return _bill(_patches(width, height, *_patch_limits(rule, detail)), rule.multiplier)


def max_image_tokens(model: str, detail: str = "auto") -> int:
    """The most one image of any size can cost for `model` at `detail`."""
    rule = _lookup(IMAGE_RULES, model, DEFAULT_IMAGE_RULE)
    detail = (detail or "auto").lower()
    if isinstance(rule, Tiles):
        return rule.base if detail == "low" else rule.base + rule.tile * MAX_TILES
    return _bill(_patch_limits(rule, detail)[0], rule.multiplier)


def seen_size(width: int, height: int, *, model: str, detail: str = "auto") -> tuple[int, int]:
    """The size `model` works at for a width x height image (never larger): what to send."""
    rule = _lookup(IMAGE_RULES, model, DEFAULT_IMAGE_RULE)
    detail = (detail or "auto").lower()
    if isinstance(rule, Tiles):
        if detail != "low":
            return _tile_size(width, height)
        side = max(width, height)  # low detail: the guide's 512 px square
        return _scale(width, height, TILE, side) if side > TILE else (width, height)
    w, h = _patch_size(width, height, *_patch_limits(rule, detail))
    return max(1, math.ceil(w)), max(1, math.ceil(h))


DATA_URL_HEAD_STEPS = (4096, 65536, 1 << 20)  # decoded bytes tried in turn (JPEG EXIF can be big)


def _data_url_size(url: str) -> tuple[int, int] | None:
    """Image size from the first bytes of a data: URL, decoding no more than needed."""
    meta, comma, payload = url.partition(",")
    if not comma:
        return None
    is_b64 = meta.lower().endswith(";base64")
    for step in DATA_URL_HEAD_STEPS:
        chunk = payload[: 4 * math.ceil(step / 3)] if is_b64 else payload[:step]
        try:
            head = base64.b64decode(chunk) if is_b64 else unquote_to_bytes(chunk)
        except (binascii.Error, ValueError):
            return None
        size = image_size(head)
        if size is not None or len(chunk) >= len(payload):
            return size
    return None


def _image_part_tokens(part: dict, model: str) -> int:
    """Tokens of an image part. A data: URL is sized from its header; an http(s) URL is never
    fetched: it uses our `width`/`height` hints in `image_url` if present, else the worst case."""
    spec = part.get("image_url")
    spec = {"url": spec, "detail": part.get("detail")} if isinstance(spec, str) else spec or {}
    detail = spec.get("detail") or "auto"
    url = spec.get("url") or ""
    size = _data_url_size(url) if url[:5].lower() == "data:" else None
    width, height = spec.get("width"), spec.get("height")
    if size is None and isinstance(width, int) and isinstance(height, int):
        size = (width, height) if width > 0 and height > 0 else None
    if size is None:
        return max_image_tokens(model, detail)
    return image_tokens(size[0], size[1], model=model, detail=detail)


# --- image headers -------------------------------------------------------------------------------

JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def _png(b: bytes) -> tuple[int, int] | None:
    return struct.unpack(">II", b[16:24]) if b[12:16] == b"IHDR" else None


def _gif(b: bytes) -> tuple[int, int] | None:
    return struct.unpack("<HH", b[6:10])


def _bmp(b: bytes) -> tuple[int, int] | None:
    if struct.unpack("<I", b[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", b[18:22])
    w, h = struct.unpack("<ii", b[18:26])
    return w, abs(h)  # negative height = top-down rows


def _jpeg(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        elif marker in JPEG_SOF:
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return w, h
        else:
            i += 2 + struct.unpack(">H", b[i + 2 : i + 4])[0]
    return None


def _webp(b: bytes) -> tuple[int, int] | None:
    if b[8:12] != b"WEBP" or len(b) < 30:
        return None
    kind = b[12:16]
    if kind == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", b[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and b[20] == 0x2F:
        bits = int.from_bytes(b[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        return int.from_bytes(b[24:27], "little") + 1, int.from_bytes(b[27:30], "little") + 1
    return None


def _tiff(b: bytes) -> tuple[int, int] | None:
    e = "<" if b[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", b[4:8])
    (count,) = struct.unpack(e + "H", b[ifd : ifd + 2])
    found: dict[int, int] = {}
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, kind = struct.unpack(e + "HH", b[at : at + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            fmt = e + ("H" if kind == 3 else "I")
            found[tag] = struct.unpack(fmt, b[at + 8 : at + 8 + struct.calcsize(fmt)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", _png), (b"\xff\xd8", _jpeg), (b"GIF87a", _gif), (b"GIF89a", _gif),
    (b"RIFF", _webp), (b"BM", _bmp), (b"II*\x00", _tiff), (b"MM\x00*", _tiff),
)  # fmt: skip


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG/JPEG/GIF/WebP/BMP/TIFF; None if unknown."""
    for magic, reader in IMAGE_MAGIC:
        if head.startswith(magic):
            try:
                size = reader(head)
            except (struct.error, IndexError):  # truncated head
                return None
            return (int(size[0]), int(size[1])) if size and min(size) > 0 else None
    return None


# --- cost ----------------------------------------------------------------------------------------


def estimate_cost(
    model: str, *, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> Decimal | None:
    """USD list price from genai-prices' bundled table (input includes cached); None if unknown."""
    try:
        from genai_prices import Usage, calc_price  # 0.7 s import: only when prices are needed

        usage = Usage(
            input_tokens=input_tokens, cache_read_tokens=cached_tokens, output_tokens=output_tokens
        )
        return calc_price(usage, _bare(model), provider_id="openai").total_price
    except Exception:  # unknown model, bad usage, missing package: no price, never an error
        return None
